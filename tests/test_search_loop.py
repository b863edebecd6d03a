"""The ENAS loop: run directory, kill-and-resume equals an uninterrupted run, checkpoint safety, config."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from musicnas import runtime
from musicnas.runtime import MusicnasError
from musicnas.search.config import SearchConfig, load_config_file, preset, resolve_config
from musicnas.search.enas import run_search
from musicnas.utils.io import load_checkpoint

TIME_KEYS = ("time", "elapsed")
torch.set_num_threads(1)


class TinyData:
    """In-memory stand-in for FeatureCache (same methods the loop uses): 3 classes that differ by
    which frequency band is bright, 1x12x10 inputs, so a search takes a second."""

    def __init__(self, n: int = 60, classes: int = 3, shape=(1, 12, 10), seed: int = 0):
        rng = np.random.default_rng(seed)
        self.classes = [f"class{i}" for i in range(classes)]
        self.num_classes = classes
        self.input_shape = shape
        self.labels = np.arange(n) % classes
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        band = shape[1] // classes
        for i, c in enumerate(self.labels):
            x[i, :, c * band : (c + 1) * band] += 1.5
        self.x = x
        self.splits = np.where(np.arange(n) % 4 == 3, "val", "train")
        self.root = "memory"

    def split_indices(self, split):
        return np.nonzero(self.splits == split)[0].astype(np.int64)

    def get_batch(self, indices, normalize=True):
        idx = np.asarray(indices)
        return torch.from_numpy(self.x[idx]), torch.from_numpy(self.labels[idx].astype(np.int64))


@pytest.fixture(scope="module")
def data():
    return TinyData()


@pytest.fixture(scope="module")
def rt():
    runtime.set_deterministic(True)
    return runtime.Runtime(device=torch.device("cpu"), threads=1)


def tiny_config(**overrides) -> SearchConfig:
    values = dict(
        space_options={"num_layers": 3, "channels": 6, "num_branches": 4, "whole_channels": True},
        epochs=3,
        batch_size=8,
        controller_archs_per_update=3,
        controller_updates_per_epoch=2,
        derive_samples=8,
        derive_batches=2,
        derive_top_k=3,
        keep_seen=2,
        checkpoint_every_steps=2,
        deterministic=True,
        tensorboard=False,
    )
    values.update(overrides)
    return SearchConfig(**values)


def jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_rows(path):
    rows = jsonl(path)
    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows]


def run_outputs(run_dir):
    out = {name: read_rows(run_dir / name) for name in ("metrics_steps.jsonl", "metrics_epochs.jsonl")}
    out["controller_probs"] = read_rows(run_dir / "controller_probs.jsonl")
    out["arch"] = json.loads((run_dir / "arch.json").read_text())
    out["candidates"] = json.loads((run_dir / "candidates.json").read_text())
    return out


@pytest.fixture(scope="module")
def reference_run(data, rt, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_search(tiny_config(tensorboard=True), data, run_dir, rt)
    return run_dir, result


class Kill(Exception):
    pass


def kill_at(phase: str, epoch: int, step: int):
    def callback(info):
        if info["phase"] == phase and info["epoch"] == epoch and info.get("step") == step:
            raise Kill()

    return callback


def test_run_directory_follows_the_on_disk_format(reference_run, data):
    run_dir, result = reference_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["search"]["seed"] == 0 and config["space"]["type"] == "macro"
    assert config["data"]["classes"] == data.classes and "runtime" in config
    steps = jsonl(run_dir / "metrics_steps.jsonl")
    child = [r for r in steps if r["phase"] == "child"]
    ctrl = [r for r in steps if r["phase"] == "controller"]
    # drop_last: 45 train clips // batch 8 = 5 child steps per epoch, 2 controller updates
    assert len(child) == 3 * 5 and len(ctrl) == 3 * 2
    assert {"epoch", "step", "loss", "acc", "lr", "time"} <= set(child[0])
    assert {"reward", "baseline", "entropy", "skip_rate"} <= set(ctrl[0])
    epochs = jsonl(run_dir / "metrics_epochs.jsonl")
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    for key in ("child_loss", "child_acc", "val_acc", "reward", "baseline", "entropy", "skip_rate", "lr",
                "controller_lr", "time", "elapsed"):  # fmt: skip
        assert key in epochs[0]
    # cosine with warm restarts, stepped per epoch: lr falls from the maximum
    assert epochs[0]["lr"] == pytest.approx(0.05) and epochs[2]["lr"] < epochs[1]["lr"] < epochs[0]["lr"]
    probs = jsonl(run_dir / "controller_probs.jsonl")
    assert len(probs) == 3 and all(
        abs(sum(d["probs"]) - 1) < 1e-5 for d in probs[0]["decisions"] if "op" in d["name"]
    )
    cands = json.loads((run_dir / "candidates.json").read_text())["candidates"]
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True) and {c["source"] for c in cands} <= {"derived", "seen"}
    assert all(c["cost"]["params"] > 0 and c["cost"]["macs"] > 0 for c in cands)
    arch = json.loads((run_dir / "arch.json").read_text())
    assert arch == cands[0]["arch"] == result["arch"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir / "tb"))
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["loop"]["epoch"] == 3


@pytest.mark.parametrize(
    "phase,epoch,step",
    # killed right after a step checkpoint, between checkpoints (rows to drop), in the controller phase
    [("child", 1, 2), ("child", 1, 1), ("controller", 2, 0)],
)
def test_killed_and_resumed_run_equals_uninterrupted(reference_run, data, rt, tmp_path, phase, epoch, step):
    ref_dir, _ = reference_run
    with pytest.raises(Kill):
        run_search(tiny_config(tensorboard=True), data, tmp_path, rt, callback=kill_at(phase, epoch, step))
    assert not (tmp_path / "arch.json").exists()
    result = run_search(tiny_config(tensorboard=True), data, tmp_path, rt, resume=True)
    assert not result["stopped"]
    assert run_outputs(tmp_path) == run_outputs(ref_dir)


def test_max_steps_stops_and_resume_finishes_identically(reference_run, data, rt, tmp_path):
    ref_dir, _ = reference_run
    first = run_search(tiny_config(max_steps=7), data, tmp_path, rt)
    assert first["stopped"] and first["child_steps"] == 7
    # a second resume after another stop, then to the end
    again = run_search(tiny_config(max_steps=12), data, tmp_path, rt, resume=True)
    assert again["stopped"] and again["child_steps"] == 12
    run_search(tiny_config(), data, tmp_path, rt, resume=True)
    assert run_outputs(tmp_path) == run_outputs(ref_dir)


def test_corrupt_checkpoint_is_refused_and_the_last_good_one_kept(data, rt, tmp_path, monkeypatch):
    run_search(tiny_config(max_steps=4), data, tmp_path, rt)
    ckpt = tmp_path / "checkpoints" / "last.pt"
    good = ckpt.read_bytes()
    assert load_checkpoint(ckpt)["loop"]["child_steps_total"] == 4

    # a crash while the next checkpoint is written (here: the rename fails) leaves the good one in place
    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        run_search(tiny_config(), data, tmp_path, rt, resume=True)
    monkeypatch.undo()
    assert ckpt.read_bytes() == good
    assert not [p for p in ckpt.parent.iterdir() if p.name != "last.pt"]  # no temp files left behind

    # a truncated checkpoint gives a clear error and is not overwritten
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(MusicnasError, match="truncated or corrupt"):
        run_search(tiny_config(), data, tmp_path, rt, resume=True)
    assert ckpt.read_bytes() == good[: len(good) // 2]


def test_fresh_run_refuses_an_existing_run_and_resume_refuses_changed_settings(data, rt, tmp_path):
    run_search(tiny_config(max_steps=2), data, tmp_path, rt)
    with pytest.raises(MusicnasError, match="--resume"):
        run_search(tiny_config(max_steps=2), data, tmp_path, rt)
    with pytest.raises(MusicnasError, match="batch_size"):
        run_search(tiny_config(batch_size=4), data, tmp_path, rt, resume=True)
    with pytest.raises(MusicnasError, match="nothing to resume"):
        run_search(tiny_config(), data, tmp_path / "empty", rt, resume=True)


def test_cost_aware_reward_scores_candidates_with_their_cost(data, rt, tmp_path):
    cfg = tiny_config(
        epochs=1, reward="tunas", cost_metric="params", cost_target=1000.0, checkpoint_every_steps=0
    )
    run_search(cfg, data, tmp_path, rt)
    cands = json.loads((tmp_path / "candidates.json").read_text())["candidates"]
    for c in cands:
        expected = c["accuracy"] - 0.1 * abs(c["cost"]["params"] / 1000.0 - 1.0)
        assert c["score"] == pytest.approx(expected)


def test_micro_space_runs_through_the_same_loop(data, rt, tmp_path):
    cfg = tiny_config(
        space="micro",
        space_options={"num_cells": 1, "num_nodes": 2, "channels": 4},
        epochs=1,
        controller_updates_per_epoch=1,
        derive_samples=3,
        checkpoint_every_steps=0,
    )
    result = run_search(cfg, data, tmp_path, rt)
    assert result["arch"]["space"]["type"] == "micro"
    rows = jsonl(tmp_path / "metrics_epochs.jsonl")
    assert len(rows) == 1 and "skip_rate" not in rows[0]


def test_presets_config_files_and_overrides(tmp_path):
    cpu, ref = preset("cpu"), preset("reference")
    assert ref.space_options["num_layers"] == 12 and ref.space_options["channels"] == 36
    assert ref.batch_size == 128 and ref.epochs == 310 and ref.controller_archs_per_update == 20
    assert ref.controller_updates_per_epoch == 50 and cpu.batch_size == 32
    toml = tmp_path / "search.toml"
    toml.write_text('[search]\npreset = "reference"\nepochs = 5\n[search.space_options]\nchannels = 12\n')
    cfg = resolve_config("cpu", "macro", toml, {"seed": 3, "epochs": None})
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (5, 128, 3)
    assert cfg.space_options == {"num_layers": 12, "channels": 12, "num_branches": 6, "whole_channels": True}
    js = tmp_path / "search.json"
    js.write_text(json.dumps({"epochs": 2, "learning_rate": 1}))
    assert load_config_file(js)["epochs"] == 2
    with pytest.raises(MusicnasError, match="learning_rate"):
        resolve_config("cpu", "macro", js)
    with pytest.raises(MusicnasError, match="cost target"):
        resolve_config("cpu", "macro", None, {"reward": "mnas-soft"})


@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_scoring_never_changes_the_shared_network(bn):
    from musicnas.search.enas import scoring_mode

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "num_batches" not in k}
    x = torch.randn(6, 1, 5, 5) * 3 + 2
    with scoring_mode(net, bn):
        out = net(x)
        assert not out.requires_grad
    after = {k: v for k, v in net.state_dict().items() if "num_batches" not in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.training and net[1].momentum == 0.1
    # "batch" normalises with the batch's own statistics, "eval" with the (initial) running ones
    bn_out = out.view(6, 4, 3, 3)
    per_channel_mean = bn_out.mean(dim=(0, 2, 3)).abs().max().item()
    assert (per_channel_mean < 1e-4) == (bn == "batch")


def test_seen_architectures_are_bounded_and_ranked(data, rt, tmp_path, monkeypatch):
    from musicnas.search import enas

    monkeypatch.setattr(enas, "SEEN_LIMIT_MIN", 2)
    monkeypatch.setattr(enas, "SEEN_LIMIT_FACTOR", 1)
    run_search(tiny_config(epochs=2, keep_seen=2, checkpoint_every_steps=0), data, tmp_path, rt)
    seen = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["loop"]["seen"]
    assert len(seen) == 2  # 12 architectures were scored, only the best 2 are kept
    ranked = enas.rank_seen(
        {"a": {"sum": 1.0, "count": 2}, "b": {"sum": 0.9, "count": 1}, "c": {"sum": 1.0, "count": 1}}
    )
    assert [k for k, _ in ranked] == ["c", "b", "a"]


def test_derive_every_epoch_logs_scores_without_changing_the_search(reference_run, data, rt, tmp_path):
    ref_dir, _ = reference_run
    run_search(tiny_config(tensorboard=True, derive_every_epoch=True), data, tmp_path, rt)
    rows = read_rows(tmp_path / "metrics_epochs.jsonl")
    assert all(0.0 <= r["derived_mean"] <= r["derived_best"] <= 1.0 for r in rows)
    ref_rows = read_rows(ref_dir / "metrics_epochs.jsonl")
    assert [{k: v for k, v in r.items() if not k.startswith("derived_")} for r in rows] == ref_rows
    assert json.loads((tmp_path / "arch.json").read_text()) == json.loads((ref_dir / "arch.json").read_text())


def cost_aware_config(**overrides) -> SearchConfig:
    """A cost-aware reward and child dropout: scoring an architecture needs its cost, and dropout draws
    from torch's global generator, so any RNG use of the cost counting would show in the child losses."""
    values = dict(reward="tunas", cost_metric="params", cost_target=1000.0, child_dropout=0.5)
    values.update(overrides)
    return tiny_config(**values)


@pytest.fixture(scope="module")
def cost_aware_run(data, rt, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cost_aware")
    run_search(cost_aware_config(), data, run_dir, rt)
    return run_dir


@pytest.mark.parametrize("phase,epoch,step", [("child", 1, 1), ("controller", 1, 0)])
def test_cost_aware_search_with_dropout_resumes_bit_identically(
    cost_aware_run, data, rt, tmp_path, phase, epoch, step
):
    with pytest.raises(Kill):
        run_search(cost_aware_config(), data, tmp_path, rt, callback=kill_at(phase, epoch, step))
    # the checkpoint carries the costs met so far, so the resumed run does not count them again
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["costs"] and all(c["params"] > 0 for c in state["costs"].values())
    run_search(cost_aware_config(), data, tmp_path, rt, resume=True)
    assert run_outputs(tmp_path) == run_outputs(cost_aware_run)


def test_derive_every_epoch_does_not_change_a_cost_aware_search_with_dropout(
    cost_aware_run, data, rt, tmp_path
):
    run_search(cost_aware_config(derive_every_epoch=True), data, tmp_path, rt)
    observed = run_outputs(tmp_path)
    reference = run_outputs(cost_aware_run)
    # the child losses (dropout masks) and every controller step are the same as without observing
    assert observed["metrics_steps.jsonl"] == reference["metrics_steps.jsonl"]
    strip = [
        {k: v for k, v in r.items() if not k.startswith("derived_")} for r in observed["metrics_epochs.jsonl"]
    ]
    assert strip == reference["metrics_epochs.jsonl"]
    assert all("derived_best" in r for r in observed["metrics_epochs.jsonl"])
    assert observed["arch"] == reference["arch"] and observed["candidates"] == reference["candidates"]


def test_cost_counting_leaves_the_global_generator_alone(data, rt, tmp_path):
    from musicnas.search.enas import SearchRun

    search = SearchRun(cost_aware_config(), data, tmp_path, rt)
    arch = search.space.sample(0)
    before = torch.get_rng_state()
    cost = search.cost(arch)
    assert torch.equal(torch.get_rng_state(), before) and cost.params > 0


def test_rescoring_ranks_every_candidate_by_the_whole_validation_split(data, rt, tmp_path):
    from musicnas.baselines.shared_scoring import shared_weight_accuracies
    from musicnas.spaces import load_arch

    run_search(tiny_config(derive_batches=1, derive_rescore=4), data, tmp_path / "rescored", rt)
    record = json.loads((tmp_path / "rescored" / "candidates.json").read_text())
    cands, info = record["candidates"], record["derive"]
    assert info["clips"] == 8 and info["rescore"] == {"candidates": len(cands), "batches": 2, "clips": 15}
    assert 4 <= len(cands) <= 4 + 2  # the screening's best 4 and the 2 seen ones, repeats merged
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True)
    # each score is the architecture's accuracy on all 15 val clips, as the ranking study computes it
    archs = [load_arch(c["arch"]) for c in cands]
    whole = shared_weight_accuracies(tmp_path / "rescored", archs, data, rt)
    assert [c["accuracy"] for c in cands] == pytest.approx(whole)

    # the same search screened only: the same shared weights (rescoring is after the search), and each
    # candidate's screening score is the one the rescored run kept as screen_score
    run_search(tiny_config(derive_batches=1, derive_rescore=0), data, tmp_path / "screened", rt)
    screened = json.loads((tmp_path / "screened" / "candidates.json").read_text())
    assert "rescore" not in screened["derive"] and all(
        "screen_score" not in c for c in screened["candidates"]
    )
    by_key = {json.dumps(c["arch"], sort_keys=True): c["score"] for c in screened["candidates"]}
    kept = [(by_key[json.dumps(c["arch"], sort_keys=True)], c["screen_score"]) for c in cands
            if json.dumps(c["arch"], sort_keys=True) in by_key]  # fmt: skip
    assert kept and all(a == pytest.approx(b) for a, b in kept)
    ref = load_checkpoint(tmp_path / "screened" / "checkpoints" / "last.pt")["model"]
    got = load_checkpoint(tmp_path / "rescored" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_derive_by_loss_ranks_by_cross_entropy_and_a_cost_aware_reward_keeps_the_reward(
    data, rt, tmp_path, cost_aware_run
):
    by = {}
    for rank in ("loss", "reward"):
        run_search(tiny_config(derive_by=rank), data, tmp_path / rank, rt)
        by[rank] = json.loads((tmp_path / rank / "candidates.json").read_text())
    loss_cands, reward_cands = by["loss"]["candidates"], by["reward"]["candidates"]
    assert by["loss"]["derive"]["ranked_by"] == "loss" and by["reward"]["derive"]["ranked_by"] == "reward"
    losses = [c["loss"] for c in loss_cands]
    assert losses == sorted(losses) and all(c["score"] == -c["loss"] for c in loss_cands)
    accs = [c["accuracy"] for c in reward_cands]
    assert accs == sorted(accs, reverse=True) and all(c["score"] == c["accuracy"] for c in reward_cands)
    # same search, same candidates: the two orders differ only by what ranks them
    key = lambda c: json.dumps(c["arch"], sort_keys=True)  # noqa: E731
    assert {key(c): c["loss"] for c in loss_cands} == pytest.approx({key(c): c["loss"] for c in reward_cands})
    # a cost-aware reward trades accuracy against cost, so it still ranks (derive_by is loss by default)
    cost_aware = json.loads((cost_aware_run / "candidates.json").read_text())
    assert cost_aware["derive"]["ranked_by"] == "reward"
    assert all(c["score"] != -c["loss"] for c in cost_aware["candidates"])


def test_derive_by_mode_writes_the_policys_mode_first(data, rt, tmp_path):
    from musicnas.search.factorized import FactorizedController
    from musicnas.spaces import load_arch
    from musicnas.utils.io import load_checkpoint

    config = tiny_config(
        derive_by="mode", controller="factorized", controller_lr=0.5, controller_update_every=1
    )
    run_search(config, data, tmp_path / "mode", rt)
    cands = json.loads((tmp_path / "mode" / "candidates.json").read_text())
    arch = load_arch(tmp_path / "mode" / "arch.json")
    # the mode of the policy as trained (read back from the final checkpoint, not from what derive logged)
    policy = FactorizedController(arch.space)
    policy.load_state_dict(load_checkpoint(tmp_path / "mode" / "checkpoints" / "last.pt")["controller"])
    assert arch.key() == policy.most_likely().key()
    assert cands["candidates"][0]["source"] == "mode" and cands["derive"]["ranked_by"] == "mode, then loss"
    rest = cands["candidates"][1:]
    assert rest and all(c["source"] != "mode" for c in rest)
    keys = [json.dumps(c["arch"], sort_keys=True) for c in cands["candidates"]]
    assert len(keys) == len(set(keys))  # the mode is not listed twice
    assert [c["loss"] for c in rest] == sorted(c["loss"] for c in rest)


def test_unknown_derive_by_is_refused():
    with pytest.raises(MusicnasError, match="derive_by must be one of"):
        tiny_config(derive_by="accuracy").validate()
