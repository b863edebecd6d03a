"""Aggregates benchmark runs (one per method and seed) into the results table: JSON and markdown.

Rows are methods, in a fixed order; columns are mean ± sample standard deviation over seeds of clip and
track test accuracy, and means of parameters, MACs, search time, train time and total time (seconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

# method id -> label shown in tables, in the order rows appear
METHODS: dict[str, str] = {
    "enas": "ENAS",
    "random_ws": "Random search, weight sharing",
    "random_retrained": "Random search, retrained",
    "hand_cnn": "Hand CNN (short-chunk ResCNN)",
    "logreg": "Floor: log-mel stats + logistic regression",
}

# per-run metric -> how it is summarised across seeds
MEAN_STD_METRICS = ("clip_acc", "track_acc")
MEAN_METRICS = ("params", "macs", "search_time", "train_time", "total_time", "cpu_time")
TABLE_COLUMNS = (
    "method",
    "label",
    "seeds",
    "clip_acc_mean",
    "clip_acc_std",
    "track_acc_mean",
    "track_acc_std",
    "params",
    "macs",
    "search_time",
    "train_time",
    "total_time",
)
MARKDOWN_HEADER = (
    "Method",
    "Clip acc (%)",
    "Track acc (%)",
    "Params",
    "MACs",
    "Search time (s)",
    "Train time (s)",
    "Total time (s)",
)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample (ddof=1) standard deviation of the finite values; std is None for one value."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    arr = np.asarray(vals, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return float(arr.mean()), std


def summarise(runs: Iterable[dict]) -> list[dict]:
    """One row per method present in ``runs`` (dicts with ``method``, ``seed`` and the metrics)."""
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)
    order = [m for m in METHODS if m in by_method] + sorted(m for m in by_method if m not in METHODS)
    rows = []
    for method in order:
        group = sorted(by_method[method], key=lambda r: r["seed"])
        row: dict = {
            "method": method,
            "label": METHODS.get(method, method),
            "seeds": [r["seed"] for r in group],
        }
        for key in MEAN_STD_METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([r.get(key) for r in group])
        for key in MEAN_METRICS:
            row[key], _ = mean_std([r.get(key) for r in group])
        rows.append(row)
    return rows


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.1f}" if std is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _count(value: float | None) -> str:
    if value is None:
        return "n/a"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:.0f}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def to_markdown(rows: Sequence[dict]) -> str:
    lines = ["| " + " | ".join(MARKDOWN_HEADER) + " |", "|" + "|".join("---" for _ in MARKDOWN_HEADER) + "|"]
    for row in rows:
        cells = [
            row["label"],
            _pct(row["clip_acc_mean"], row["clip_acc_std"]),
            _pct(row["track_acc_mean"], row["track_acc_std"]),
            _count(row["params"]),
            _count(row["macs"]),
            _seconds(row["search_time"]),
            _seconds(row["train_time"]),
            _seconds(row["total_time"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
