"""Shared fixtures. Audio for tests is generated here: nothing is downloaded."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("MUSICNAS_NO_REEXEC", "1")

import json

import numpy as np
import pytest
import soundfile as sf
import torch

# Under pytest-xdist each worker gets one thread, so 2 workers share 2 cores without oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def write_tone_track(path, freq: float, seconds: float, sr: int = 16000, seed: int = 0, noise: float = 0.05):
    """A harmonic tone with a little noise: cheap, deterministic audio for pipeline tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3))
    wave = 0.3 * wave / np.max(np.abs(wave)) + noise * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one torch thread beats two that contend for a busy 2-core machine (5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(args, capsys):
    """Runs the ``musicnas`` entry point in-process: (exit code, stdout, stderr)."""
    from musicnas.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def reseal_bundle(b):
    """Recomputes the digests in bundle.json after an edit, as a tamperer who knows the format would: the
    checks below the digest layer must still refuse what the edit broke."""
    from musicnas.export.bundle import bundle_record_digest, bytes_digest, json_digest

    try:
        meta = json.loads((b / "bundle.json").read_text())
    except ValueError:
        return
    if not isinstance(meta, dict) or not isinstance(meta.get("digests"), dict):
        return
    digests = {"algorithm": "sha256"}
    if (b / "model.safetensors").is_file():
        digests["model.safetensors"] = bytes_digest((b / "model.safetensors").read_bytes())
    with contextlib.suppress(OSError, ValueError):  # missing or not JSON: the loader reports it
        digests["arch.json"] = json_digest(json.loads((b / "arch.json").read_text()))
    digests["bundle.json"] = bundle_record_digest(meta)
    meta["digests"] = digests
    (b / "bundle.json").write_text(json.dumps(meta))


@pytest.fixture(scope="session")
def tiny_audio_dir(tmp_path_factory):
    """3 classes x 6 tracks x 4 s of tones, folder-per-class layout."""
    root = tmp_path_factory.mktemp("tiny_audio")
    for ci, (name, base) in enumerate([("low", 110.0), ("mid", 330.0), ("high", 990.0)]):
        for t in range(6):
            write_tone_track(root / name / f"{name}_{t}.wav", base * (1 + 0.03 * t), 4.0, seed=100 * ci + t)
    return root


@pytest.fixture(scope="session")
def tiny_cache(tiny_audio_dir, tmp_path_factory):
    """The tiny audio prepared into a feature cache with the default feature config, but clips that do
    not overlap."""
    from musicnas.data.cache import prepare
    from musicnas.data.features import FeatureConfig

    cache_dir = tmp_path_factory.mktemp("tiny_cache")
    # non-overlapping clips (hop = clip length) keep the suite fast; the default hop is 1 s
    return prepare(tiny_audio_dir, cache_dir, FeatureConfig(clip_hop_seconds=3.0), seed=0, workers=1)
