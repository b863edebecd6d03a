"""The train -> evaluate -> export command flow on the tiny cache."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import reseal_bundle
from musicnas.cli import cli
from musicnas.spaces.macro import MacroSpace


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one torch thread beats two that contend for a busy 2-core machine (5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _json_in(output: str):
    """The JSON document in a command's output (log lines may come before or after it)."""
    return json.JSONDecoder().raw_decode(output[output.index("{") :])[0]


@pytest.fixture(scope="module")
def trained(tiny_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    arch_path = root / "arch.json"
    arch_path.write_text(json.dumps(MacroSpace(num_layers=2, num_branches=6, channels=4).sample(4).to_json()))
    out = root / "model"
    args = ["train", "--arch", str(arch_path), "--data", str(tiny_cache.root), "--out", str(out)]
    args += ["--epochs", "2", "--batch-size", "4", "--channels", "4", "--device", "cpu", "--threads", "1"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return out, res.output


def test_train_writes_the_bundle_layout(trained):
    out, output = trained
    assert "kept epoch" in output and "Model bundle" in output
    for name in ("model.safetensors", "arch.json", "bundle.json", "summary.json", "metrics_epochs.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "last.pt").is_file()
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["format"] == "musicnas-bundle" and meta["model"]["type"] == "macro"
    assert meta["model"]["channels"] == 4 and meta["classes"] == ["high", "low", "mid"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["config"]["batch_size"] == 4


def test_resume_of_a_finished_run_and_mismatched_options(trained):
    out, _ = trained
    res = CliRunner().invoke(cli, ["train", "--resume", str(out), "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        cli, ["train", "--resume", str(out), "--lr", "0.3", "--device", "cpu", "--threads", "1"]
    )
    assert res.exit_code != 0 and "different settings" in str(res.exception)


def test_train_needs_arch_data_out(tmp_path):
    res = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "m")])
    assert res.exit_code != 0 and "--arch, --data and --out are required" in str(res.exception)


def test_evaluate_writes_metrics_and_confusion(trained, tiny_cache):
    out, _ = trained
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(out),
            "--data",
            str(tiny_cache.root),
            "--split",
            "val",
            "--json",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = _json_in(res.output)
    saved = json.loads((out / "evaluation.json").read_text())
    assert metrics["clip_accuracy"] == saved["clip_accuracy"] and saved["split"] == "val"
    n = len(tiny_cache.split_indices("val"))
    assert sum(map(sum, saved["confusion_matrix"])) == n == saved["clips"]
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(
        cli, ["evaluate", "--model", str(out), "--data", str(tiny_cache.root), "--threads", "1"]
    )
    assert res.exit_code == 0 and "macro-F1" in res.output and "confusion matrix" in res.output


def test_export_cli_reports_the_difference(trained, tmp_path):
    out, _ = trained
    res = CliRunner().invoke(
        cli, ["export", "--model", str(out), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--json"]
    )
    assert res.exit_code == 0, res.output
    report = _json_in(res.output)
    assert report["max_abs_diff"] <= report["tolerance"] and (tmp_path / "m.onnx").is_file()


def test_evaluate_refuses_a_cache_with_other_feature_options(trained, tiny_cache, tmp_path):
    import shutil

    out, _ = trained
    other = tmp_path / "other"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("evaluation.json", "confusion.png"))
    meta = json.loads((other / "bundle.json").read_text())
    meta["features"]["clip_hop_seconds"] = 1.5
    (other / "bundle.json").write_text(json.dumps(meta))
    reseal_bundle(other)  # a consistent bundle trained with other options
    res = CliRunner().invoke(
        cli, ["evaluate", "--model", str(other), "--data", str(tiny_cache.root), "--threads", "1"]
    )
    assert res.exit_code != 0 and "other feature options" in str(res.exception)
    assert not (other / "evaluation.json").exists()
