"""Finding and reading what a report shows: a search run directory and/or a model bundle directory.

Readers are tolerant of extra keys (the producers grow new fields) and of missing files (a section is
skipped with a note), but strict about malformed content: a file that exists and cannot be read gives a
:class:`MusicnasError` naming the file and what to do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicnas.runtime import MusicnasError
from musicnas.utils.io import read_json

# Files whose presence marks a directory as one kind or the other (docs/architecture.md, "On-disk formats").
# ranking.json / benchmark.json (written by the baselines) are read from the folder given, the run and the
# model folder, first found wins.
EXTRA_FILES = ("ranking.json", "benchmark.json")
RUN_MARKERS = ("metrics_steps.jsonl", "controller_probs.jsonl", "candidates.json", "config.json")
BUNDLE_MARKERS = ("bundle.json", "summary.json", "evaluation.json", "model.safetensors", "train_config.json")
# Keys under which a model's summary/bundle may point back to the search run it came from.
SEARCH_RUN_KEYS = ("search_run", "search_dir", "run_dir", "arch_path", "arch_source", "arch")


def read_jsonl(path: Path) -> tuple[list[dict], str | None]:
    """Reads one JSON object per line. Returns ``(rows, note)``.

    A last line without its newline that does not parse is a record still being written by a live run:
    it is dropped and reported in ``note`` instead of failing the whole report. Any other bad line is an
    error."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MusicnasError(f"{path} is not UTF-8 text ({exc}); was it overwritten by another file?") from exc
    lines = text.split("\n")
    rows: list[dict] = []
    note = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                note = f"{path.name}: the last line is incomplete (a run still writing?) and was left out"
                continue
            raise MusicnasError(
                f"{path} line {number} is not valid JSON ({exc.msg}); the file is corrupt: "
                "fix or delete that line, or re-run the command that wrote it"
            ) from exc
        if not isinstance(row, dict):
            raise MusicnasError(f"{path} line {number} is not a JSON object (one object per line expected)")
        rows.append(row)
    return rows, note


def read_object(path: Path, what: str) -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise MusicnasError(f"{what} {path} must hold a JSON object, found {type(data).__name__}")
    return data


def numeric_series(rows: list[dict], key: str, x_key: str, source: Path) -> tuple[list[float], list[float]]:
    """``(xs, ys)`` for the rows that have ``key``; a non-numeric value is an error naming the file."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        if key not in row or row[key] is None:
            continue
        value = row[key]
        x = row.get(x_key, i)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MusicnasError(f"{source}: {key!r} must be a number, found {value!r} (record {i + 1})")
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            x = i
        if math.isfinite(float(value)):
            xs.append(float(x))
            ys.append(float(value))
    return xs, ys


@dataclass
class RunInputs:
    """What a search run directory holds (any field may be missing)."""

    root: Path
    config: dict | None = None
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    controller_probs: list[dict] = field(default_factory=list)
    arch: dict | None = None
    candidates: list[dict] = field(default_factory=list)
    derive: dict | None = None  # candidates.json "derive": how deriving went, every scored architecture
    notes: list[str] = field(default_factory=list)


@dataclass
class BundleInputs:
    """What a model bundle directory holds (any field may be missing)."""

    root: Path
    bundle: dict | None = None
    summary: dict | None = None
    train_config: dict | None = None
    arch: dict | None = None
    epochs: list[dict] = field(default_factory=list)
    evaluation: dict | None = None
    confusion_png: bytes | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportInputs:
    source: Path
    run: RunInputs | None
    bundle: BundleInputs | None
    ranking: dict | None = None  # ranking.json (baselines): shared vs stand-alone accuracy
    benchmark: list[dict] | None = None  # benchmark.json rows (baselines)
    notes: list[str] = field(default_factory=list)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_MARKERS)


def is_bundle_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in BUNDLE_MARKERS)


def _read_jsonl_into(path: Path, notes: list[str]) -> list[dict]:
    if not path.is_file():
        return []
    rows, note = read_jsonl(path)
    if note:
        notes.append(note)
    return rows


def _read_benchmark(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    data = read_json(path, "benchmark file")
    rows = data.get("rows", data.get("results")) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MusicnasError(f"benchmark file {path} must hold a list of row objects (or {{'rows': [...]}})")
    return rows


def load_run(root: Path) -> RunInputs:
    run = RunInputs(root=root)
    if (root / "config.json").is_file():
        run.config = read_object(root / "config.json", "search config")
    run.steps = _read_jsonl_into(root / "metrics_steps.jsonl", run.notes)
    run.epochs = _read_jsonl_into(root / "metrics_epochs.jsonl", run.notes)
    run.controller_probs = _read_jsonl_into(root / "controller_probs.jsonl", run.notes)
    if (root / "arch.json").is_file():
        run.arch = read_object(root / "arch.json", "architecture file")
    if (root / "candidates.json").is_file():
        data = read_json(root / "candidates.json", "candidates file")
        cands = data.get("candidates") if isinstance(data, dict) else data
        if not isinstance(cands, list) or not all(isinstance(c, dict) for c in cands):
            raise MusicnasError(
                f"candidates file {root / 'candidates.json'} must be {{'candidates': [{{'arch': ..., 'score': ...}}, ...]}}"
            )
        run.candidates = cands
        if isinstance(data, dict) and isinstance(data.get("derive"), dict):
            run.derive = data["derive"]
    return run


def load_bundle_dir(root: Path) -> BundleInputs:
    b = BundleInputs(root=root)
    if (root / "bundle.json").is_file():
        b.bundle = read_object(root / "bundle.json", "bundle metadata")
    if (root / "summary.json").is_file():
        b.summary = read_object(root / "summary.json", "training summary")
    if (root / "train_config.json").is_file():
        b.train_config = read_object(root / "train_config.json", "training config")
    if (root / "arch.json").is_file():
        b.arch = read_object(root / "arch.json", "architecture file")
    b.epochs = _read_jsonl_into(root / "metrics_epochs.jsonl", b.notes)
    if (root / "evaluation.json").is_file():
        b.evaluation = read_object(root / "evaluation.json", "evaluation file")
    png = root / "confusion.png"
    if png.is_file():
        data = png.read_bytes()
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            b.confusion_png = data
        else:
            b.notes.append(f"{png.name} is not a PNG image and was left out")
    return b


def _search_run_of(bundle: BundleInputs) -> Path | None:
    """The search run a model was trained from, if its summary or metadata says so and it exists."""
    for meta in (bundle.summary, bundle.train_config, bundle.bundle):
        if not isinstance(meta, dict):
            continue
        for scope in (meta, meta.get("config"), meta.get("source")):
            if not isinstance(scope, dict):
                continue
            for key in SEARCH_RUN_KEYS:
                value = scope.get(key)
                if not isinstance(value, str) or not value:
                    continue
                for base in (bundle.root, Path.cwd()):
                    candidate = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
                    if candidate.is_file():  # e.g. "arch_path": ".../search/arch.json"
                        candidate = candidate.parent
                    if is_run_dir(candidate) and candidate != bundle.root.resolve():
                        return candidate
    return None


def find_inputs(path: str | Path) -> ReportInputs:
    """Resolves ``path`` (a search run, a model bundle, a folder holding one of each and/or a benchmark's
    ranking.json / benchmark.json, or a file inside any of these) into what the report can show."""
    source = Path(path)
    if not source.exists():
        raise MusicnasError(f"{source} does not exist: give a search run directory or a model directory")
    if source.is_file():
        source = source.parent
    notes: list[str] = []
    run_dir = bundle_dir = None
    if is_bundle_dir(source):
        bundle_dir = source
    elif is_run_dir(source):
        run_dir = source
    else:
        subdirs = sorted(p for p in source.iterdir() if p.is_dir())
        runs = [p for p in subdirs if not is_bundle_dir(p) and is_run_dir(p)]
        bundles = [p for p in subdirs if is_bundle_dir(p)]
        if len(runs) > 1 or len(bundles) > 1:
            names = ", ".join(p.name for p in runs + bundles)
            raise MusicnasError(f"{source} holds several runs/models ({names}): give one of them")
        run_dir = runs[0] if runs else None
        bundle_dir = bundles[0] if bundles else None
        if run_dir is None and bundle_dir is None and not any((source / f).is_file() for f in EXTRA_FILES):
            raise MusicnasError(
                f"{source} is neither a search run (config.json, metrics_*.jsonl, candidates.json) nor a "
                "model directory (bundle.json, summary.json, evaluation.json): give the folder written by "
                "`musicnas search --out` or `musicnas train --out`"
            )
    bundle = load_bundle_dir(bundle_dir) if bundle_dir else None
    if bundle is not None and run_dir is None:
        run_dir = _search_run_of(bundle)
        if run_dir is None:
            notes.append("The model's summary does not point to a search run: search sections are left out.")
    run = load_run(run_dir) if run_dir else None
    inputs = ReportInputs(source=Path(path), run=run, bundle=bundle, notes=notes)
    folders = [source] + [p for p in (run_dir, bundle_dir) if p is not None and p != source]
    ranking_path = next((d / "ranking.json" for d in folders if (d / "ranking.json").is_file()), None)
    if ranking_path is not None:
        inputs.ranking = read_object(ranking_path, "ranking file")
    bench_path = next((d / "benchmark.json" for d in folders if (d / "benchmark.json").is_file()), None)
    if bench_path is not None:
        inputs.benchmark = _read_benchmark(bench_path)
    return inputs


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
