"""Ranking-quality levers of the search loop: BN recalibration, reward batches, the uniform warm-up,
interleaved (TuNAS-style) policy updates with reward normalisation, the factorised policy in the loop."""

from __future__ import annotations

import json
import time

import pytest
import torch

import test_search_loop as loop
from musicnas.runtime import MusicnasError
from musicnas.search.config import SearchConfig, preset
from musicnas.search.enas import SearchRun, run_search
from musicnas.search.policy import normalized_advantage
from musicnas.search.scoring import calibration_indices, scoring_mode
from musicnas.spaces.macro import MacroSearchNet, MacroSpace

torch.set_num_threads(1)
data, rt = loop.data, loop.rt  # the loop tests' fixtures
Kill, jsonl, kill_at, run_outputs, tiny_config = (
    loop.Kill,
    loop.jsonl,
    loop.kill_at,
    loop.run_outputs,
    loop.tiny_config,
)


def bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def trained_search_net(seed=0):
    """A macro search net whose running statistics have moved away from their initial values."""
    torch.manual_seed(seed)
    space = MacroSpace(num_layers=3, num_branches=4, channels=6)
    net = MacroSearchNet(space, in_channels=1, num_classes=3, dropout=0.5)
    net.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(8, 1, 12, 10, generator=gen) * 2 + 1, space.sample(gen))
    return space, net


def test_recalibration_leaves_the_shared_running_statistics_exactly_as_they_were():
    space, net = trained_search_net()
    before = bn_buffers(net)
    momenta = [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 1, 12, 10, generator=gen) * 3 - 1 for _ in range(2)]
    x = torch.randn(6, 1, 12, 10, generator=gen)
    outs = {}
    for seed in (3, 4):
        arch = space.sample(seed)
        rng_before = torch.get_rng_state()
        with scoring_mode(net, "recalibrate", lambda inp, a=arch: net(inp, a), calibration):
            outs[seed] = net(x, arch)
            # inside: statistics of this architecture on the calibration batches, not the shared ones
            changed = [
                k for k, v in bn_buffers(net).items() if "running_mean" in k and not torch.equal(v, before[k])
            ]
            assert changed
        assert torch.equal(torch.get_rng_state(), rng_before)  # dropout stayed off: no random numbers drawn
        after = bn_buffers(net)
        assert after.keys() == before.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    assert net.training
    assert [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)] == momenta
    with scoring_mode(net, "eval"):
        plain = net(x, space.sample(3))
    assert not torch.allclose(plain, outs[3])  # recalibrated scoring differs from the running statistics


def test_recalibrated_statistics_are_the_plain_average_of_the_calibration_batches():
    """One BN after a conv: its recalibrated running mean is the mean of the two batches' means."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1, bias=False), torch.nn.BatchNorm2d(3))
    net[1].running_mean.fill_(7.0)
    a, b = torch.randn(4, 1, 5, 5) + 2, torch.randn(4, 1, 5, 5) - 1
    with scoring_mode(net, "recalibrate", net, [a, b]):
        expected = (net[0](a).mean(dim=(0, 2, 3)) + net[0](b).mean(dim=(0, 2, 3))) / 2
        assert torch.allclose(net[1].running_mean, expected, atol=1e-6)
    assert torch.equal(net[1].running_mean, torch.full((3,), 7.0))
    with pytest.raises(ValueError, match="recalibrate"), scoring_mode(net, "recalibrate"):
        pass


def test_calibration_batches_are_fixed_training_batches():
    import numpy as np

    train = np.arange(40, 100)
    first = calibration_indices(train, seed=0, batch_size=8, count=3)
    assert len(first) == 3 and all(len(b) == 8 for b in first)
    assert all(np.equal(a, b).all() for a, b in zip(first, calibration_indices(train, 0, 8, 3), strict=True))
    assert set(np.concatenate(first)) <= set(train)
    assert not np.equal(first[0], calibration_indices(train, 1, 8, 3)[0]).all()


def test_recalibrate_search_runs_resumes_and_never_changes_the_shared_statistics(data, rt, tmp_path):
    cfg = tiny_config(controller_bn="recalibrate", bn_calibration_batches=2, reward_batches=2)
    ref = tmp_path / "ref"
    run_search(cfg, data, ref, rt)
    killed = tmp_path / "killed"
    with pytest.raises(Kill):
        run_search(cfg, data, killed, rt, callback=kill_at("controller", 1, 1))
    run_search(cfg, data, killed, rt, resume=True)
    assert run_outputs(killed) == run_outputs(ref)
    # scoring with recalibration inside a live run leaves the run's network as it was
    search = SearchRun(cfg, data, tmp_path / "fresh", rt)
    before = {k: v.clone() for k, v in search.model.state_dict().items()}
    batches = [search.score_batch(i) for i in search.val_batches(0)[:2]]
    for seed in range(4):
        search.accuracy_on(search.space.sample(seed), batches)
    assert all(torch.equal(v, search.model.state_dict()[k]) for k, v in before.items())


def test_reward_batches_score_every_architecture_of_an_update_on_the_same_batches(data, rt, tmp_path):
    cfg = tiny_config(epochs=1, reward_batches=2, controller_updates_per_epoch=2)
    search = SearchRun(cfg, data, tmp_path, rt)
    val = search.val_batches(0)
    seen_batches = []
    original = search.accuracy_on

    def spy(arch, batches):
        seen_batches.append(tuple(int(y.sum()) for _, y in batches) + (len(batches),))
        return original(arch, batches)

    search.accuracy_on = spy
    search._t0 = time.perf_counter()  # set by run(); policy_update logs the time of its row
    search.policy_update(0, 0, val, None, phase="controller")
    search.policy_update(0, 1, val, None, phase="controller")
    archs = cfg.controller_archs_per_update
    assert len(seen_batches) == 2 * archs and all(b[-1] == 2 for b in seen_batches)
    assert len(set(seen_batches[:archs])) == 1 and len(set(seen_batches[archs:])) == 1


def test_uniform_warmup_trains_on_uniform_architectures_then_the_policy_takes_over(data, rt, tmp_path):
    cfg = tiny_config(epochs=2, controller_start_epoch=1, warmup_uniform=True, checkpoint_every_steps=0)
    run_search(cfg, data, tmp_path, rt)
    rows = jsonl(tmp_path / "metrics_steps.jsonl")
    space = MacroSpace(**cfg.space_options)
    uniform_entropy = float(torch.log(torch.tensor(float(space.size()))))
    child = [r for r in rows if r["phase"] == "child"]
    warm = [r for r in child if r["epoch"] == 0]
    assert warm and all(r["entropy"] == pytest.approx(uniform_entropy) for r in warm)
    assert all(r["entropy"] != pytest.approx(uniform_entropy) for r in child if r["epoch"] == 1)
    policy = [r for r in rows if r["phase"] == "controller"]
    assert all(r["lr"] == 0.0 for r in policy if r["epoch"] == 0)  # no policy update while warming up
    assert all(r["lr"] > 0 for r in policy if r["epoch"] == 1)


def test_normalized_advantage_is_unit_scale():
    adv, var = normalized_advantage(0.02, 0.0, 0.95)
    assert adv == pytest.approx(1.0) and var == pytest.approx(0.0004)
    adv, var = normalized_advantage(-0.02, var, 0.95)
    assert adv == pytest.approx(-1.0)
    big, _ = normalized_advantage(0.1, var, 0.95)
    assert big == pytest.approx(0.1 / (0.95 * 0.0004 + 0.05 * 0.01) ** 0.5)


def test_factorized_policy_with_interleaved_updates_resumes_bit_identically(data, rt, tmp_path):
    cfg = tiny_config(controller="factorized", controller_update_every=2, reward_normalize=True,
                      controller_lr=0.05, baseline_decay=0.95, reward_batches=1)  # fmt: skip
    ref = tmp_path / "ref"
    run_search(cfg, data, ref, rt)
    rows = jsonl(ref / "metrics_steps.jsonl")
    interleaved = [r for r in rows if r["phase"] == "policy"]
    child_per_epoch = sum(1 for r in rows if r["phase"] == "child" and r["epoch"] == 0)
    assert len(interleaved) == cfg.epochs * (child_per_epoch // 2)
    record = json.loads((ref / "config.json").read_text())
    assert record["search"]["controller"] == "factorized"
    killed = tmp_path / "killed"
    with pytest.raises(Kill):
        run_search(cfg, data, killed, rt, callback=kill_at("child", 1, 1))
    run_search(cfg, data, killed, rt, resume=True)
    assert run_outputs(killed) == run_outputs(ref)


def test_bad_lever_settings_are_refused():
    for bad in ({"controller_bn": "frozen"}, {"controller": "gru"}, {"reward_batches": -1},
                {"bn_calibration_batches": 0}, {"controller_update_every": -2}):  # fmt: skip
        with pytest.raises(MusicnasError, match="invalid search config"):
            SearchConfig(**bad).validate()


def test_reference_presets_follow_the_authors_search_scripts():
    """cifar10_{macro,micro}_search.sh: keep_prob 0.9; micro l2 1e-4 (weight decay 2e-4 as PyTorch counts
    it); the micro child scores with is_training=True (batch statistics), the macro one with running ones."""
    macro, micro = preset("reference", "macro"), preset("reference", "micro")
    assert macro.child_dropout == pytest.approx(0.1) and micro.child_dropout == pytest.approx(0.1)
    assert macro.child_weight_decay == pytest.approx(5e-4) and micro.child_weight_decay == pytest.approx(2e-4)
    assert (macro.controller_bn, micro.controller_bn) == ("eval", "batch")
    assert preset("cpu", "macro").child_dropout == 0.0  # the cpu preset is not the reference


def test_cli_resume_refuses_another_policy(data, rt, tmp_path, capsys):
    """`musicnas search --resume RUN --controller factorized` on an LSTM run is an error, not ignored."""
    from test_search_cli import run_cli

    run_dir = tmp_path / "run"
    run_search(tiny_config(epochs=2, max_steps=2), data, run_dir, rt)
    code, _, err = run_cli(["search", "--resume", str(run_dir), "--controller", "factorized"], capsys)
    assert code != 0 and "different settings for: controller" in err, err


def test_scoring_loss_is_the_clip_weighted_cross_entropy_of_the_same_forward_passes():
    from types import SimpleNamespace

    from musicnas.search.scoring import accuracy_and_loss_over, accuracy_over

    space, net = trained_search_net()
    gen = torch.Generator().manual_seed(2)
    # batches of unequal size: both scores are weighted by clips, not averaged over batches
    batches = [
        (torch.randn(n, 1, 12, 10, generator=gen), torch.randint(0, 3, (n,), generator=gen)) for n in (8, 3)
    ]
    autocast_off = SimpleNamespace(autocast=lambda: torch.autocast("cpu", enabled=False))
    search = SimpleNamespace(config=SimpleNamespace(controller_bn="eval"), model=net, rt=autocast_off)
    arch = space.sample(5)
    acc, loss = accuracy_and_loss_over(search, arch, batches)
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(x, arch) for x, _ in batches])
    net.train()
    labels = torch.cat([y for _, y in batches])
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert accuracy_over(search, arch, batches) == acc
