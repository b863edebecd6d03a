"""Aggregates benchmark runs (one per method and seed) into the results table: JSON and markdown
(``benchmark.md`` is rendered here too).

Rows are methods, in a fixed order; columns are mean ± sample standard deviation over seeds of clip,
file and track test accuracy, and means of parameters, MACs, search time, train time and total time
(seconds). :func:`paired_comparisons` sets ENAS against each random baseline seed by seed.
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
MEAN_STD_METRICS = ("clip_acc", "file_acc", "track_acc")
MEAN_METRICS = ("params", "macs", "search_time", "train_time", "total_time", "cpu_time")
TABLE_COLUMNS = (
    "method",
    "label",
    "seeds",
    "clip_acc_mean",
    "clip_acc_std",
    "file_acc_mean",
    "file_acc_std",
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
    "File acc (%)",
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


# ENAS is compared with these, seed by seed (the same seed: the same data order, initialisation, budget)
PAIRED_AGAINST = ("random_ws", "random_retrained")
PAIRED_METRICS = ("clip_acc", "file_acc", "track_acc")


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """``a - b`` paired by position: ``n``, mean and sample std of the differences, the two-sided
    Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; exact for small n without ties, None when it
    is undefined: fewer than 2 pairs or every difference 0), and whether the mean difference exceeds one
    standard deviation of the differences (the issue's bar for "beats")."""
    from scipy.stats import wilcoxon

    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, std = mean_std(diffs.tolist())
    p_value = None
    if diffs.size >= 2 and np.any(diffs != 0):
        p_value = float(wilcoxon(diffs, alternative="two-sided").pvalue)
    return {
        "n": int(diffs.size),
        "mean_diff": mean,
        "std_diff": std,
        "p_value": p_value,
        "beats_by_one_std": bool(mean is not None and std is not None and mean > std),
    }


def paired_comparisons(runs: Iterable[dict], method: str = "enas") -> list[dict]:
    """``method`` against each of ``PAIRED_AGAINST`` on every metric, over the seeds both have a value."""
    by_key = {(r["method"], r["seed"]): r for r in runs}
    out = []
    for other in PAIRED_AGAINST:
        seeds = sorted({s for m, s in by_key if m == method} & {s for m, s in by_key if m == other})
        for metric in PAIRED_METRICS:
            pairs = [(by_key[method, s].get(metric), by_key[other, s].get(metric)) for s in seeds]
            used = [
                (s, a, b) for s, (a, b) in zip(seeds, pairs, strict=True) if a is not None and b is not None
            ]
            if not used:
                continue
            result = paired_difference([a for _, a, _ in used], [b for _, _, b in used])
            out.append({"method": method, "against": other, "metric": metric, "seeds": [s for s, _, _ in used],
                        **result})  # fmt: skip
    return out


def paired_markdown(comparisons: Sequence[dict]) -> str:
    header = ("ENAS against", "Metric", "Seeds", "Mean paired difference (pts)", "Std of difference (pts)",
              "Wilcoxon p", "Beats by > 1 std")  # fmt: skip
    cells = [
        [METHODS.get(c["against"], c["against"]), c["metric"], str(c["n"]),
         "n/a" if c["mean_diff"] is None else f"{100 * c['mean_diff']:+.1f}",
         "n/a" if c["std_diff"] is None else f"{100 * c['std_diff']:.1f}",
         _num(c["p_value"]), "yes" if c["beats_by_one_std"] else "no"]
        for c in comparisons
    ]  # fmt: skip
    return markdown_table(header, cells)


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


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table of already formatted cells (the one renderer of every benchmark table)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def to_markdown(rows: Sequence[dict]) -> str:
    """The results table (one row per method)."""
    return markdown_table(
        MARKDOWN_HEADER,
        (
            [
                row["label"],
                _pct(row["clip_acc_mean"], row["clip_acc_std"]),
                _pct(row.get("file_acc_mean"), row.get("file_acc_std")),
                _pct(row["track_acc_mean"], row["track_acc_std"]),
                _count(row["params"]),
                _count(row["macs"]),
                _seconds(row["search_time"]),
                _seconds(row["train_time"]),
                _seconds(row["total_time"]),
            ]
            for row in rows
        ),
    )


def render_report(report: dict) -> str:
    """``benchmark.md``: the data, the results table, the budget and the ranking study."""
    b = report["budget"]
    mc = report["matched_compute"]
    lines = ["# musicnas benchmark", ""]
    if report.get("command"):
        lines += ["```", report["command"], "```", ""]
    data = report["data"]
    lines += [
        f"Data: {len(data['classes'])} classes, clips train/val/test "
        f"{data['clips']['train']}/{data['clips']['val']}/{data['clips']['test']}; seeds {report['seeds']}; "
        f"{len(report['runs'])} runs took {report.get('runs_total_time', 0):.0f} s of wall time and "
        f"{report.get('runs_cpu_time', 0):.0f} CPU seconds in all; this invocation {report['wall_time']:.0f} s "
        f"on {report['runtime'].get('device')} ({report['runtime'].get('threads')} threads), reusing "
        f"{report.get('reused_runs', 0)} finished runs.",
        "",
        to_markdown(report["rows"]),
        "Test-split accuracy, mean ± sample standard deviation over seeds; params, MACs (per clip) and times are "
        "means. Search time: ENAS/random-WS search and deriving, or the k short trainings; train time: the "
        "final training (the floor: fitting).",
        "",
        f"Budget: search {b['search_epochs']} epochs ({mc['planned_search_steps']} child steps; random-retrained: "
        f"{b['random_k']} architectures x {b['search_epochs'] // b['random_k']} epochs), final retrain "
        f"{b['retrain_epochs']} epochs ({mc['planned_retrain_steps']} steps) for every searched architecture "
        f"and the hand CNN; {mc['steps_per_epoch']} steps per epoch at batch size {b['batch_size']}.",
        "",
    ]
    if report.get("paired"):
        lines += ["## ENAS against the random baselines, paired over seeds", "", paired_markdown(report["paired"]),
                  "Difference = ENAS − baseline on the same seed. With n seeds the two-sided Wilcoxon p can be no "
                  "smaller than 2 / 2^n (0.0625 for 5 seeds).", ""]  # fmt: skip
    per_seed = report["ranking"]["per_seed"]
    if per_seed:
        lines += ["## Ranking quality (shared-weight vs stand-alone accuracy)", ""]
        header = ("Seed", "n", "Kendall τ (ENAS weights)", "p", "Kendall τ (random-WS weights)", "p")
        cells = [
            [str(r["seed"]), str(r["n"]), _num(r["kendall_tau"]), _num(r["p_value"]),
             _num(r["kendall_tau_random_ws"]), _num(r["p_value_random_ws"])]
            for r in per_seed
        ]  # fmt: skip
        lines.append(markdown_table(header, cells).rstrip("\n"))
        lines.append("")
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
