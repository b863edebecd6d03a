"""Prediction on files: bounded memory on long files, CLI output."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from torch import nn

import musicnas
from musicnas.cli import cli
from musicnas.data.features import FeatureConfig
from musicnas.export.bundle import save_bundle
from musicnas.models import ModelSpec, build_model, register_model_type

CONFIG = FeatureConfig(clip_hop_seconds=3.0)  # non-overlapping clips: the counts below assume them


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one torch thread beats two that contend for a busy 2-core machine (5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@register_model_type("test_predict_pool_linear")
def _build_pool_linear(arch, in_channels, num_classes, channels=None, dropout=0.0, **kwargs):
    # memory use and aggregation do not depend on the network: the cheapest one keeps the test fast
    return nn.Sequential(nn.AdaptiveAvgPool2d((4, 1)), nn.Flatten(), nn.Linear(4 * in_channels, num_classes))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    spec = ModelSpec.for_type("test_predict_pool_linear", in_channels=1, num_classes=3)
    out = tmp_path_factory.mktemp("predict") / "model"
    mean, std = np.full(64, -50.0), np.full(64, 12.0)
    save_bundle(out, build_model(spec), None, CONFIG, ["a", "b", "c"], mean, std, model_spec=spec)
    return out


def _write_long_wav(path, seconds, sr=16000):
    """Writes a tone in one-minute pieces, so the test itself never holds the whole file either."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        for start in range(0, int(seconds), 60):
            n = int(min(60, seconds - start) * sr)
            t = (np.arange(n) + start * sr) / sr
            piece = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(n)
            f.write(np.stack([piece, piece], axis=1).astype(np.float32))
    return path


def _peak_python_memory(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_memory_does_not_grow_with_file_length(bundle, tmp_path):
    clf = musicnas.load(bundle, device="cpu")
    clf.batch_size = 8  # both files fill whole batches: what is left to grow is what depends on length
    short = _write_long_wav(tmp_path / "short.wav", 60)
    long = _write_long_wav(tmp_path / "long.wav", 600)  # 10 minutes, stereo
    clf.predict(short)  # warm-up: first-call allocations of torch/numpy are not the file's
    short_pred, short_peak = _peak_python_memory(lambda: clf.predict(short))
    long_pred, long_peak = _peak_python_memory(lambda: clf.predict(long))
    assert short_pred.num_clips == 20 and long_pred.num_clips == 200
    decoded_bytes = 600 * 16000 * 4  # the whole file as mono float32
    print(f"peak traced memory: 1 min {short_peak / 2**20:.2f} MiB, 10 min {long_peak / 2**20:.2f} MiB")
    assert long_peak < 1.5 * short_peak + 2**20  # 10x the audio, about the same memory
    assert long_peak < decoded_bytes / 4
    # a stationary tone: the long file's mean prediction is the short one's
    assert long_pred.probabilities == pytest.approx(short_pred.probabilities, abs=1e-3)


def test_predict_cli_prints_top_k_and_json(bundle, tmp_path):
    wav = _write_long_wav(tmp_path / "a.wav", 7)
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["predict", "--model", str(bundle), "--top-k", "2", "--device", "cpu", "--threads", "1", str(wav)],
    )
    assert res.exit_code == 0, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(str(wav)) and "(2 clips)" in line and line.count(",") == 1
    res = runner.invoke(
        cli, ["predict", "--model", str(bundle), "--json", "--device", "cpu", "--threads", "1", str(wav)]
    )
    assert res.exit_code == 0, res.output
    obj = json.loads(res.output.strip().splitlines()[-1])
    assert obj["clips"] == 2 and len(obj["top"]) == 3
    assert obj["aggregation"].startswith("mean of clip logits")
    assert sum(obj["probabilities"].values()) == pytest.approx(1.0)


def test_predict_cli_reports_bad_files_and_continues(bundle, tmp_path):
    good = _write_long_wav(tmp_path / "good.wav", 4)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not audio at all")
    res = CliRunner().invoke(
        cli, ["predict", "--model", str(bundle), "--json", "--threads", "1", str(bad), str(good)]
    )
    assert res.exit_code != 0
    rows = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert "error" in rows[0] and rows[1]["clips"] == 1


def test_predict_json_gives_the_hugging_face_form(bundle, tmp_path):
    """`--json` carries the HF audio-classification list; `--json --hf` prints only it, top-k best first."""
    wav = _write_long_wav(tmp_path / "a.wav", 4)
    runner = CliRunner()
    base = ["predict", "--model", str(bundle), "--top-k", "2", "--device", "cpu", "--threads", "1"]
    res = runner.invoke(cli, [*base, "--json", str(wav)])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.output.strip().splitlines()[-1])
    assert obj["predictions"] == [{"label": t["label"], "score": t["probability"]} for t in obj["top"]]
    res = runner.invoke(cli, [*base, "--json", "--hf", str(wav)])
    assert res.exit_code == 0, res.output
    hf = json.loads(res.output.strip().splitlines()[-1])
    assert hf == obj["predictions"] and [set(d) for d in hf] == [{"label", "score"}] * 2
    assert hf[0]["score"] >= hf[1]["score"] and hf[0]["label"] == obj["label"]
    res = runner.invoke(cli, [*base, "--hf", str(wav)])
    assert res.exit_code != 0 and "add --json" in str(res.exception)
