"""Retraining: resume equals an uninterrupted run; settings are checked; any nn.Module trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import musicnas
from musicnas.models import ModelSpec, register_model_type
from musicnas.retrain import train_arch
from musicnas.retrain import train_bundle as train_model
from musicnas.runtime import MusicnasError, setup
from musicnas.spaces.macro import MacroSpace
from musicnas.training.trainer import TrainConfig

CONFIG = TrainConfig(
    epochs=3,
    batch_size=4,
    patience=0,
    select_by="val_acc",
    augment=TrainConfig().augment.__class__(mixup_alpha=0.4),
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one torch thread beats two that contend for a busy 2-core machine (5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Interrupt(Exception):
    pass


def _arch():
    return MacroSpace(num_layers=2, num_branches=6, channels=4).sample(3)


@pytest.fixture(scope="module")
def rt(_one_thread):
    return setup("cpu", 1)


@pytest.fixture(scope="module")
def uninterrupted(tiny_cache, tmp_path_factory, rt):
    out = tmp_path_factory.mktemp("full") / "model"
    summary = train_arch(_arch(), tiny_cache, out, CONFIG, rt, seed=7, show_progress=False)
    return out, summary


def _history(out):
    rows = [json.loads(line) for line in (out / "metrics_epochs.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _train_until_epoch_two(data, out, config, rt):
    """Starts a seed-7 training of ``_arch()`` and interrupts it after its second epoch."""

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_arch(_arch(), data, out, config, rt, seed=7, on_epoch_end=stop_after_two, show_progress=False)


def test_resume_after_interruption_equals_uninterrupted_run(tiny_cache, tmp_path, rt, uninterrupted):
    full_dir, full_summary = uninterrupted
    out = tmp_path / "model"
    _train_until_epoch_two(tiny_cache, out, CONFIG, rt)
    assert (out / "checkpoints" / "last.pt").exists() and not (out / "bundle.json").exists()
    assert len(_history(out)) == 2
    summary = train_arch(_arch(), tiny_cache, out, CONFIG, rt, seed=7, resume=True, show_progress=False)

    assert _history(out) == _history(full_dir)
    a, b = load_file(out / "model.safetensors"), load_file(full_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key in ("best_epoch", "epochs_run", "val", "test"):
        assert summary[key] == full_summary[key]


def test_uninterrupted_run_writes_a_loadable_bundle(tiny_cache, uninterrupted):
    out, summary = uninterrupted
    for name in ("model.safetensors", "arch.json", "bundle.json", "summary.json", "metrics_epochs.jsonl"):
        assert (out / name).is_file(), name
    history = _history(out)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    best = max(history, key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert summary["best_epoch"] == best["epoch"]
    assert summary["val"]["clip_accuracy"] == pytest.approx(best["val_acc"])
    assert history[0]["lr"] > history[-1]["lr"]  # cosine decay
    assert summary["cost"]["params"] > 0 and summary["cost"]["macs"] > 0
    clf = musicnas.load(out, device="cpu")
    assert clf.classes == list(tiny_cache.classes)
    np.testing.assert_allclose(clf.mean.numpy(), tiny_cache.mean)
    x, _ = tiny_cache.get_batch(tiny_cache.split_indices("val"))
    assert clf.model(x).shape == (len(x), tiny_cache.num_classes)


def test_another_seed_gives_another_run(tiny_cache, tmp_path, rt, uninterrupted):
    # (that one seed repeats exactly is shown by the resume test: two runs, identical weights)
    full_dir, _ = uninterrupted
    cfg = TrainConfig(epochs=1, batch_size=4, patience=0, augment=CONFIG.augment)
    train_arch(_arch(), tiny_cache, tmp_path / "c", cfg, rt, seed=8, show_progress=False)
    assert _history(tmp_path / "c")[0] != _history(full_dir)[0]


def test_resume_refuses_other_settings_and_fresh_runs_refuse_old_checkpoints(tiny_cache, rt, uninterrupted):
    out, _ = uninterrupted
    with pytest.raises(MusicnasError, match="lr: checkpoint 0.05, now 0.1"):
        train_arch(_arch(), tiny_cache, out, CONFIG.replace(lr=0.1), rt, seed=7, resume=True)
    with pytest.raises(MusicnasError, match="seed"):
        train_arch(_arch(), tiny_cache, out, CONFIG, rt, seed=8, resume=True)
    with pytest.raises(MusicnasError, match="already holds a training checkpoint"):
        train_arch(_arch(), tiny_cache, out, CONFIG, rt, seed=7)


def test_finished_run_resumes_to_the_same_result_without_training(tiny_cache, rt, uninterrupted):
    out, summary = uninterrupted
    before = load_file(out / "model.safetensors")
    again = train_arch(_arch(), tiny_cache, out, CONFIG, rt, seed=7, resume=True, show_progress=False)
    assert again["epochs_run"] == 3 and again["val"] == summary["val"]
    after = load_file(out / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


@register_model_type("test_train_linear")
def _build_linear(arch, in_channels, num_classes, channels=None, dropout=0.0, **kwargs):
    return nn.Sequential(nn.AdaptiveAvgPool2d((8, 1)), nn.Flatten(), nn.Linear(8 * in_channels, num_classes))


def test_any_module_trains_and_early_stopping_stops(tiny_cache, tmp_path, rt):
    torch.manual_seed(0)
    model = _build_linear(None, 1, tiny_cache.num_classes)
    spec = ModelSpec.for_type("test_train_linear", 1, tiny_cache.num_classes)
    cfg = TrainConfig(epochs=12, batch_size=4, lr=1e-6, min_lr=0.0, patience=2, select_by="val_acc")
    summary = train_model(
        model, tiny_cache, tmp_path / "lin", cfg, rt, seed=0, model_spec=spec, show_progress=False
    )
    # with a learning rate of 1e-6 val accuracy cannot improve after epoch 1: stop after 1 + patience
    assert summary["stopped_early"] and summary["epochs_run"] == 3
    assert summary["val"]["clip_accuracy"] == max(r["val_acc"] for r in _history(tmp_path / "lin"))
    clf = musicnas.load(tmp_path / "lin", device="cpu")
    assert clf.spec.type == "test_train_linear"


@pytest.mark.parametrize("rule", ["last", "val_loss"])
def test_the_selection_rule_decides_which_epoch_is_kept(tiny_cache, tmp_path, rt, rule):
    out = tmp_path / rule
    summary = train_arch(
        _arch(), tiny_cache, out, CONFIG.replace(select_by=rule), rt, seed=7, show_progress=False
    )
    history = _history(out)
    kept = history[-1] if rule == "last" else min(history, key=lambda r: r["val_loss"])
    assert summary["best_epoch"] == kept["epoch"]
    assert summary["val"]["loss"] == pytest.approx(kept["val_loss"], rel=1e-4)
    if rule == "last":  # the bundle holds the final weights, those of the checkpoint
        final = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
        saved = load_file(out / "model.safetensors")
        assert all(torch.equal(saved[k], final[k]) for k in saved)


def test_a_run_recorded_before_select_by_resumes_keeping_the_best_val_epoch(tiny_cache, tmp_path, rt):
    out = tmp_path / "old"
    _train_until_epoch_two(tiny_cache, out, CONFIG, rt)
    ckpt = out / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["config"]["select_by"], state["top_val_acc"]  # what an older musicnas wrote
    torch.save(state, ckpt)
    record = json.loads((out / "train_config.json").read_text())
    del record["config"]["select_by"]
    config = TrainConfig.from_record(record["config"])
    assert config.select_by == "val_acc" and TrainConfig.from_dict(record["config"]).select_by == "last"
    summary = train_arch(_arch(), tiny_cache, out, config, rt, seed=7, resume=True, show_progress=False)
    best = max(_history(out), key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert summary["best_epoch"] == best["epoch"]


def test_bad_options_are_user_errors():
    with pytest.raises(MusicnasError, match="select_by='best'"):
        TrainConfig(select_by="best")
    with pytest.raises(MusicnasError, match="batch_size"):
        TrainConfig(batch_size=1)
    with pytest.raises(MusicnasError, match="unknown training options"):
        TrainConfig.from_dict({"epochz": 3})


def test_weight_average_follows_the_ema_formula_and_copies_integer_buffers():
    from musicnas.training.trainer import WeightAverage

    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    avg = WeightAverage(model, decay=0.75)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(4, 3))  # moves running stats, counts a batch
    avg.update(model)
    now = model.state_dict()
    for key, value in avg.state.items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.75 * start[key] + 0.25 * now[key]), key
        else:
            assert torch.equal(value, now[key]), key  # num_batches_tracked: copied, not averaged
    with avg.swapped_into(model) as inside:
        assert torch.allclose(inside[0].weight, avg.state["0.weight"])
    assert torch.equal(model[0].weight, now["0.weight"])  # restored after


def test_ema_training_saves_the_average_and_resumes_bit_identically(tiny_cache, tmp_path, rt, uninterrupted):
    config = CONFIG.replace(ema_decay=0.9)
    full = tmp_path / "full"
    train_arch(_arch(), tiny_cache, full, config, rt, seed=7, show_progress=False)
    averaged = load_file(full / "model.safetensors")
    plain = load_file(uninterrupted[0] / "model.safetensors")  # same seed and settings, no average
    assert averaged.keys() == plain.keys()
    assert any(not torch.equal(averaged[k], plain[k]) for k in plain if plain[k].is_floating_point())

    out = tmp_path / "cut"
    _train_until_epoch_two(tiny_cache, out, config, rt)
    train_arch(_arch(), tiny_cache, out, config, rt, seed=7, resume=True, show_progress=False)
    resumed = load_file(out / "model.safetensors")
    for key in averaged:
        assert torch.equal(resumed[key], averaged[key]), key
    assert _history(out) == _history(full)


def test_ema_decay_out_of_range_is_refused():
    with pytest.raises(MusicnasError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
