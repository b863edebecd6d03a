"""``musicnas search`` end to end on the tiny tone cache: config file, CLI overrides, resume, errors."""

from __future__ import annotations

import json

import torch

from conftest import run_cli

torch.set_num_threads(1)

TINY = {
    "space_options": {"num_layers": 2, "channels": 4, "num_branches": 4},
    "batch_size": 4,
    "controller_archs_per_update": 2,
    "controller_updates_per_epoch": 1,
    "derive_samples": 3,
    "derive_batches": 1,
    "derive_top_k": 2,
    "keep_seen": 1,
    "tensorboard": False,
}


def test_search_cli_runs_resumes_and_extends(tiny_cache, tmp_path, capsys):
    config = tmp_path / "search.json"
    config.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    common = ["--device", "cpu", "--threads", "1"]
    code, out, err = run_cli(
        ["search", "--data", str(tiny_cache.root), "--config", str(config), "--epochs", "1", "--seed", "4",
         "--out", str(run), *common],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "arch.json" in out
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["search"]["epochs"] == 1 and recorded["search"]["seed"] == 4
    assert recorded["space"] == {"type": "macro", "num_layers": 2, "num_branches": 4, "whole_channels": True,
                                 "channels": 4, "stem_stride": 2}  # fmt: skip
    assert recorded["data"]["classes"] == tiny_cache.classes
    arch = json.loads((run / "arch.json").read_text())
    assert arch["format"] == "musicnas-arch" and len(arch["flat"]) == 2 + 1

    # a finished run can be extended: --resume with more epochs continues from the last checkpoint
    code, out, err = run_cli(["search", "--resume", str(run), "--epochs", "2", *common], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics_epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]


def test_search_cli_errors_are_clear(tiny_cache, tmp_path, capsys):
    code, _, err = run_cli(["search", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--data PATH is required" in err
    code, _, err = run_cli(
        ["search", "--data", str(tiny_cache.root), "--reward", "tunas", "--out", str(tmp_path)], capsys
    )
    assert code == 2 and "cost target" in err
    code, _, err = run_cli(
        ["search", "--data", str(tiny_cache.root), "--space", "macro", "--cells", "3"], capsys
    )
    assert code == 2 and "--cells" in err
    code, _, err = run_cli(["search", "--resume", str(tmp_path / "missing")], capsys)
    assert code == 2 and "config.json" in err


def test_library_run_can_be_resumed_from_the_cli(tiny_cache, tmp_path, capsys):
    """run_search(config, cache) records the cache folder, so --resume needs no --data."""
    from musicnas import runtime
    from musicnas.search.config import SearchConfig
    from musicnas.search.enas import run_search

    run = tmp_path / "run"
    config = SearchConfig(**{**TINY, "epochs": 2, "max_steps": 1})
    result = run_search(config, tiny_cache, run, runtime.Runtime(torch.device("cpu"), 1))
    assert result["stopped"]
    code, out, err = run_cli(["search", "--resume", str(run), "--device", "cpu", "--threads", "1"], capsys)
    assert code == 0, err
    assert (run / "arch.json").exists()
    rows = (run / "metrics_epochs.jsonl").read_text().splitlines()
    assert len(rows) == 2
