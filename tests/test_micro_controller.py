"""The micro controller: sampling, teacher-forced log-probabilities, decisions, and REINFORCE learning."""

from __future__ import annotations

import math

import pytest
import torch

from musicnas.runtime import MusicnasError
from musicnas.search.controller import make_controller
from musicnas.search.micro_controller import MicroController
from musicnas.spaces.micro import MicroArch, MicroSpace
from musicnas.spaces.micro.arch import NUM_OPS, SEP_CONV_3X3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_make_controller_dispatches_to_micro():
    space = MicroSpace(num_nodes=2)
    controller = make_controller(space, seed=3)
    assert isinstance(controller, MicroController)
    assert controller.lstm.cell.hidden_size == 64
    for p in controller.parameters():
        if p is not controller.op_bias:
            assert p.abs().max() <= 0.1  # uniform(-0.1, 0.1) init
    assert controller.op_bias.tolist() == [10.0, 10.0, 0.0, 0.0, 0.0]


def test_log_prob_of_a_sample_matches_teacher_forcing():
    space = MicroSpace(num_nodes=3)
    controller = MicroController(space, seed=0)
    for _ in range(3):
        sample = controller.sample()
        assert isinstance(sample.arch, MicroArch) and sample.arch.space == space
        assert float(sample.skip_penalty) == 0.0
        log_prob, entropy = controller.log_prob(sample.arch)
        torch.testing.assert_close(log_prob, sample.log_prob)
        torch.testing.assert_close(entropy, sample.entropy)
        assert log_prob.item() < 0 and entropy.item() > 0
    # differentiable through every part of the policy
    log_prob, _ = controller.log_prob(sample.arch)
    log_prob.backward()
    for name in (
        "lstm.cell.weight_ih",
        "attn_anchor.weight",
        "attn_query.weight",
        "attn_v.weight",
        "op_logits.weight",
    ):
        grad = dict(controller.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_log_prob_of_most_likely_matches_decision_probs():
    # the greedy architecture's log-probability is the sum of the log of each decision's top probability
    controller = MicroController(MicroSpace(num_nodes=2), seed=1)
    decisions = controller.decision_probs()["decisions"]
    expected = sum(math.log(max(d["probs"])) for d in decisions)
    log_prob, _ = controller.log_prob(controller.most_likely())
    assert log_prob.item() == pytest.approx(expected, abs=1e-4)


def test_sampling_is_seeded_and_resumable():
    space = MicroSpace(num_nodes=2)
    a, b = MicroController(space, seed=5), MicroController(space, seed=5)
    assert [a.sample().arch for _ in range(4)] == [b.sample().arch for _ in range(4)]
    state = a.generator_state()
    ahead = [a.sample().arch for _ in range(3)]
    a.set_generator_state(state)
    assert [a.sample().arch for _ in range(3)] == ahead
    # most_likely and decision_probs do not consume the generator
    state = a.generator_state()
    assert a.most_likely() == a.most_likely()
    a.decision_probs()
    assert torch.equal(a.generator_state(), state)


def test_decision_probs_and_normal_cell_bias():
    space = MicroSpace(num_nodes=3)
    controller = MicroController(space, seed=0)
    decisions = controller.decision_probs()["decisions"]
    assert len(decisions) == 2 * 4 * space.num_nodes
    for d in decisions:
        assert sum(d["probs"]) == pytest.approx(1.0, abs=1e-5)
        if ".index" in d["name"]:
            node = int(d["name"].split(".node")[1].split(".")[0])
            assert len(d["probs"]) == node + 2
        else:
            assert len(d["probs"]) == NUM_OPS
    normal_op = next(d for d in decisions if d["name"] == "normal.node0.op1")["probs"]
    reduction_op = next(d for d in decisions if d["name"] == "reduction.node0.op1")["probs"]
    # learned bias (+10 on sep-convs, squashed) in both cells; fixed +0.25/-0.25 bias in the normal cell only
    assert normal_op[0] > reduction_op[0] > reduction_op[2]
    assert normal_op[4] < reduction_op[4]


def test_tanh_constants_bound_the_op_probabilities():
    # op logits are squashed into [-1.1/2.5, 1.1/2.5] (+-0.25 in the normal cell): no op can exceed this
    space = MicroSpace(num_nodes=2)
    controller = MicroController(space, seed=0)
    with torch.no_grad():
        for p in controller.parameters():
            p.mul_(50.0)
    bound = 1.1 / 2.5
    hi, lo = math.exp(bound + 0.25), math.exp(-bound - 0.25)
    cap = hi / (hi + (NUM_OPS - 1) * lo)
    for d in controller.decision_probs()["decisions"]:
        if ".op" in d["name"]:
            assert max(d["probs"]) <= cap + 1e-6


def test_controller_rejects_other_spaces_and_archs():
    controller = MicroController(MicroSpace(num_nodes=2), seed=0)
    with pytest.raises(MusicnasError, match="different micro space"):
        controller.log_prob(MicroSpace(num_nodes=3).sample(0))
    with pytest.raises(MusicnasError, match="needs a micro space"):
        MicroController(object())


def sep_conv3_share(arch) -> float:
    ops = [node[k] for cell in arch.cells() for node in cell for k in (1, 3)]
    return sum(op == SEP_CONV_3X3 for op in ops) / len(ops)


def test_reinforce_learns_a_toy_reward():
    """Reward = share of sep-conv3x3 ops; REINFORCE with an EMA baseline and the reference's optimiser.

    Tanh squashing is switched off here: with the reference constants (1.1, op_tanh_reduce 2.5) no op
    probability can exceed ~0.36 (see the test above), so 0.9 is out of reach by design."""
    space = MicroSpace(num_nodes=2)
    controller = MicroController(space, seed=0, tanh_constant=None)
    opt = torch.optim.Adam(controller.parameters(), lr=3.5e-3, betas=(0.0, 0.999), eps=1e-3)
    baseline = None

    def worst_sep_conv3_prob() -> float:
        decisions = controller.decision_probs()["decisions"]
        return min(d["probs"][SEP_CONV_3X3] for d in decisions if ".op" in d["name"])

    start = worst_sep_conv3_prob()
    for _update in range(120):
        opt.zero_grad()
        loss = torch.zeros(())
        for _ in range(10):  # gradients of 10 architectures averaged per update (micro reference)
            sample = controller.sample()
            reward = sep_conv3_share(sample.arch)
            baseline = reward if baseline is None else 0.9 * baseline + 0.1 * reward
            loss = loss - sample.log_prob * (reward - baseline) / 10
        loss.backward()
        opt.step()
        if worst_sep_conv3_prob() > 0.9:
            break
    assert start < 0.6
    assert worst_sep_conv3_prob() > 0.9
