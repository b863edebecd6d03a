"""Bad input and faults (issue 13): each numbered case of the issue has a test here that failed before
the fix: data corrupted by links, resume on other data, tracebacks (zero-byte checkpoints, broken links,
full disks, out-of-range options, files where folders belong, huge values), undetected tampering of
bundles and misleading messages."""

from __future__ import annotations

import errno
import json
import os
import shutil

import click
import numpy as np
import pytest
import torch

import musicnas
from conftest import reseal_bundle, run_cli, write_tone_track
from musicnas.cli import SUBCOMMANDS, LazyGroup, cli
from musicnas.data.audio import AudioSkip, load_audio
from musicnas.data.cache import prepare
from musicnas.data.features import FeatureConfig
from musicnas.data.sources import find_audio
from musicnas.export.bundle import save_bundle
from musicnas.models import ModelSpec, build_model
from musicnas.retrain import train_arch
from musicnas.runtime import MusicnasError, setup
from musicnas.spaces.macro import MacroArch, MacroSpace
from musicnas.training.trainer import TrainConfig
from musicnas.utils.io import atomic_write_bytes, load_checkpoint, save_checkpoint

CLASSES = ["low", "mid", "high"]
TRAIN = TrainConfig(epochs=2, batch_size=4, patience=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rt(one_torch_thread):
    return setup("cpu", 1)


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _pool_arch(op: int = 4):
    """Two layers, the first a parameter-free pool (4 avg, 5 max): swapping it keeps the weights valid."""
    return MacroArch.from_flat([op, 0, 1], MacroSpace(num_layers=2, num_branches=6, channels=4))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    arch = _pool_arch()
    torch.manual_seed(0)
    spec = ModelSpec.for_arch(arch, in_channels=1, num_classes=3, channels=4, dropout=0.1)
    model = build_model(spec, arch).eval()
    out = tmp_path_factory.mktemp("bundle") / "model"
    cfg = FeatureConfig(clip_hop_seconds=3.0)  # the tiny cache's clips
    save_bundle(out, model, arch, cfg, CLASSES, np.full(cfg.n_mels, -40.0), np.full(cfg.n_mels, 10.0), {}, model_spec=spec)  # fmt: skip
    return out


def _copy(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


class _Stop(Exception):
    pass


def _stop_after_first_epoch(record):
    if record["epoch"] == 1:
        raise _Stop


@pytest.fixture(scope="module")
def interrupted_run(tiny_cache, tmp_path_factory, rt):
    """A training run stopped after epoch 1 of 2 (checkpoint and train_config.json in place)."""
    out = tmp_path_factory.mktemp("interrupted") / "model"
    with pytest.raises(_Stop):
        arch = MacroSpace(num_layers=2, num_branches=6, channels=4).sample(3)
        train_arch(arch, tiny_cache, out, TRAIN, rt, seed=1, on_epoch_end=_stop_after_first_epoch, show_progress=False)  # fmt: skip
    return out


# ------------------------------------------------------------------ 1. directory link loops in class folders
def test_1_directory_link_loops_are_followed_once_and_never_relabel(tmp_path, caplog):
    root = tmp_path / "data"
    for name in ("rock", "jazz", "pop"):
        for i in range(4):
            write_tone_track(root / name / f"{name}{i}.wav", 200 + 20 * i, 3.2, seed=i)
    write_tone_track(root / "rock" / "live" / "rock_live.wav", 300, 3.2)
    outside = write_tone_track(tmp_path / "elsewhere" / "far.wav", 500, 3.2).parent
    os.symlink("..", root / "rock" / "up")  # the data root: would give every class's files the label rock
    os.symlink(".", root / "jazz" / "self")  # a loop onto itself
    os.symlink("live", root / "rock" / "live_again")  # a second way into a folder already walked
    os.symlink("../jazz", root / "pop" / "jazz_link")  # another class's folder
    os.symlink(outside, root / "pop" / "outside")  # outside the data root

    source = find_audio(root)
    real = [os.path.realpath(f.path) for f in source.files]
    assert len(source.files) == 13 and len(set(real)) == 13  # 12 files + rock/live, each once
    for f, path in zip(source.files, real, strict=True):
        assert os.path.relpath(path, root.resolve()).split(os.sep)[0] == f.label  # labelled by its own folder
    assert "leads outside the data folder" in caplog.text and "leads out of its class folder" in caplog.text

    followed = find_audio(root, follow_links_outside=True)  # asked for: the outside folder is walked
    assert sorted(os.path.basename(f.path) for f in followed.files if f.label == "pop")[-1] == "pop3.wav"
    assert "far.wav" in {os.path.basename(f.path) for f in followed.files}

    cache = prepare(root, tmp_path / "cache", FeatureConfig(), workers=1, show_progress=False)
    assert len(cache) == 13  # one 3 s clip per file
    split_of = {}
    for group, split in zip((cache.groups[i] for i in cache.track_ids), cache.splits, strict=True):
        assert split_of.setdefault(group, split) == split  # no file spread over two splits


# --------------------------------------------------- 2. train --resume RUN --data OTHER (other split)
def test_2_resume_on_other_data_is_refused_naming_what_differs(
    tiny_audio_dir, tiny_cache, interrupted_run, tmp_path, capsys
):
    run = _copy(interrupted_run, tmp_path)
    other = prepare(
        tiny_audio_dir, tmp_path / "cache", FeatureConfig(), seed=1, workers=1, show_progress=False
    )
    assert other.root != tiny_cache.root
    common = ["--device", "cpu", "--threads", "1"]
    code, _, err = run_cli(["train", "--resume", str(run), "--data", str(other.root), *common], capsys)
    assert code == 2 and "Traceback" not in err
    assert "cannot resume" in err and "split seed: run 0, now 1" in err
    assert "split of the tracks into train/val/test" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1  # nothing was trained on it

    # the run's records describe the data it was trained on, and agree
    recorded = json.loads((run / "train_config.json").read_text())
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert recorded["data_identity"] == state["data"]
    assert state["data"]["cache"] == str(tiny_cache.root) and state["data"]["seed"] == 0

    # the run's own data resumes and finishes
    code, out, err = run_cli(["train", "--resume", str(run), *common], capsys)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["data"]["identity"] == state["data"]


# ----------------------------------------------------------------------------- 3. zero-byte checkpoints
def test_3_zero_byte_checkpoint_is_a_clear_error_in_every_command(
    tiny_cache, interrupted_run, tmp_path, capsys, rt
):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(MusicnasError, match=r"empty \(0 bytes\)"):
        load_checkpoint(empty)

    model = _copy(interrupted_run, tmp_path, "model")
    (model / "checkpoints" / "last.pt").write_bytes(b"")
    code, _, err = run_cli(["train", "--resume", str(model), "--device", "cpu", "--threads", "1"], capsys)
    assert code == 2 and "empty (0 bytes)" in err and "Traceback" not in err

    from musicnas.search.config import SearchConfig
    from musicnas.search.enas import run_search

    search = tmp_path / "search"
    small = dict(space_options={"num_layers": 2, "channels": 4, "num_branches": 4}, epochs=1, batch_size=8,
                 max_steps=1, tensorboard=False, data=str(tiny_cache.root))  # fmt: skip
    run_search(SearchConfig(**small), tiny_cache, search, rt)
    (search / "checkpoints" / "last.pt").write_bytes(b"")
    (search / "arch.json").write_text(json.dumps(_pool_arch().to_json()))  # a stopped search has none yet
    for args in (
        ["search", "--resume", str(search)],
        ["extract", "--run", str(search), "--out", str(tmp_path / "x")],
    ):
        code, _, err = run_cli([*args, *(["--device", "cpu"] if args[0] == "search" else [])], capsys)
        assert code == 2 and "empty (0 bytes)" in err and "Traceback" not in err, err


# ------------------------------------------------------------ 4. dangling links and file link loops
def test_4_broken_file_links_are_skipped_files_with_a_reason(tmp_path):
    root = tmp_path / "data"
    for name in ("a", "b"):
        for i in range(3):
            write_tone_track(root / name / f"{name}{i}.wav", 200 + 50 * i, 3.2, seed=i)
    os.symlink("missing.wav", root / "a" / "dangling.wav")
    os.symlink("loop.wav", root / "b" / "loop.wav")
    cache = prepare(root, tmp_path / "cache", FeatureConfig(), workers=1, show_progress=False)
    assert len(cache) == 6
    reasons = {os.path.basename(s["path"]): s["reason"] for s in cache.summary()["skipped"]["files"]}
    assert reasons["dangling.wav"].startswith("dangling symbolic link")
    assert reasons["loop.wav"] == "symbolic link loop"


# ------------------------------------------------------------------------------------------ 5. disk full
def test_5_atomic_write_on_a_full_disk_says_what_where_and_how_much(tmp_path, monkeypatch):
    target = tmp_path / "out" / "weights.bin"
    atomic_write_bytes(target, b"old")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(MusicnasError) as info:
        atomic_write_bytes(target, b"x" * 5000)
    message = str(info.value)
    assert "could not write weights.bin in" in message and str(target.parent) in message
    assert "no space is left on the device" in message and "needed 4.9 kB" in message and "free" in message
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["weights.bin"]


def test_5_training_on_a_full_disk_keeps_the_last_good_checkpoint(tiny_cache, tmp_path, monkeypatch, rt):
    out = tmp_path / "model"

    def fill_disk_after_epoch_1(record):
        if record["epoch"] == 1:
            monkeypatch.setattr(os, "fsync", _disk_full)

    arch = MacroSpace(num_layers=2, num_branches=6, channels=4).sample(3)
    with pytest.raises(MusicnasError, match="could not write last.pt .*no space is left"):
        train_arch(
            arch, tiny_cache, out, TRAIN, rt, on_epoch_end=fill_disk_after_epoch_1, show_progress=False
        )
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert os.listdir(out / "checkpoints") == ["last.pt"]  # no partial file left


def test_5_prepare_on_a_full_disk_leaves_no_partial_cache(tiny_audio_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(MusicnasError, match="could not write features.npy .*no space is left"):
        prepare(tiny_audio_dir, tmp_path / "cache", FeatureConfig(), workers=1, show_progress=False)
    assert os.listdir(tmp_path / "cache") == []


def test_5_torchscript_export_on_a_full_disk_leaves_no_file(bundle_dir, tmp_path, monkeypatch):
    from musicnas.export.formats import export_model

    classifier = musicnas.load(bundle_dir, device="cpu")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(MusicnasError, match="could not write model.pt .*no space is left"):
        export_model(classifier, "torchscript", tmp_path / "exp" / "model.pt")
    assert os.listdir(tmp_path / "exp") == []  # neither the target nor a 0-byte temporary


def test_5_evaluate_and_search_on_a_full_disk_end_in_one_message(bundle_dir, tiny_cache, tmp_path, monkeypatch, capsys):  # fmt: skip
    model = _copy(bundle_dir, tmp_path)
    monkeypatch.setattr(os, "fsync", _disk_full)
    code, _, err = run_cli(["evaluate", "--model", str(model), "--data", str(tiny_cache.root), "--device", "cpu"], capsys)  # fmt: skip
    assert code == 2 and "could not write evaluation.json" in err and "Traceback" not in err
    assert not (model / "evaluation.json").exists()
    code, _, err = run_cli(
        ["search", "--data", str(tiny_cache.root), "--layers", "2", "--channels", "4", "--epochs", "1",
         "--out", str(tmp_path / "run"), "--device", "cpu"], capsys,
    )  # fmt: skip
    assert code == 2 and "no space is left" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- 6. numeric CLI options
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["evaluate", "--model", "m", "--data", "d", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "--model", "m", "--data", "d", "--batch-size", "-5"], "--batch-size"),
        (["evaluate", "--model", "m", "--data", "d", "--threads", "0"], "--threads"),
        (["evaluate", "--model", "m", "--data", "d", "--threads", "-3"], "--threads"),
        (["evaluate", "--model", "m", "--data", "d", "--threads", "9999"], "--threads"),
        (["data", "prepare", "--data", "d", "--workers", "0"], "--workers"),
        (["data", "prepare", "--data", "d", "--workers", "-1"], "--workers"),
        (["predict", "--model", "m", "f.wav", "--batch-size", "0"], "--batch-size"),
        (["predict", "--model", "m", "f.wav", "--batch-size", "-1"], "--batch-size"),
        (
            ["export", "--model", "m", "--format", "onnx", "--out", "x.onnx", "--tolerance", "-1"],
            "--tolerance",
        ),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--dropout", "1.5"], "--dropout"),
        (["search", "--epochs", "0"], "--epochs"),
        (["search", "--seed", "-1"], "--seed"),
        (["data", "prepare", "--data", "d", "--clip-seconds", "1e9"], "--clip-seconds"),
    ],
)
def test_6_out_of_range_options_are_refused_by_name(args, option, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and f"Invalid value for '{option}'" in err and "Traceback" not in err


def _all_commands():
    group = LazyGroup()
    for name in SUBCOMMANDS:
        command = group.get_command(None, name)
        if isinstance(command, click.Group):
            yield from ((f"{name} {sub}", c) for sub, c in command.commands.items())
        elif command is not None:
            yield name, command


def test_6_every_numeric_option_has_a_range_shown_in_help():
    unranged = []
    for name, command in _all_commands():
        for param in command.params:
            if param.type in (click.INT, click.FLOAT):
                unranged.append(f"{name} {param.opts[0]}")
    assert unranged == []
    ctx = click.Context(cli)
    help_text = LazyGroup().get_command(None, "evaluate").get_help(ctx)
    assert "x>=1" in help_text


# ------------------------------------------------------------------------ 7. a file where a folder goes
def test_7_a_file_given_as_a_folder_is_a_clear_error(tiny_audio_dir, tmp_path, capsys):
    existing = tmp_path / "a_file"
    existing.write_text("x")
    for args in (
        ["data", "prepare", "--data", str(tiny_audio_dir), "--cache", str(existing)],
        ["search", "--data", str(tiny_audio_dir), "--out", str(existing)],
        ["search", "--data", str(tiny_audio_dir), "--cache", str(existing)],
    ):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "is a file" in err and "Traceback" not in err, (args, err)
    with pytest.raises(MusicnasError, match="a_file is a file, not a folder"):
        prepare(tiny_audio_dir, existing / "sub", FeatureConfig(), workers=1, show_progress=False)


# --------------------------------------------------------------------------------- 8. huge values
def test_8_huge_values_are_bounded_and_blame_the_option(bundle_dir, tiny_audio_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    meta["features"]["clip_seconds"] = 1e9
    (b / "bundle.json").write_text(json.dumps(meta))
    reseal_bundle(b)  # even a consistent bundle may not ask for a 1e9 s clip
    with pytest.raises(MusicnasError, match=r"bundle.json: 'features'.*clip_seconds=1000000000.0 must be > 0 and at most 600"):  # fmt: skip
        musicnas.load(b, device="cpu")
    with pytest.raises(MusicnasError, match="clip_seconds"):
        FeatureConfig(clip_seconds=float("nan"))
    # files shorter than the options ask for: the options are to blame, not the files
    with pytest.raises(MusicnasError, match="lower --min-seconds") as info:
        prepare(tiny_audio_dir, tmp_path / "c", FeatureConfig(clip_seconds=10, min_seconds=10), workers=1, show_progress=False)  # fmt: skip
    assert "fix or replace" not in str(info.value)


# ------------------------------------------------------------------------------------ 9. tampering
def test_9_tampered_bundle_files_are_refused_naming_the_file(bundle_dir, tmp_path, caplog):
    swapped = _copy(bundle_dir, tmp_path, "swapped")
    (swapped / "arch.json").write_text(json.dumps(_pool_arch(op=5).to_json()))  # avg-pool -> max-pool
    with pytest.raises(MusicnasError, match=r"swapped/arch\.json was changed after the bundle was saved"):
        musicnas.load(swapped, device="cpu")

    reordered = _copy(bundle_dir, tmp_path, "reordered")
    meta = json.loads((reordered / "bundle.json").read_text())
    meta["classes"] = list(reversed(meta["classes"]))
    (reordered / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(MusicnasError, match=r"reordered/bundle\.json was changed"):
        musicnas.load(reordered, device="cpu")

    weights = _copy(bundle_dir, tmp_path, "weights")
    data = bytearray((weights / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: still a valid safetensors file
    (weights / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(MusicnasError, match=r"weights/model\.safetensors was changed"):
        musicnas.load(weights, device="cpu")

    # formatting is not content: a re-indented bundle loads
    pretty = _copy(bundle_dir, tmp_path, "pretty")
    for name in ("arch.json", "bundle.json"):
        (pretty / name).write_text(json.dumps(json.loads((pretty / name).read_text()), indent=7))
    assert musicnas.load(pretty, device="cpu").classes == CLASSES

    # a bundle saved before digests existed loads, with a warning
    old = _copy(bundle_dir, tmp_path, "old")
    meta = json.loads((old / "bundle.json").read_text())
    del meta["digests"]
    (old / "bundle.json").write_text(json.dumps(meta))
    assert musicnas.load(old, device="cpu").classes == CLASSES
    assert "records no file digests" in caplog.text


# -------------------------------------------------------------------------------------- 10. messages
def test_10_text_renamed_to_mp3_is_called_text_without_decoder_noise(tmp_path, capfd):
    path = tmp_path / "song.mp3"
    path.write_text("these are lyrics, not audio\n" * 40)
    with pytest.raises(AudioSkip, match=r"not audio: the file holds text, not \.mp3 data"):
        load_audio(path, 16000)
    err = capfd.readouterr().err
    assert "MPEG" not in err and "possibly a pipe" not in err


def test_10_an_unreadable_file_does_not_stop_predict(bundle_dir, tmp_path, monkeypatch, capsys):
    good = [write_tone_track(tmp_path / f"good{i}.wav", 300 + 100 * i, 3.5) for i in range(2)]
    locked = write_tone_track(tmp_path / "locked.wav", 500, 3.5)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(locked) and real_access(p, mode, **kw))  # fmt: skip
    code, out, err = run_cli(["predict", "--model", str(bundle_dir), str(good[0]), str(locked), str(good[1]), "--device", "cpu"], capsys)  # fmt: skip
    assert code == 2
    assert f"{good[0]}: " in out and f"{good[1]}: " in out  # the others are labelled
    assert "locked.wav" in err and "permission denied" in err and "1 of 3 files" in err


def test_10_a_class_pinned_to_test_is_reported_with_its_reason(tmp_path, caplog):
    lines = ["path,label,split"]
    for name, base in (("a", 200), ("b", 400), ("c", 800)):
        for i in range(4):
            write_tone_track(tmp_path / "audio" / f"{name}{i}.wav", base + 10 * i, 3.2, seed=i)
            lines.append(f"audio/{name}{i}.wav,{name},{'test' if name == 'c' else ''}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    cache = prepare(tmp_path / "m.csv", tmp_path / "cache", FeatureConfig(), workers=1, show_progress=False)
    assert "split train has no clips of class 'c': the manifest's split column pins all its 4 group(s) to test (4)" in caplog.text  # fmt: skip
    assert "fewer than 3" not in caplog.text
    caplog.clear()
    from musicnas.cli.train import _warn_untrainable_classes

    _warn_untrainable_classes(cache)  # what `musicnas train` says before it trains
    assert "class 'c' has no clips in the train split (the manifest's split column pins" in caplog.text
    assert "the model will never predict it" in caplog.text


def test_10_checkpoint_messages_say_musicnas_never_loads_pickles_and_keeps_one_checkpoint(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    pickled = tmp_path / "p.pt"
    torch.save({"x": Payload()}, pickled)
    with pytest.raises(MusicnasError) as info:
        load_checkpoint(pickled)
    assert "musicnas never loads pickles" in str(info.value) and "weights_only" not in str(info.value)

    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.zeros(3)})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(MusicnasError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert "earlier checkpoint" not in str(info.value) and "start the run again" in str(info.value)


# ----------------------------------------------------------------------- no traceback unless --debug
def test_unexpected_errors_print_a_traceback_only_with_debug(tmp_path, monkeypatch, capsys):
    import musicnas.data.cache as cache_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cache_module, "prepare", broken)
    args = ["data", "prepare", "--data", str(tmp_path)]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "unexpected internal error (RuntimeError: boom)" in err and "--debug" in err
    assert "Traceback" not in err
    code, _, err = run_cli(["--debug", *args], capsys)
    assert code == 1 and "Traceback (most recent call last)" in err
