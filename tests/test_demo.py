"""The demo end to end at a tiny size: every stage runs, writes what the next one reads, and a rerun
reuses finished stages instead of redoing them."""

from __future__ import annotations

import json

from musicnas import runtime
from musicnas.demo import DemoSizes, run_demo


def test_demo_runs_every_stage_and_rerun_reuses_them(tmp_path):
    rt = runtime.setup("cpu", 1)
    sizes = DemoSizes(classes=3, tracks_per_class=4, seconds=6.0, search_epochs=1, train_epochs=1)
    first = run_demo(tmp_path / "demo", rt, seed=3, sizes=sizes)

    out = tmp_path / "demo"
    for path in (
        "audio/synth.json",
        "search/arch.json",
        "search/candidates.json",
        "model/model.safetensors",
        "model/evaluation.json",
        "report.html",
        "demo.json",
    ):
        assert (out / path).is_file(), path
    assert 0.0 <= first["test_clip_accuracy"] <= 1.0
    assert json.loads((out / "demo.json").read_text())["arch_flat"] == first["arch_flat"]
    assert first["logreg_floor"]["test"]["clips"] > 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html

    arch_before = (out / "search" / "arch.json").read_bytes()
    weights_before = (out / "model" / "model.safetensors").read_bytes()
    audio_mtimes = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.wav")}
    second = run_demo(out, rt, seed=3, sizes=sizes)
    assert (out / "search" / "arch.json").read_bytes() == arch_before
    assert (out / "model" / "model.safetensors").read_bytes() == weights_before
    assert second["test_clip_accuracy"] == first["test_clip_accuracy"]
    assert second["seconds"]["search"] < first["seconds"]["search"]
    # the demo music was reused, not composed again
    assert {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.wav")} == audio_mtimes
