"""``musicnas benchmark --shard I/N`` and ``--merge DIR...``: shards then merge give the unsharded table."""

from __future__ import annotations

import json
import re

import pytest

from musicnas.baselines.harness import RUN_ORDER, parse_shard, shard_jobs
from musicnas.cli import main
from musicnas.runtime import MusicnasError

TIMES = ("search_time", "train_time", "total_time", "cpu_time")


def _table(out):
    """benchmark.json's rows and ranking without wall/CPU times (they differ between any two runs)."""
    report = json.loads((out / "benchmark.json").read_text())
    rows = [{k: v for k, v in row.items() if k not in TIMES} for row in report["rows"]]
    return rows, report["ranking"]["per_seed"], report["matched_compute"], report["seeds"], report["methods"]


def _bench(cache, out, *extra):
    main(["benchmark", "--data", str(cache.root), "--budget", "tiny", "--out", str(out), "--device", "cpu",
          "--threads", "1", *extra])  # fmt: skip


def test_shards_partition_the_runs():
    jobs = [(seed, method) for seed in (0, 1, 2) for method in RUN_ORDER]
    for n in range(1, 6):
        parts = [shard_jobs(jobs, (i, n)) for i in range(1, n + 1)]
        assert sorted(job for part in parts for job in part) == sorted(jobs)  # every run once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard_jobs(jobs, None) == jobs
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(MusicnasError, match="expected I/N"):
            parse_shard(bad)


def _merge_fails(capsys, cache, dirs, out, match):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--data", str(cache.root), *(a for d in dirs for a in ("--merge", str(d))),
              "--out", str(out)])  # fmt: skip
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err), match


def test_merge_refuses_incomplete_or_mismatched_shards(tiny_cache, tmp_path, capsys):
    _bench(tiny_cache, tmp_path / "s1", "--seeds", "2", "--methods", "logreg", "--shard", "1/2")
    _bench(tiny_cache, tmp_path / "s2", "--seeds", "3", "--methods", "logreg", "--shard", "2/2")
    assert json.loads((tmp_path / "s1" / "shard.json").read_text())["jobs"] == [[0, "logreg"]]
    assert not (tmp_path / "s1" / "benchmark.json").exists()
    out = tmp_path / "merged"
    _merge_fails(capsys, tiny_cache, [tmp_path / "s1"], out, "each of the shards 1..2 once")
    _merge_fails(capsys, tiny_cache, [tmp_path / "s1", tmp_path / "s1"], out, r"got \[1, 1\]")
    _merge_fails(capsys, tiny_cache, [tmp_path / "s1", tmp_path / "s2"], out, "differs .* in seeds")
    _merge_fails(capsys, tiny_cache, [tmp_path / "nothing"], out, "shard manifest not found")
    assert not (out / "benchmark.json").exists()


def test_sharded_tiny_benchmark_merges_to_the_unsharded_table(tiny_cache, tmp_path):
    """Every method and the ranking study at the tiny budget (about 2 x an unsharded run: ~12 s here);
    the ranking's inputs (enas, random_retrained) land on different shards."""
    _bench(tiny_cache, tmp_path / "whole", "--seeds", "1")
    _bench(tiny_cache, tmp_path / "s1", "--seeds", "1", "--shard", "1/2")
    _bench(tiny_cache, tmp_path / "s2", "--seeds", "1", "--shard", "2/2")
    held = [json.loads((tmp_path / s / "shard.json").read_text())["jobs"] for s in ("s1", "s2")]
    assert held == [
        [[0, "logreg"], [0, "enas"], [0, "random_retrained"]],
        [[0, "hand_cnn"], [0, "random_ws"]],
    ]
    main(["benchmark", "--data", str(tiny_cache.root), "--merge", str(tmp_path / "s1"), "--merge",
          str(tmp_path / "s2"), "--out", str(tmp_path / "s1"), "--device", "cpu"])  # fmt: skip
    rows, ranking, *_ = _table(tmp_path / "s1")
    assert {r["method"] for r in rows} == set(RUN_ORDER) and ranking and ranking[0]["n"] == 2
    assert _table(tmp_path / "s1") == _table(tmp_path / "whole")
    assert (tmp_path / "s1" / "benchmark.md").read_text().count("|") > 20
