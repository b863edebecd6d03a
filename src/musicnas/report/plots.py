"""Plots of search and training metrics, the confusion matrix and ranking quality, as PNG bytes.

Each function returns ``None`` when its inputs hold nothing to plot, so the page can say so instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from musicnas.report.figures import new_figure, plain, to_png
from musicnas.report.inputs import numeric_series
from musicnas.runtime import MusicnasError


def _phase_rows(steps: list[dict], phase: str) -> list[dict]:
    """One phase's step records, each with ``_index``: its running number, the x of step-level plots."""
    return [dict(r, _index=i + 1) for i, r in enumerate(r for r in steps if r.get("phase") == phase)]


def _panel_lines(sources, keys):
    """The lines of one panel, all from the first source that has any of ``keys``, so a panel never mixes
    x axes (steps with epochs). Step-level data comes first when the producer logged it."""
    for rows, x_key, x_label, path in sources:
        lines, labels = [], set()
        for key, label in keys:
            if label in labels:  # "child_acc" and the step-level "acc" are the same curve
                continue
            xs, ys = numeric_series(rows, key, x_key, path)
            if xs:
                lines.append((xs, ys, label, x_label))
                labels.add(label)
        if lines:
            return lines
    return []


def search_curves(
    steps: list[dict], epochs: list[dict], root: Path, skip_target: float | None = None
) -> bytes | None:
    """Reward and baseline, controller entropy, skip rate (controller updates, or epochs when only those
    were logged), shared-weight training and validation accuracy and child loss (epochs, or steps)."""
    steps_path, epochs_path = root / "metrics_steps.jsonl", root / "metrics_epochs.jsonl"
    controller = (_phase_rows(steps, "controller"), "_index", "controller update", steps_path)
    child = (_phase_rows(steps, "child"), "_index", "child step", steps_path)
    per_epoch = (epochs, "epoch", "epoch", epochs_path)
    panels = [
        ("Reward and baseline", controller, per_epoch, (("reward", "reward"), ("baseline", "baseline"))),
        ("Controller entropy", controller, per_epoch, (("entropy", "entropy"),)),
        (
            "Accuracy (shared weights)",
            per_epoch,
            child,
            (("child_acc", "train (child)"), ("acc", "train (child)"), ("val_acc", "validation")),
        ),
        ("Skip rate", controller, per_epoch, (("skip_rate", "skip rate"),)),
        ("Child loss", per_epoch, child, (("child_loss", "train loss"), ("loss", "train loss"))),
        ("Learning rate", per_epoch, child, (("lr", "child lr"), ("controller_lr", "controller lr"))),
    ]
    drawn = []
    for title, primary, fallback, keys in panels:
        lines = _panel_lines((primary, fallback), keys)
        if lines:
            drawn.append((title, lines))
    if not drawn:
        return None
    cols = 3 if len(drawn) > 4 else 2
    rows = -(-len(drawn) // cols)
    fig = new_figure(4.0 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, lines) in zip(axes, drawn, strict=False):  # the grid may have spare axes
        for xs, ys, label, x_label in lines:
            marker = "o" if len(xs) <= 30 else None
            ax.plot(xs, ys, label=label, lw=1.2, marker=marker, ms=3)
            if len(xs) > 60 and label == "reward":  # raw per-update rewards are noisy: add a running mean
                window = max(5, len(ys) // 30)
                smooth = np.convolve(ys, np.ones(window) / window, mode="valid")
                ax.plot(xs[window - 1 :], smooth, lw=1.8, label=f"reward (mean of {window})")
            ax.set_xlabel(x_label)
        if title == "Skip rate" and skip_target is not None:
            ax.axhline(skip_target, ls="--", c="grey", lw=1, label=f"target {skip_target:g}")
        if title == "Learning rate" and all(min(line[1]) > 0 for line in lines):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        _tidy_axes(ax)
        if len(lines) > 1 or title in ("Reward and baseline", "Skip rate"):
            ax.legend(fontsize=7)
    for ax in axes[len(drawn) :]:
        ax.set_axis_off()
    return to_png(fig)


def _tidy_axes(ax) -> None:
    """Whole-number x ticks (epochs, steps) and plain y tick labels: no "+2.1e1" offset that makes a
    nearly flat curve unreadable."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)


def _is_numbers(value) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _decision_rows(decision, path: Path, record: int) -> list[tuple[str, list[float]]]:
    """One ``(name, probs)`` per categorical choice. A decision may hold several independent choices
    (the macro controller's ``layerN.skips``: one [p(no), p(yes)] pair per earlier layer): each becomes
    its own row, ``name[i]``."""
    probs = decision.get("probs") if isinstance(decision, dict) else None
    name = str(decision.get("name", "?")) if isinstance(decision, dict) else "?"
    if _is_numbers(probs):
        return [(name, [float(v) for v in probs])]
    if isinstance(probs, list) and probs and all(_is_numbers(p) for p in probs):
        return [(f"{name}[{j}]", [float(v) for v in p]) for j, p in enumerate(probs)]
    raise MusicnasError(
        f"{path} record {record + 1}: decision {name!r} needs 'probs' as a list of numbers (or of lists of numbers)"
    )


def controller_convergence(records: list[dict], root: Path) -> bytes | None:
    """How decided the controller is per epoch (mean probability of each decision's likeliest choice),
    and the last epoch's probabilities of every decision as a heat map."""
    path = root / "controller_probs.jsonl"
    epochs, confidence = [], []
    last = None
    for i, rec in enumerate(records):
        decisions = rec.get("decisions")
        if not isinstance(decisions, list):
            raise MusicnasError(f"{path} record {i + 1} has no 'decisions' list")
        probs = []
        for d in decisions:
            probs.extend(_decision_rows(d, path, i))
        if probs:
            epochs.append(rec.get("epoch", i))
            confidence.append(float(np.mean([max(p) for _, p in probs])))
            last = probs
    if last is None:
        return None
    width = max(len(p) for _, p in last)
    grid = np.full((width, len(last)), np.nan)
    for j, (_, p) in enumerate(last):
        grid[: len(p), j] = p
    fig = new_figure(12.0, 3.4)
    left, right = fig.subplots(1, 2, width_ratios=[1, 2.6])
    left.plot(epochs, confidence, marker="o" if len(epochs) <= 30 else None, ms=3)
    left.set_ylim(0, 1.02)
    left.set_xlabel("epoch")
    left.set_title("mean top-choice probability", fontsize=10)
    _tidy_axes(left)
    image = right.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    right.set_xlabel(f"decision (last epoch, {len(last)} decisions)")
    right.set_ylabel("choice")
    right.set_title("controller probabilities", fontsize=10)
    if len(last) <= 30:
        right.set_xticks(range(len(last)), [plain(n, max_chars=20) for n, _ in last], rotation=90, fontsize=6)
    fig.colorbar(image, ax=right, fraction=0.03)
    return to_png(fig)


def training_curves(epochs: list[dict], root: Path, best_epoch: float | None = None) -> bytes | None:
    path = root / "metrics_epochs.jsonl"
    panels = [
        ("Loss", (("train_loss", "train"), ("val_loss", "validation"))),
        ("Accuracy", (("train_acc", "train"), ("val_acc", "validation"))),
        ("Learning rate", (("lr", "lr"),)),
    ]
    drawn = []
    for title, keys in panels:
        lines = [(label, *numeric_series(epochs, key, "epoch", path)) for key, label in keys]
        lines = [line for line in lines if line[1]]
        if lines:
            drawn.append((title, lines))
    if not drawn:
        return None
    fig = new_figure(4.0 * len(drawn), 3.0)
    axes = fig.subplots(1, len(drawn), squeeze=False).ravel()
    for ax, (title, lines) in zip(axes, drawn, strict=True):
        for label, xs, ys in lines:
            ax.plot(xs, ys, label=label, marker="o" if len(xs) <= 30 else None, ms=3, lw=1.2)
        if best_epoch is not None:
            ax.axvline(best_epoch, ls="--", c="grey", lw=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        _tidy_axes(ax)
        ax.legend(fontsize=7)
    return to_png(fig)


def confusion_matrix(matrix: np.ndarray, classes: list[str], title: str) -> bytes:
    """Rows are true classes, columns predictions; colour is the row-normalised rate (recall per class),
    numbers are counts (when the matrix is small enough to read them)."""
    k = matrix.shape[0]
    totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    side = min(12.0, max(4.0, 0.45 * k + 2.5))
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    labels = [plain(c, max_chars=24) for c in classes]
    fontsize = 9 if k <= 12 else 7 if k <= 25 else 6
    ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize)
    ax.set_yticks(range(k), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        integral = np.allclose(matrix, np.round(matrix))
        for i in range(k):
            for j in range(k):
                value = matrix[i, j]
                text = f"{int(round(value))}" if integral else f"{value:.2f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fontsize - 1,
                    color="white" if rates[i, j] > 0.6 else "black",
                )
    ax.set_title(plain(title), fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    return to_png(fig)


def ranking_scatter(
    shared: list[float], standalone: list[float], tau: float | None, p_value: float | None
) -> bytes:
    fig = new_figure(5.0, 4.2)
    ax = fig.add_subplot()
    ax.scatter(shared, standalone, s=22, alpha=0.8, edgecolor="k", lw=0.4)
    ax.set_xlabel("shared-weight accuracy (search)")
    ax.set_ylabel("stand-alone accuracy (retrained)")
    parts = []
    if tau is not None:
        parts.append(f"Kendall tau = {tau:.3f}")
    if p_value is not None:
        parts.append(f"p = {p_value:.3g}")
    ax.set_title(", ".join(parts) or "ranking quality", fontsize=10)
    ax.grid(alpha=0.3)
    return to_png(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower latency x, higher accuracy y), by latency."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def accuracy_vs_latency(
    points: list[tuple[float, float]],
    target_ms: float | None = None,
    chosen: tuple[float, float] | None = None,
    chosen_measured_ms: float | None = None,
) -> bytes | None:
    """Every scored architecture (predicted latency, shared-weight accuracy), the Pareto front, the
    target with its ±10% band, and the chosen architecture (predicted and measured latency)."""
    if not points:
        return None
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot()
    xs, ys = zip(*points, strict=True)
    ax.scatter(xs, ys, s=16, alpha=0.55, color="#4c72b0", lw=0, label=f"scored architectures ({len(points)})")
    front = pareto_front(points)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#c44e52", lw=1.4,
            label="Pareto front")  # fmt: skip
    if target_ms is not None:
        ax.axvspan(0.9 * target_ms, 1.1 * target_ms, color="#55a868", alpha=0.15, lw=0, label="target ±10%")
        ax.axvline(target_ms, color="#55a868", lw=1.4, label=f"target {target_ms:g} ms")
    if chosen is not None:
        ax.scatter([chosen[0]], [chosen[1]], marker="*", s=160, color="#dd8452", edgecolor="k", lw=0.5,
                   zorder=5, label="chosen (predicted)")  # fmt: skip
        if chosen_measured_ms is not None:
            ax.scatter([chosen_measured_ms], [chosen[1]], marker="X", s=70, color="#8172b2", edgecolor="k",
                       lw=0.5, zorder=5, label="chosen (measured)")  # fmt: skip
    ax.set_xlabel("latency, ms (batch 1; predicted by the latency table)")
    ax.set_ylabel("validation accuracy (shared weights)")
    ax.set_title("Accuracy vs latency", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_png(fig)
