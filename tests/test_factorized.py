"""The TuNAS-style factorised policy: the Controller contract, learning a toy reward, its mode."""

from __future__ import annotations

import itertools

import pytest
import torch

from musicnas.runtime import MusicnasError
from musicnas.search.config import FACTORIZED_DEFAULTS, resolve_config
from musicnas.search.controller import make_controller
from musicnas.search.enas import reinforce_update
from musicnas.search.factorized import FactorizedController
from musicnas.spaces.macro import MacroArch, MacroSpace
from musicnas.spaces.micro import MicroSpace

SPACES = [
    MacroSpace(num_layers=4, num_branches=6, whole_channels=True, channels=4),
    MacroSpace(num_layers=3, num_branches=4, whole_channels=False, channels=4),
    MicroSpace(num_cells=1, num_nodes=3, channels=4),
]


@pytest.mark.parametrize("space", SPACES, ids=["macro", "macro-ranges", "micro"])
def test_starts_uniform_and_log_prob_matches_sampling(space):
    ctrl = make_controller(space, seed=3, policy="factorized")
    assert isinstance(ctrl, FactorizedController)
    for _ in range(5):
        sample = ctrl.sample()
        sample.arch.validate()
        forced, entropy = ctrl.log_prob(sample.arch)
        assert torch.allclose(forced, sample.log_prob) and torch.allclose(entropy, sample.entropy)
    if space.type == "macro" and space.whole_channels:
        # all logits 0: every architecture has probability 1 / |space|
        assert sample.log_prob.item() == pytest.approx(-torch.log(torch.tensor(float(space.size()))).item())
    # every decision is a uniform categorical at the start
    for decision in ctrl.decision_probs()["decisions"]:
        probs = torch.tensor(decision["probs"])
        probs = probs[probs > 0].reshape(-1)
        assert torch.allclose(probs, probs[0].expand_as(probs))


def test_most_likely_is_the_mode_of_the_policy():
    """Enumerate a small space: the architecture of highest probability is most_likely()."""
    space = MacroSpace(num_layers=3, num_branches=4, whole_channels=True, channels=4)
    ctrl = make_controller(space, seed=0, policy="factorized")
    with torch.no_grad():
        for p in ctrl.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    best, best_lp = None, -float("inf")
    for ops in itertools.product(range(4), repeat=3):
        for skips in itertools.product((0, 1), repeat=3):  # layer 1: 1 skip bit, layer 2: 2
            flat = [ops[0], ops[1], skips[0], ops[2], skips[1], skips[2]]
            arch = MacroArch.from_flat(flat, space)
            lp = ctrl.log_prob(arch)[0].item()
            if lp > best_lp:
                best, best_lp = arch, lp
    assert ctrl.most_likely() == best


def op0_share(arch) -> float:
    return sum(op == 0 for op in arch.ops) / len(arch.ops)


def test_learns_a_toy_reward_and_entropy_falls():
    """reward = share of layers choosing op 0; REINFORCE with an EMA baseline and normalised rewards
    (the FACTORIZED_DEFAULTS settings) must put op 0 above 0.9 in every layer within 300 updates."""
    space = MacroSpace(num_layers=4, num_branches=6, whole_channels=True, channels=4)
    ctrl = make_controller(space, seed=0, policy="factorized")
    opt = torch.optim.Adam(
        ctrl.parameters(), lr=FACTORIZED_DEFAULTS["controller_lr"], betas=(0.0, 0.999), eps=1e-3
    )

    def op0_prob():
        return min(d["probs"][0] for d in ctrl.decision_probs()["decisions"] if d["name"].endswith(".op"))

    def op_entropy():
        h = 0.0
        for d in ctrl.decision_probs()["decisions"]:
            if d["name"].endswith(".op"):
                p = torch.tensor(d["probs"])
                h += float(-(p * p.log()).sum())
        return h

    start_entropy = op_entropy()
    assert op0_prob() == pytest.approx(1 / 6)
    baseline, var, updates = None, 0.0, 0
    while op0_prob() <= 0.9 and updates < 300:
        baseline, stats = reinforce_update(
            ctrl, opt, lambda arch: (op0_share(arch), op0_share(arch)), baseline, archs=4, skip_weight=0.0,
            baseline_decay=FACTORIZED_DEFAULTS["baseline_decay"], reward_var=var,
        )  # fmt: skip
        var = stats["reward_var"]
        updates += 1
    assert op0_prob() > 0.9, updates
    assert op_entropy() < 0.5 * start_entropy
    assert all(op == 0 for op in ctrl.most_likely().ops)


def test_state_round_trips_through_a_checkpoint():
    space = SPACES[2]
    ctrl = make_controller(space, seed=1, policy="factorized")
    with torch.no_grad():
        for p in ctrl.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    ctrl.sample()
    other = make_controller(space, seed=9, policy="factorized")
    other.load_state_dict(ctrl.state_dict())
    other.set_generator_state(ctrl.generator_state())
    assert other.most_likely() == ctrl.most_likely()
    assert other.sample().arch == ctrl.sample().arch


def test_refuses_bad_input():
    with pytest.raises(MusicnasError, match="unknown controller"):
        make_controller(SPACES[0], policy="transformer")
    ctrl = make_controller(SPACES[0], policy="factorized")
    with pytest.raises(MusicnasError, match="decisions"):
        ctrl.log_prob(MacroSpace(num_layers=2, num_branches=6, channels=4).sample(0))
    with pytest.raises(MusicnasError, match="skip_target"):
        make_controller(SPACES[0], policy="factorized", skip_target=1.0)


def test_choosing_it_brings_the_tunas_loop_settings():
    cfg = resolve_config("cpu", "macro", None, {"controller": "factorized"})
    assert cfg.controller == "factorized"
    assert all(getattr(cfg, k) == v for k, v in FACTORIZED_DEFAULTS.items())
    explicit = resolve_config(
        "cpu", "macro", None, {"controller": "factorized", "controller_update_every": 2}
    )
    assert explicit.controller_update_every == 2
    assert resolve_config("cpu", "macro", None, {}).controller_update_every == 0
