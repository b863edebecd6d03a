"""The benchmark: was the search worth it, on the user's own data?

For every seed it runs, with the compute budget of :mod:`musicnas.baselines.budget`:

* ``enas``              ENAS search (``run_search``) -> chosen architecture retrained from scratch;
* ``random_ws``         the same loop with a uniform controller -> chosen architecture retrained;
* ``random_retrained``  k uniform architectures trained briefly from scratch, best by validation,
                        retrained like the others;
* ``hand_cnn``          Won et al.'s short-chunk residual CNN, trained with the same training config;
* ``logreg``            log-mel statistics + logistic regression (the floor);

then the ranking study (shared-weight vs stand-alone accuracy of the k random architectures, Kendall
tau), and writes ``OUT/benchmark.json``, ``OUT/benchmark.md``, ``OUT/ranking.json`` and one folder per
(seed, method) with that run's search directory and model bundle.

Each finished run leaves ``result.json`` in its folder; running the benchmark again into the same
``OUT`` with the same data and budget reuses finished runs and redoes unfinished ones, so an interrupted
benchmark continues where it stopped.

Sharding (``--shard I/N``, :func:`shard_jobs`): shard I runs every N-th (seed, method) run, starting with
the I-th, into its own ``OUT`` and writes ``shard.json`` instead of the tables; :func:`merge_benchmark`
(``--merge DIR...``) checks that the N shards fit together, runs the ranking study on their finished runs
and writes the same tables one unsharded run would (up to wall times).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from musicnas.baselines.budget import Budget
from musicnas.baselines.table import METHODS, paired_comparisons, render_report, summarise
from musicnas.runtime import MusicnasError, Runtime, derive_seed, make_generator
from musicnas.utils.io import atomic_write_json, atomic_write_text, read_json
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)

BENCHMARK_FORMAT = "musicnas-benchmark"
BENCHMARK_VERSION = 1
SHARD_FORMAT = "musicnas-benchmark-shard"
SHARD_VERSION = 1
SHARD_FILE = "shard.json"
RESULT_FILE = "result.json"
SEARCH_METHODS = ("enas", "random_ws", "random_retrained")
# cheap methods first, so a stopped benchmark has the floor and the hand CNN for every seed
RUN_ORDER = ("logreg", "hand_cnn", "enas", "random_ws", "random_retrained")
# the budget settings each method's result depends on: a finished run is reused when these (and the
# data) are unchanged, so e.g. a new hand-CNN width reruns only the hand CNN
_SPACE_KEYS = ("space", "num_layers", "channels", "num_branches", "stem_stride")
METHOD_BUDGET_KEYS: dict[str, tuple[str, ...]] = {
    "logreg": (),
    "hand_cnn": ("retrain_epochs", "batch_size", "cnn_channels", "cnn_blocks"),
    "enas": (
        "search_epochs",
        "retrain_epochs",
        "batch_size",
        "derive_samples",
        "controller_updates",
        "controller_archs",
        *_SPACE_KEYS,
    ),  # fmt: skip
    "random_ws": (
        "search_epochs",
        "retrain_epochs",
        "batch_size",
        "derive_samples",
        "controller_updates",
        "controller_archs",
        *_SPACE_KEYS,
    ),  # fmt: skip
    "random_retrained": ("search_epochs", "retrain_epochs", "batch_size", "random_k", *_SPACE_KEYS),
}


@dataclass
class Bench:
    """What every method of one benchmark shares."""

    data: object  # FeatureCache
    budget: Budget
    rt: Runtime
    out: Path
    data_path: str | None = None

    @property
    def train_clips(self) -> int:
        return int(len(self.data.split_indices("train")))

    def steps_per_epoch(self) -> int:
        """Child training steps in one epoch; the ENAS loop and the trainer both use whole batches only
        (``len(train) // batch_size``, or one batch when the split is smaller than a batch)."""
        n = self.train_clips
        return max(1, n // min(self.budget.batch_size, n))


# ---------------------------------------------------------------------------------------------------
# configurations shared by the methods


def space_options(budget: Budget) -> dict:
    """The budget's space as Space fields, through the space's own CLI-option mapping: ``num_layers`` is
    the macro space's layers and the micro space's normal cells per stage."""
    from musicnas.spaces import get_space_module

    if budget.space == "macro":
        options = {"layers": budget.num_layers, "channels": budget.channels, "branches": budget.num_branches,
                   "whole_channels": True, "stem_stride": budget.stem_stride}  # fmt: skip
    elif budget.space == "micro":
        options = {"cells": budget.num_layers, "channels": budget.channels}
    else:
        raise MusicnasError(f"unknown search space {budget.space!r} in the budget: use macro or micro")
    space_cls = get_space_module(budget.space).Space
    return {space_cls.OPTIONS[k]: v for k, v in options.items()}


def make_space(budget: Budget):
    from musicnas.spaces import get_space_module

    return get_space_module(budget.space).Space.from_dict({"type": budget.space, **space_options(budget)})


def search_config(bench: Bench, seed: int):
    """The ENAS search configuration of the budget (the ``cpu`` preset otherwise)."""
    from musicnas.search.config import resolve_config

    b = bench.budget
    overrides = {
        "seed": int(seed),
        "epochs": b.search_epochs,
        "batch_size": b.batch_size,
        "space_options": space_options(b),
        "derive_samples": b.derive_samples,
        "controller_updates_per_epoch": b.controller_updates,
        "controller_archs_per_update": b.controller_archs,
        "tensorboard": False,
        "data": bench.data_path,
    }
    config = resolve_config("cpu", space=b.space, overrides=overrides)
    # replace, not merge: the preset's space options belong to the preset's own space size
    config.space_options = space_options(b)
    return config.validate()


def train_config(bench: Bench, epochs: int):
    """The one training configuration: the final retrain of every searched architecture, the hand CNN,
    and (with fewer epochs) the random architectures. No early stopping, so every run spends exactly its
    budget of steps."""
    from musicnas.training.trainer import TrainConfig

    return TrainConfig(epochs=int(epochs), batch_size=bench.budget.batch_size, patience=0)


# ---------------------------------------------------------------------------------------------------
# the methods; each returns the run's record (see `make_record`)


def make_record(
    method: str,
    seed: int,
    summary: dict | None,
    *,
    search_time: float,
    train_time: float,
    search_steps: int,
    retrain_steps: int,
    arch: dict | None = None,
    **extra,
) -> dict:
    test = (summary or {}).get("test") or {}
    val = (summary or {}).get("val") or {}
    cost = (summary or {}).get("cost") or {}
    return {
        "method": method,
        "seed": int(seed),
        "clip_acc": test.get("clip_accuracy"),
        "file_acc": test.get("file_accuracy"),
        "track_acc": test.get("track_accuracy"),
        "val_clip_acc": val.get("clip_accuracy"),
        "val_file_acc": val.get("file_accuracy"),
        "val_track_acc": val.get("track_accuracy"),
        "params": cost.get("params"),
        "macs": cost.get("macs"),
        "search_time": float(search_time),
        "train_time": float(train_time),
        "child_steps": {
            "search": int(search_steps),
            "retrain": int(retrain_steps),
            "total": int(search_steps + retrain_steps),
        },
        "arch": arch,
        **extra,
    }


def _retrain(bench: Bench, arch, seed: int, out_dir: Path, epochs: int) -> tuple[dict, float]:
    from musicnas.retrain import train_arch

    t0 = time.perf_counter()
    summary = train_arch(
        arch, bench.data, out_dir, train_config(bench, epochs), bench.rt, seed=seed, show_progress=False
    )
    return summary, time.perf_counter() - t0


def _search_child_steps(run_dir: Path) -> int:
    """Child (shared-weight) training steps a search run actually took, from its metrics file."""
    count = 0
    with open(run_dir / "metrics_steps.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and json.loads(line).get("phase") == "child":
                count += 1
    return count


def run_weight_sharing(bench: Bench, seed: int, run_dir: Path, uniform: bool) -> dict:
    """ENAS (``uniform=False``) or random search with weight sharing: search, derive, retrain."""
    from musicnas.search.enas import run_search
    from musicnas.search.random_search import run_uniform_search
    from musicnas.spaces import load_arch

    config = search_config(bench, seed)
    t0 = time.perf_counter()
    runner = run_uniform_search if uniform else run_search
    result = runner(config, bench.data, run_dir / "search", bench.rt)
    search_time = time.perf_counter() - t0
    arch = load_arch(result["arch"])
    summary, train_time = _retrain(bench, arch, seed, run_dir / "model", bench.budget.retrain_epochs)
    return make_record(
        "random_ws" if uniform else "enas",
        seed,
        summary,
        search_time=search_time,
        train_time=train_time,
        search_steps=_search_child_steps(run_dir / "search"),
        retrain_steps=summary["epochs_run"] * bench.steps_per_epoch(),
        arch=arch.to_json(),
        search_score=result.get("score"),
        search_run=str(run_dir / "search"),
        model_dir=str(run_dir / "model"),
    )


def run_random_retrained(bench: Bench, seed: int, run_dir: Path) -> dict:
    """k distinct uniform architectures, each trained from scratch for ``search_epochs // k`` epochs with
    the run's training seed (so they differ only by architecture); the best by validation clip accuracy
    (first on ties) is retrained for ``retrain_epochs`` like the searched ones."""
    from musicnas.search.random_search import sample_distinct_archs

    b = bench.budget
    archs = sample_distinct_archs(
        make_space(b), b.random_k, make_generator(derive_seed(seed, "benchmark.random_archs"))
    )
    candidates = []
    search_time = 0.0
    search_steps = 0
    for i, arch in enumerate(archs):
        summary, seconds = _retrain(bench, arch, seed, run_dir / "candidates" / f"{i:02d}", b.random_epochs)
        search_time += seconds
        search_steps += summary["epochs_run"] * bench.steps_per_epoch()
        candidates.append(
            {
                "arch": arch.to_json(),
                "val_acc": summary["val"]["clip_accuracy"],
                "test_acc": (summary.get("test") or {}).get("clip_accuracy"),
                "epochs": summary["epochs_run"],
                "train_time": seconds,
                "cost": summary.get("cost"),
            }
        )
    atomic_write_json(run_dir / "candidates.json", {"epochs_each": b.random_epochs, "candidates": candidates})
    best = max(range(len(archs)), key=lambda i: (candidates[i]["val_acc"], -i))
    summary, train_time = _retrain(bench, archs[best], seed, run_dir / "model", b.retrain_epochs)
    return make_record(
        "random_retrained",
        seed,
        summary,
        search_time=search_time,
        train_time=train_time,
        search_steps=search_steps,
        retrain_steps=summary["epochs_run"] * bench.steps_per_epoch(),
        arch=archs[best].to_json(),
        chosen_candidate=best,
        model_dir=str(run_dir / "model"),
    )


def run_hand_cnn(bench: Bench, seed: int, run_dir: Path) -> dict:
    from musicnas.baselines.cnn import ShortChunkResCNN
    from musicnas.retrain import train_bundle

    b = bench.budget
    torch.manual_seed(seed)  # weight initialisation, as train_arch does for searched networks
    model = ShortChunkResCNN(
        in_channels=int(bench.data.input_shape[0]),
        num_classes=int(bench.data.num_classes),
        channels=b.cnn_channels,
        num_blocks=b.cnn_blocks,
    )
    t0 = time.perf_counter()
    summary = train_bundle(
        model,
        bench.data,
        run_dir / "model",
        train_config(bench, b.retrain_epochs),
        bench.rt,
        seed=seed,
        model_spec=model.model_spec(),
        show_progress=False,
    )
    train_time = time.perf_counter() - t0
    return make_record(
        "hand_cnn",
        seed,
        summary,
        search_time=0.0,
        train_time=train_time,
        search_steps=0,
        retrain_steps=summary["epochs_run"] * bench.steps_per_epoch(),
        model=model.config(),
        model_dir=str(run_dir / "model"),
    )


def run_logreg(bench: Bench, seed: int, run_dir: Path) -> dict:
    from musicnas.baselines.logreg import logmel_stats_logreg

    t0 = time.perf_counter()
    result = logmel_stats_logreg(bench.data, seed)
    train_time = time.perf_counter() - t0
    atomic_write_json(run_dir / "logreg.json", result)
    k = int(bench.data.num_classes)
    features = int(result.get("features", 2 * bench.data.config.n_mels))
    test = result.get("test") or {}
    val = result.get("val") or {}
    record = make_record(
        "logreg", seed, None, search_time=0.0, train_time=train_time, search_steps=0, retrain_steps=0
    )
    record.update(
        clip_acc=test.get("clip_acc"),
        file_acc=test.get("file_acc"),
        track_acc=test.get("track_acc"),
        val_clip_acc=val.get("clip_acc"),
        val_file_acc=val.get("file_acc"),
        val_track_acc=val.get("track_acc"),
        params=(features + 1) * k,  # weights and intercepts
        macs=features * k,  # the linear layer; the statistics are not counted
    )
    return record


METHOD_RUNNERS: dict[str, Callable[[Bench, int, Path], dict]] = {
    "logreg": run_logreg,
    "hand_cnn": run_hand_cnn,
    "enas": lambda bench, seed, run_dir: run_weight_sharing(bench, seed, run_dir, uniform=False),
    "random_ws": lambda bench, seed, run_dir: run_weight_sharing(bench, seed, run_dir, uniform=True),
    "random_retrained": run_random_retrained,
}


# ---------------------------------------------------------------------------------------------------
# ranking study


def ranking_for_seed(bench: Bench, seed_dir: Path, run_dirs: dict[str, Path] | None = None) -> dict | None:
    """Shared-weight vs stand-alone accuracy of the random-retrained architectures of one seed, written
    to ``seed_dir/ranking.json``. ``run_dirs`` maps a method to its run folder (default
    ``seed_dir/METHOD``; a merge of shards finds them in the shards' folders).

    Stand-alone: their validation accuracy after the short from-scratch training. Shared weights: their
    accuracy on the whole validation split with the ENAS search network's final weights (``shared``,
    the figure that matters for ENAS's choice) and, when available, with the uniformly trained
    search network of random-WS (``shared_random_ws``, the setting of Yu et al.)."""
    from musicnas.baselines.ranking import ranking_result, write_ranking
    from musicnas.baselines.shared_scoring import shared_weight_accuracies
    from musicnas.spaces import load_arch

    run_dirs = {m: (run_dirs or {}).get(m, seed_dir / m) for m in SEARCH_METHODS}
    cand_file = run_dirs["random_retrained"] / "candidates.json"
    enas_run = run_dirs["enas"] / "search"
    if not cand_file.is_file() or not (enas_run / "checkpoints" / "last.pt").is_file():
        return None
    # the study depends only on these finished runs: reuse it while they are unchanged
    inputs = _fingerprint(
        [
            cand_file,
            run_dirs["enas"] / RESULT_FILE,
            run_dirs["random_ws"] / RESULT_FILE,
            str(bench.data.root),
        ]
    )
    previous = seed_dir / "ranking.json"
    if previous.is_file():
        with contextlib.suppress(MusicnasError):
            saved = read_json(previous, "ranking")
            if isinstance(saved, dict) and saved.get("inputs") == inputs:
                return saved
    random_run = read_json(cand_file, "random architectures")
    candidates = random_run["candidates"]
    archs = [load_arch(c["arch"]) for c in candidates]
    standalone = [c["val_acc"] for c in candidates]
    shared = shared_weight_accuracies(enas_run, archs, bench.data, bench.rt)
    extra: dict = {
        "standalone_measure": "validation clip accuracy after training from scratch for "
        f"{random_run['epochs_each']} epoch(s)",
        "shared_measure": "validation clip accuracy with the ENAS search network's shared weights",
    }
    ws_run = run_dirs["random_ws"] / "search"
    if (ws_run / "checkpoints" / "last.pt").is_file():
        from musicnas.baselines.ranking import kendall_tau

        shared_ws = shared_weight_accuracies(ws_run, archs, bench.data, bench.rt)
        tau_ws, p_ws = kendall_tau(shared_ws, standalone)
        extra.update(shared_random_ws=shared_ws, kendall_tau_random_ws=tau_ws, p_value_random_ws=p_ws)
    result = ranking_result(shared, standalone, [a.to_json() for a in archs], inputs=inputs, **extra)
    seed_dir.mkdir(parents=True, exist_ok=True)
    write_ranking(seed_dir / "ranking.json", result)
    return result


def _fingerprint(items: list) -> str:
    """A hash of files' bytes (a missing file counts as absent) and strings."""
    digest = hashlib.sha256()
    for item in items:
        if isinstance(item, Path):
            digest.update(item.read_bytes() if item.is_file() else b"<absent>")
        else:
            digest.update(str(item).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# the benchmark


def _reusable(path: Path, method: str, budget: Budget, data_root: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        record = read_json(path, "benchmark run result")
    except MusicnasError:
        return None
    saved = record.get("budget")
    now = budget.to_dict()
    if not isinstance(saved, dict) or record.get("data_root") != data_root:
        return None
    if any(saved.get(key) != now[key] for key in METHOD_BUDGET_KEYS[method]):
        return None
    record["budget"] = now  # settings this method does not depend on may have changed
    return record


def run_one(bench: Bench, method: str, seed: int) -> dict:
    """Runs (or reuses) one (method, seed) into ``OUT/seed_S/METHOD``."""
    run_dir = bench.out / f"seed_{seed}" / method
    data_root = str(bench.data.root)
    done = _reusable(run_dir / RESULT_FILE, method, bench.budget, data_root)
    if done is not None:
        log.info("reusing finished run %s", run_dir)
        return {**done, "reused": True}
    if run_dir.exists():  # an unfinished or outdated run of this benchmark: start it again
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    record = METHOD_RUNNERS[method](bench, seed, run_dir)
    record["total_time"] = time.perf_counter() - t0
    # CPU seconds of this process (all threads): less sensitive than wall time to other processes
    # sharing the machine, which the wall-clock columns cannot tell apart from slow methods
    record["cpu_time"] = time.process_time() - cpu0
    record["budget"] = bench.budget.to_dict()
    record["data_root"] = data_root
    atomic_write_json(run_dir / RESULT_FILE, record)
    return record


def _check_methods(methods: Sequence[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHOD_RUNNERS]
    if unknown:
        raise MusicnasError(
            f"unknown benchmark method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}"
        )
    return [m for m in RUN_ORDER if m in methods]


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N."""
    index, sep, count = str(spec).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or not 1 <= i <= n:
        raise MusicnasError(f"--shard {spec!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
    return i, n


def shard_jobs(jobs: Sequence[tuple[int, str]], shard: tuple[int, int] | None) -> list[tuple[int, str]]:
    """The (seed, method) runs of shard ``(I, N)``: every N-th, starting with the I-th (all without a
    shard). Round robin over the seed-major order spreads every method over the shards."""
    if shard is None:
        return list(jobs)
    i, n = shard
    return [job for k, job in enumerate(jobs) if k % n == i - 1]


def run_benchmark(
    data,
    out_dir,
    budget: Budget,
    seeds: Sequence[int],
    rt: Runtime,
    methods: Sequence[str] = RUN_ORDER,
    ranking: bool = True,
    data_path: str | None = None,
    command: str | None = None,
    show_progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Runs every (method, seed), the ranking study, and writes the tables. Returns benchmark.json's
    object. With ``shard=(I, N)`` only that shard's runs, and ``OUT/shard.json`` (its object returned)
    in place of the tables: :func:`merge_benchmark` makes them from all N shards."""
    methods = _check_methods(methods)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise MusicnasError(f"the benchmark needs one or more distinct seeds, got {seeds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_space(budget)  # a bad space budget fails before any work
    bench = Bench(data=data, budget=budget, rt=rt, out=out, data_path=data_path)
    t0, cpu0 = time.perf_counter(), time.process_time()
    runs: list[dict] = []
    all_jobs = [(seed, method) for seed in seeds for method in methods]
    jobs = shard_jobs(all_jobs, shard)
    bar = progress(jobs, desc="benchmark", unit="run", leave=True, disable=not show_progress)
    reused = 0
    for seed, method in bar:
        bar.set_postfix_str(f"seed {seed} {method}")
        record = run_one(bench, method, seed)
        reused += bool(record.pop("reused", False))
        runs.append(record)
    if shard is not None:
        manifest = {
            "format": SHARD_FORMAT,
            "version": SHARD_VERSION,
            "shard": list(shard),
            "seeds": seeds,
            "methods": methods,
            "jobs": [list(job) for job in jobs],
            "budget": budget.to_dict(),
            "data_root": str(data.root),
            "data_path": data_path,
            "ranking": bool(ranking),
            "command": command,
            "wall_time": time.perf_counter() - t0,
            "cpu_time": time.process_time() - cpu0,
            "reused_runs": reused,
        }
        atomic_write_json(out / SHARD_FILE, manifest)
        return manifest
    return _write_report(bench, runs, seeds, methods, ranking, {}, command, t0, cpu0, reused)


def _write_report(bench: Bench, runs: list[dict], seeds: list[int], methods: list[str], ranking: bool,
                  run_dirs: dict[tuple[int, str], Path], command: str | None, t0: float, cpu0: float,
                  reused: int) -> dict:  # fmt: skip
    """The ranking study and the tables (benchmark.json/.md, ranking.json) of finished ``runs``."""
    out = bench.out
    rankings = {}
    if ranking and {"enas", "random_retrained"} <= set(methods):
        for seed in seeds:
            dirs = {m: run_dirs[(seed, m)] for m in SEARCH_METHODS if (seed, m) in run_dirs}
            result = ranking_for_seed(bench, out / f"seed_{seed}", dirs)
            if result is not None:
                rankings[seed] = result
    report = build_report(bench, runs, rankings, seeds, methods, time.perf_counter() - t0, command)
    report["cpu_time"] = time.process_time() - cpu0
    report["reused_runs"] = reused
    # what the table cost, wherever and whenever its runs were computed
    report["runs_total_time"] = sum(r["total_time"] for r in runs)
    report["runs_cpu_time"] = sum(r.get("cpu_time", 0.0) for r in runs)
    atomic_write_json(out / "benchmark.json", report)
    atomic_write_text(out / "benchmark.md", render_report(report))
    if rankings:
        first = rankings[seeds[0]] if seeds[0] in rankings else next(iter(rankings.values()))
        atomic_write_json(out / "ranking.json", {**first, "per_seed": report["ranking"]["per_seed"]})
    return report


def merge_benchmark(
    shard_dirs: Sequence[str | Path], data, out_dir, rt: Runtime, command: str | None = None
) -> dict:
    """The tables of a benchmark run as ``--shard 1/N`` ... ``--shard N/N`` into ``shard_dirs``, written
    to ``out_dir`` (which may be one of them). Every shard must be there once, with the same seeds,
    methods, budget and data, and every run finished; the ranking study runs here (forward passes only)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    manifests = []
    for d in shard_dirs:
        record = read_json(Path(d) / SHARD_FILE, "benchmark shard manifest")
        if not isinstance(record, dict) or record.get("format") != SHARD_FORMAT:
            raise MusicnasError(
                f"{d}/{SHARD_FILE} is not a benchmark shard manifest; was it run with --shard?"
            )
        manifests.append((Path(d), record))
    first = manifests[0][1]
    count = first["shard"][1]
    for d, m in manifests[1:]:
        for key in ("seeds", "methods", "budget", "data_root", "ranking"):
            if m[key] != first[key]:
                raise MusicnasError(
                    f"shard {d} differs from {manifests[0][0]} in {key} ({m[key]!r} vs {first[key]!r}); "
                    "merge shards of one benchmark command"
                )
        if m["shard"][1] != count:
            raise MusicnasError(f"shard {d} is one of {m['shard'][1]}, {manifests[0][0]} one of {count}")
    if str(data.root) != first["data_root"]:
        raise MusicnasError(
            f"the shards ran on the cache {first['data_root']}, not {data.root}; pass the same --data and --cache"
        )
    have = sorted(m["shard"][0] for _, m in manifests)
    if have != list(range(1, count + 1)):
        raise MusicnasError(
            f"--merge needs each of the shards 1..{count} once, got {have}; run the missing ones with --shard I/{count}"
        )
    seeds, methods = [int(s) for s in first["seeds"]], list(first["methods"])
    budget = Budget(**first["budget"])
    run_dirs: dict[tuple[int, str], Path] = {}
    records: dict[tuple[int, str], dict] = {}
    all_jobs = [(seed, method) for seed in seeds for method in methods]
    for d, m in manifests:
        if [list(job) for job in shard_jobs(all_jobs, tuple(m["shard"]))] != m["jobs"]:
            raise MusicnasError(f"shard {d} lists other runs than shard {m['shard'][0]}/{count} should hold")
        for seed, method in m["jobs"]:
            folder = d / f"seed_{seed}" / method
            record = _reusable(folder / RESULT_FILE, method, budget, first["data_root"])
            if record is None:
                raise MusicnasError(
                    f"{folder} holds no finished run of this budget; rerun shard {m['shard'][0]}/{count}"
                )
            run_dirs[(int(seed), method)] = folder
            records[(int(seed), method)] = record
    runs = [records[job] for job in all_jobs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(data=data, budget=budget, rt=rt, out=out, data_path=first.get("data_path"))
    reused = sum(int(m.get("reused_runs", 0)) for _, m in manifests)
    return _write_report(bench, runs, seeds, methods, first["ranking"], run_dirs, command, t0, cpu0, reused)


def matched_compute(bench: Bench, runs: list[dict]) -> dict:
    """Planned and actual child training steps of each search method (see budget.py)."""
    b = bench.budget
    spe = bench.steps_per_epoch()
    actual: dict[str, list[int]] = {}
    for r in runs:
        if r["method"] in SEARCH_METHODS + ("hand_cnn",):
            actual.setdefault(r["method"], []).append(r["child_steps"]["total"])
    return {
        "unit": "child training steps (minibatch forward + backward + update)",
        "steps_per_epoch": spe,
        "planned_search_steps": b.search_epochs * spe,
        "planned_retrain_steps": b.retrain_epochs * spe,
        "actual_total_steps": actual,
    }


def build_report(
    bench: Bench,
    runs: list[dict],
    rankings: dict[int, dict],
    seeds: list[int],
    methods: list[str],
    wall_time: float,
    command: str | None,
) -> dict:
    per_seed = [
        {
            "seed": seed,
            "kendall_tau": r["kendall_tau"],
            "p_value": r["p_value"],
            "kendall_tau_random_ws": r.get("kendall_tau_random_ws"),
            "p_value_random_ws": r.get("p_value_random_ws"),
            "n": r["n"],
        }
        for seed, r in rankings.items()
    ]
    data = bench.data
    return {
        "format": BENCHMARK_FORMAT,
        "version": BENCHMARK_VERSION,
        "command": command,
        "data": {
            "path": bench.data_path,
            "cache": str(data.root),
            "classes": list(data.classes),
            "clips": {s: int(len(data.split_indices(s))) for s in ("train", "val", "test")},
            "input_shape": list(data.input_shape),
        },
        "budget": bench.budget.to_dict(),
        "seeds": seeds,
        "methods": methods,
        "matched_compute": matched_compute(bench, runs),
        "rows": summarise(runs),
        "paired": paired_comparisons(runs),
        "runs": runs,
        "ranking": {"per_seed": per_seed},
        "wall_time": wall_time,
        "runtime": bench.rt.describe(),
    }
