"""The benchmark harness at tiny budgets: matched compute, seeds that matter, complete tables."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from musicnas.baselines.budget import parse_budget
from musicnas.baselines.harness import RUN_ORDER, run_benchmark
from musicnas.baselines.ranking import kendall_tau
from musicnas.baselines.table import MARKDOWN_HEADER, METHODS, TABLE_COLUMNS
from musicnas.runtime import MusicnasError, setup

# 12 train clips at batch size 4: 3 child steps per epoch; 2 random architectures x 2 epochs = 4 epochs
BUDGET = "tiny,batch_size=4,search_epochs=4,random_k=2"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks run fastest on one thread, and a second one only spins when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rt = setup("cpu", 1)
    report = run_benchmark(tiny_cache, out, parse_budget(BUDGET), [0, 1], rt, show_progress=False)
    return out, report, tiny_cache, rt


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def runs_of(report, method):
    return sorted((r for r in report["runs"] if r["method"] == method), key=lambda r: r["seed"])


def test_search_budgets_are_matched_in_child_steps(bench):
    out, report, cache, _ = bench
    budget = parse_budget(BUDGET)
    steps_per_epoch = len(cache.split_indices("train")) // budget.batch_size
    assert report["matched_compute"]["steps_per_epoch"] == steps_per_epoch == 3
    for method in ("enas", "random_ws", "random_retrained"):
        for run in runs_of(report, method):
            assert run["child_steps"]["search"] == budget.search_epochs * steps_per_epoch, method
            assert run["child_steps"]["retrain"] == budget.retrain_epochs * steps_per_epoch, method
    for run in runs_of(report, "hand_cnn"):
        assert run["child_steps"] == {"search": 0, "retrain": budget.retrain_epochs * steps_per_epoch,
                                      "total": budget.retrain_epochs * steps_per_epoch}  # fmt: skip
    # the search loops' own logs agree: one child row per step, and the same number of architectures
    # scored on validation batches by the (no-op) controller phase of random-WS as by ENAS
    for seed in (0, 1):
        counts = {}
        for method in ("enas", "random_ws"):
            rows = jsonl(out / f"seed_{seed}" / method / "search" / "metrics_steps.jsonl")
            counts[method] = (
                sum(r["phase"] == "child" for r in rows),
                sum(r["phase"] == "controller" for r in rows),
            )
        assert counts["enas"] == counts["random_ws"] == (budget.search_epochs * steps_per_epoch,
                                                         budget.search_epochs * budget.controller_updates)  # fmt: skip
        cands = json.loads((out / f"seed_{seed}" / "random_retrained" / "candidates.json").read_text())
        assert sum(c["epochs"] for c in cands["candidates"]) == budget.search_epochs


def test_random_ws_really_uses_the_uniform_controller(bench):
    out, *_ = bench
    config = json.loads((out / "seed_0" / "random_ws" / "search" / "config.json").read_text())
    assert config["controller"] == "uniform"
    assert "controller" not in json.loads((out / "seed_0" / "enas" / "search" / "config.json").read_text())
    probs = jsonl(out / "seed_0" / "random_ws" / "search" / "controller_probs.jsonl")
    assert all(p["uniform"] for p in probs)


def test_different_seeds_give_different_runs(bench):
    out, report, *_ = bench

    def child_losses(seed, method):
        path = out / f"seed_{seed}" / method / "search" / "metrics_steps.jsonl"
        return [r["loss"] for r in jsonl(path) if r["phase"] == "child"]

    for method in ("enas", "random_ws"):
        assert child_losses(0, method) != child_losses(1, method)
    cand = [
        [
            c["arch"]["flat"]
            for c in json.loads((out / f"seed_{s}" / "random_retrained" / "candidates.json").read_text())[
                "candidates"
            ]
        ]
        for s in (0, 1)
    ]
    assert cand[0] != cand[1]
    hand = [
        json.loads(
            (out / f"seed_{s}" / "hand_cnn" / "model" / "metrics_epochs.jsonl").read_text().splitlines()[0]
        )
        for s in (0, 1)
    ]
    assert hand[0]["train_loss"] != hand[1]["train_loss"]


def test_table_has_every_method_and_column(bench):
    out, report, *_ = bench
    data = json.loads((out / "benchmark.json").read_text())
    assert [row["method"] for row in data["rows"]] == list(METHODS)
    for row in data["rows"]:
        assert set(TABLE_COLUMNS) <= set(row)
        assert row["seeds"] == [0, 1]
        assert 0.0 <= row["clip_acc_mean"] <= 1.0 and row["clip_acc_std"] is not None
        assert row["total_time"] >= row["train_time"] + row["search_time"] - 1e-6
        if row["method"] != "logreg":
            assert row["params"] > 0 and row["macs"] > 0
    assert len(data["runs"]) == 2 * len(METHODS)
    md = (out / "benchmark.md").read_text()
    for header in MARKDOWN_HEADER:
        assert header in md
    for label in (row["label"] for row in data["rows"]):
        assert label in md


def test_ranking_json_pairs_shared_and_standalone_accuracy(bench):
    out, report, *_ = bench
    for seed in (0, 1):
        ranking = json.loads((out / f"seed_{seed}" / "ranking.json").read_text())
        cands = json.loads((out / f"seed_{seed}" / "random_retrained" / "candidates.json").read_text())[
            "candidates"
        ]
        assert ranking["standalone"] == [c["val_acc"] for c in cands]
        assert [a["flat"] for a in ranking["archs"]] == [c["arch"]["flat"] for c in cands]
        assert len(ranking["shared"]) == len(ranking["shared_random_ws"]) == len(cands)
        assert all(0.0 <= v <= 1.0 for v in ranking["shared"])
        assert (ranking["kendall_tau"], ranking["p_value"]) == kendall_tau(
            ranking["shared"], ranking["standalone"]
        )
    top = json.loads((out / "ranking.json").read_text())
    assert [r["seed"] for r in top["per_seed"]] == [0, 1]


def test_bundles_of_every_trained_model_load_and_predict(bench, tiny_audio_dir):
    import musicnas

    out, _, cache, _ = bench
    song = next(tiny_audio_dir.glob("low/*.wav"))
    for method in ("enas", "random_ws", "random_retrained", "hand_cnn"):
        clf = musicnas.load(out / "seed_0" / method / "model", device="cpu")
        prediction = clf.predict(song)
        assert prediction.label in cache.classes
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_finished_runs_are_reused_and_a_new_budget_reruns_what_depends_on_it(bench, tmp_path):
    original, report, cache, rt = bench
    out = tmp_path / "copy"  # leaves the shared benchmark as the other tests expect it
    shutil.copytree(original, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("seed_*/*/result.json")}
    ranking_stamps = {p: p.stat().st_mtime_ns for p in out.glob("seed_*/ranking.json")}
    again = run_benchmark(cache, out, parse_budget(BUDGET), [0, 1], rt, show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed_*/*/result.json")} == stamps
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed_*/ranking.json")} == ranking_stamps
    assert again["ranking"] == report["ranking"]
    assert again["rows"] == report["rows"]
    assert (report["reused_runs"], again["reused_runs"]) == (0, 2 * len(METHODS))
    assert again["runs_cpu_time"] == pytest.approx(report["runs_cpu_time"])
    # a new hand-CNN width reruns the hand CNN only
    other = parse_budget(BUDGET + ",cnn_channels=3")
    run_benchmark(
        cache, out, other, [0], rt, methods=["hand_cnn", "logreg"], ranking=False, show_progress=False
    )
    record = json.loads((out / "seed_0" / "hand_cnn" / "result.json").read_text())
    assert record["budget"]["cnn_channels"] == 3 and record["model"]["channels"] == 3
    changed = {p for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert changed == {out / "seed_0" / "hand_cnn" / "result.json"}


def test_bad_arguments_are_user_errors(tiny_cache, tmp_path):
    rt = setup("cpu", 1)
    with pytest.raises(MusicnasError, match="unknown benchmark method"):
        run_benchmark(tiny_cache, tmp_path, parse_budget("tiny"), [0], rt, methods=["enas", "bogus"])
    with pytest.raises(MusicnasError, match="distinct seeds"):
        run_benchmark(tiny_cache, tmp_path, parse_budget("tiny"), [0, 0], rt)
    assert RUN_ORDER[0] == "logreg"


def test_cli_writes_the_tables(tiny_audio_dir, tmp_path, capsys):
    from musicnas.cli import main

    out = tmp_path / "bench"
    main(["benchmark", "--data", str(tiny_audio_dir), "--cache", str(tmp_path / "cache"), "--seeds", "1",
          "--budget", "tiny", "--methods", "logreg,hand_cnn", "--out", str(out), "--device", "cpu",
          "--threads", "1"])  # fmt: skip
    data = json.loads((out / "benchmark.json").read_text())
    assert [r["method"] for r in data["rows"]] == ["hand_cnn", "logreg"]
    assert data["command"].startswith("musicnas benchmark --data ")
    assert "--methods logreg,hand_cnn" in data["command"]
    assert "Hand CNN" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--data", str(tiny_audio_dir), "--methods", "enas,nope", "--out", str(out)])
    assert exc.value.code == 2
    assert os.path.isfile(out / "benchmark.md")
