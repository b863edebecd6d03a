"""The HTML page: one self-contained file (inline CSS, images as base64 PNG data URIs, no script, no
external resource; a Content-Security-Policy forbids anything else). Every piece of text from the
inputs goes through ``html.escape``."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from musicnas import __version__
from musicnas.report import plots
from musicnas.report.archinfo import ArchInfo, describe_arch
from musicnas.report.diagrams import draw_arch
from musicnas.report.figures import PNG_SIGNATURE
from musicnas.report.inputs import BundleInputs, ReportInputs, RunInputs, as_number
from musicnas.runtime import MusicnasError
from musicnas.search.controller import DEFAULT_SKIP_TARGET

log = logging.getLogger(__name__)

MAX_CANDIDATES = 20
MAX_SUMMARY_ROWS = 40

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 1.2em 2em 3em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em;
margin-top: 2em; } h3 { margin-bottom: 0.3em; }
.meta { color: #666; font-size: 0.9em; } .note { color: #8a5a00; background: #fff8e6; padding: 0.4em 0.7em;
border-left: 3px solid #e0a800; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.88em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; } .num { font-variant-numeric: tabular-nums; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.85em; }
.row { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
.row figure { flex: 1 1 0; min-width: 320px; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; } nav a { margin-right: 0.9em; }
"""
# Nothing may be fetched or run: images come inline, styles inline, and no script at all.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """Numbers readable in a table; everything else as text. Returns escaped HTML."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int):
        return esc(f"{value:,}")
    if isinstance(value, float):
        if not math.isfinite(value):
            return esc(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return esc(f"{value:.3g}")
        return esc(f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}")
    if isinstance(value, dict) and "mean" in value:
        return _mean_std(value.get("mean"), value.get("std"))
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return esc(text if len(text) <= 120 else text[:117] + "...")
    return esc(value)


def _mean_std(mean, std) -> str:
    if as_number(std) is None:
        return fmt(mean)
    return f"{fmt(mean)} &plusmn; {fmt(std)}"


def image(png: bytes, alt: str, caption: str | None = None) -> str:
    if not png.startswith(PNG_SIGNATURE):
        raise MusicnasError(f"internal error: the {alt} image is not a PNG")
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: set[int] | None = None) -> str:
    """``rows`` hold already escaped cell HTML (see :func:`fmt`); headers are escaped here."""
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_value_table(pairs: list[tuple[str, Any]]) -> str:
    def cell(value) -> str:
        numeric = as_number(value) is not None
        return f'<span class="num">{fmt(value)}</span>' if numeric else fmt(value)

    return table(("", "value"), ([esc(k), cell(v)] for k, v in pairs))


def flatten_scalars(data: dict, prefix: str = "", depth: int = 2) -> list[tuple[str, Any]]:
    """``a.b`` -> scalar pairs of a nested summary, skipping lists (curves, matrices) and long text."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth > 1:
            out.extend(flatten_scalars(value, f"{name}.", depth - 1))
        elif isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 200):
            out.append((name, value))
    return out


class Section:
    def __init__(self, anchor: str, title: str, body: str):
        self.anchor, self.title, self.body = anchor, title, body

    def render(self) -> str:
        return f'<section id="{esc(self.anchor)}"><h2>{esc(self.title)}</h2>\n{self.body}\n</section>'


# ---------------------------------------------------------------- sections


def _config_scopes(cfg: dict) -> list[dict]:
    """The search config and its nested sections (``search``, ``controller_options`` ...), outermost first."""
    scopes = [cfg]
    for key in ("search", "controller", "controller_options"):
        for scope in list(scopes):
            if isinstance(scope.get(key), dict):
                scopes.append(scope[key])
    return scopes


def _config_value(cfg: dict | None, key: str):
    for scope in _config_scopes(cfg or {}):
        value = scope.get(key)
        if value is not None and not isinstance(value, (dict, list)):
            return value
    return None


# Summary keys shown elsewhere (configuration section) or too bulky for the table.
SUMMARY_SKIP = {"config", "runtime", "model"}


def summary_section(inputs: ReportInputs) -> Section:
    parts = []
    run, bundle = inputs.run, inputs.bundle
    if run is not None:
        pairs: list[tuple[str, Any]] = [("run directory", str(run.root))]
        cfg = run.config or {}
        space = cfg.get("space")
        if isinstance(space, dict):
            pairs.append(("search space", ", ".join(f"{k}={v}" for k, v in space.items())))
        data = cfg.get("data")
        if isinstance(data, dict):
            data = data.get("path")
        if data is not None:
            pairs.append(("data", data))
        for key in ("seed", "epochs", "reward"):
            value = _config_value(cfg, key)
            if value is not None:
                pairs.append((key, value))
        if run.epochs:
            pairs.append(("epochs logged", len(run.epochs)))
            vals = [v for v in (as_number(r.get("val_acc")) for r in run.epochs) if v is not None]
            if vals:
                pairs.append(("best epoch-mean validation accuracy (shared weights)", max(vals)))
            elapsed = as_number(run.epochs[-1].get("elapsed"))
            if elapsed is not None:
                pairs.append(("search time (s)", elapsed))
        if run.candidates:
            best = run.candidates[0]
            for key in ("score", "accuracy"):
                if as_number(best.get(key)) is not None:
                    pairs.append((f"best candidate {key}", best[key]))
        parts.append("<h3>Search run</h3>" + key_value_table(pairs))
    if bundle is not None:
        pairs = [("model directory", str(bundle.root))]
        if bundle.summary:
            kept = {k: v for k, v in bundle.summary.items() if k not in SUMMARY_SKIP}
            pairs += flatten_scalars(kept)[:MAX_SUMMARY_ROWS]
        if bundle.bundle:
            classes = bundle.bundle.get("classes")
            if isinstance(classes, list):
                pairs.append(("classes", ", ".join(map(str, classes))))
        parts.append("<h3>Model</h3>" + key_value_table(pairs))
    if not parts:
        parts.append(note("No search run or model directory here; only the files below."))
    return Section("summary", "Summary", "\n".join(parts))


def search_section(run: RunInputs | None) -> Section:
    title = "Search curves"
    if run is None:
        return Section("search", title, note("No search run: the search curves are left out."))
    skip_target = as_number(_config_value(run.config, "skip_target"))
    space = (run.config or {}).get("space")
    if skip_target is None and isinstance(space, dict) and space.get("type") == "macro":
        skip_target = DEFAULT_SKIP_TARGET  # the controller's default prior
    body = []
    png = plots.search_curves(run.steps, run.epochs, run.root, skip_target=skip_target)
    if png is None:
        body.append(note("metrics_steps.jsonl / metrics_epochs.jsonl are missing or empty: nothing to plot."))
    else:
        body.append(
            image(
                png,
                "search curves",
                "Controller panels (reward, baseline, entropy, skip rate) are per controller update when logged; "
                "accuracy is of sampled child networks with shared weights, so it is a noisy, optimistic proxy.",
            )
        )
    probs = plots.controller_convergence(run.controller_probs, run.root) if run.controller_probs else None
    if probs is not None:
        body.append(
            image(probs, "controller decision probabilities", "How sure the controller is of each decision.")
        )
    return Section("search", title, "\n".join(body))


def _arch_html(info: ArchInfo, alt: str) -> str:
    caption = (
        "Skip connections (orange) are concatenated with the layer's output, then mixed by a 1x1 conv."
        if info.type == "macro"
        else "Each node sums its two inputs after their ops; nodes no other node uses are concatenated."
    )
    parts = [image(draw_arch(info), alt, caption)]
    text = info.text or f"flat: {info.flat}"
    parts.append(f"<details><summary>as text</summary><pre>{esc(text)}</pre></details>")
    return "\n".join(parts)


def arch_section(inputs: ReportInputs) -> Section:
    title = "Chosen architecture"
    sources = []
    if inputs.bundle is not None and inputs.bundle.arch is not None:
        sources.append(("model", inputs.bundle.root / "arch.json", inputs.bundle.arch))
    if inputs.run is not None and inputs.run.arch is not None:
        sources.append(("search run", inputs.run.root / "arch.json", inputs.run.arch))
    if not sources:
        return Section("architecture", title, note("No arch.json in the run or model directory."))
    where, path, arch_json = sources[0]
    info = _describe(arch_json, path)
    body = [
        f"<p>From the {esc(where)}: <code>{esc(path)}</code> ({esc(info.type)} space)</p>",
        _arch_html(info, "architecture"),
    ]
    if len(sources) > 1 and _describe(sources[1][2], sources[1][1]).flat != info.flat:
        body.append(
            note(
                f"The search run's arch.json differs from the model's; the model's is shown ({sources[1][1]})."
            )
        )
    return Section("architecture", title, "\n".join(body))


def _describe(arch_json: dict, where) -> ArchInfo:
    try:
        return describe_arch(arch_json)
    except MusicnasError as exc:
        raise MusicnasError(f"{where}: {exc}") from exc


def candidates_section(run: RunInputs | None) -> Section:
    title = "Top candidates"
    if run is None or not run.candidates:
        return Section(
            "candidates", title, note("No candidates.json: the table of top candidates is left out.")
        )
    path = run.root / "candidates.json"
    shown = run.candidates[:MAX_CANDIDATES]
    # Optional per-candidate numbers, shown when any candidate has them.
    extras = [
        k for k in ("accuracy", "search_accuracy") if any(as_number(c.get(k)) is not None for c in shown)
    ]
    rows = []
    for rank, cand in enumerate(shown, start=1):
        if not isinstance(cand.get("arch"), dict):
            raise MusicnasError(f"{path}: candidate {rank} has no 'arch' object")
        info = _describe(cand["arch"], f"{path} candidate {rank}")
        cost = cand.get("cost") if isinstance(cand.get("cost"), dict) else {}
        rows.append(
            [str(rank), fmt(cand.get("score")), *(fmt(cand.get(k, "")) for k in extras), fmt(cand.get("source", "")),
             fmt(cost.get("params", "")), fmt(cost.get("macs", "")), "<br>".join(f"<code>{esc(line)}</code>" for line in info.short_lines())]
        )  # fmt: skip
    headers = (
        "rank",
        "score",
        *(k.replace("_", " ") for k in extras),
        "source",
        "params",
        "MACs",
        "architecture",
    )
    n = len(extras)
    body = table(headers, rows, numeric={0, 1, *range(2, 2 + n), 3 + n, 4 + n})
    more = len(run.candidates) - MAX_CANDIDATES
    extra = f"<p>{more} more in candidates.json.</p>" if more > 0 else ""
    legend = (
        '<p class="meta">Scores are measured with the shared weights on validation batches. Ops: conv3/conv5 '
        "convolution, sep3/sep5 depthwise-separable, avg/max pooling, id identity; micro nodes are "
        "(input:op, input:op), inputs 0 and 1 being the previous two cells.</p>"
    )
    return Section("candidates", title, body + extra + legend)


def latency_section(run: RunInputs | None) -> Section | None:
    """Accuracy vs latency of every architecture scored while deriving (a latency-aware search only)."""
    scored = (run.derive or {}).get("scored") if run is not None else None
    points = [
        (float(e["latency_ms"]), float(e["accuracy"]))
        for e in scored or []
        if as_number(e.get("latency_ms")) is not None and as_number(e.get("accuracy")) is not None
    ]
    if not points:
        return None
    search_cfg = (run.config or {}).get("search", {})
    target = as_number(search_cfg.get("cost_target")) if search_cfg.get("cost_metric") == "latency" else None
    record = (run.arch or {}).get("latency") if isinstance(run.arch, dict) else None
    chosen = measured = None
    best = run.candidates[0] if run.candidates else None
    if isinstance(record, dict) and as_number(record.get("predicted_ms")) is not None and best is not None:
        chosen = (float(record["predicted_ms"]), float(best.get("accuracy", float("nan"))))
        measured = as_number(record.get("measured_ms"))
    png = plots.accuracy_vs_latency(points, target, chosen, measured)
    body = [image(png, "accuracy vs latency",
                  "Every architecture scored while deriving: validation accuracy with the shared weights "
                  "against latency predicted by the machine's latency table; the red steps are the Pareto "
                  "front, the green band the target ±10%.")]  # fmt: skip
    if isinstance(record, dict):
        m = record.get("measured") or {}
        machine = m.get("machine") or {}
        body.append(key_value_table([
            ("target (ms)", record.get("target_ms")), ("predicted (ms)", record.get("predicted_ms")),
            ("measured (ms, fastest run)", record.get("measured_ms")), ("measured IQR (ms)", m.get("iqr_ms")),
            ("measured vs target", record.get("measured_error")),
            ("machine drift (now / when the table was built)", record.get("drift_factor")),
            ("drift-corrected (ms)", record.get("corrected_ms")),
            ("drift-corrected vs target", record.get("corrected_error")), ("backend", m.get("backend")),
            ("threads", m.get("threads")), ("CPU", f"{machine.get('cpu')} ({machine.get('cores')} cores)"),
        ]))  # fmt: skip
    return Section("latency", "Accuracy vs latency", "\n".join(body))


def training_section(bundle: BundleInputs | None) -> Section:
    title = "Training curves"
    if bundle is None:
        return Section("training", title, note("No model directory: the training curves are left out."))
    best = None
    if bundle.summary:
        best = as_number(bundle.summary.get("best_epoch"))
    png = plots.training_curves(bundle.epochs, bundle.root, best_epoch=best)
    if png is None:
        return Section("training", title, note("The model's metrics_epochs.jsonl is missing or empty."))
    return Section(
        "training", title, image(png, "training curves", "Retraining from scratch; dashed: the epoch kept.")
    )


def _find_confusions(data: Any, path: str = "") -> list[tuple[str, np.ndarray]]:
    """Every square numeric matrix under a key naming a confusion matrix, e.g. evaluation["clip"]["confusion"]."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if "confusion" in str(key).lower() and isinstance(value, list):
                try:
                    matrix = np.asarray(value, dtype=float)
                except (TypeError, ValueError):
                    matrix = None
                if (
                    matrix is None
                    or matrix.ndim != 2
                    or matrix.shape[0] != matrix.shape[1]
                    or matrix.size == 0
                ):
                    raise MusicnasError(f"evaluation.json: {where} is not a square numeric matrix")
                found.append((where, matrix))
            elif isinstance(value, dict):
                found.extend(_find_confusions(value, where))
    return found


def _class_names(bundle: BundleInputs, k: int) -> list[str]:
    for source in (bundle.evaluation, bundle.bundle):
        if not isinstance(source, dict):
            continue
        for key in ("classes", "class_names", "labels"):
            names = source.get(key)
            if isinstance(names, list) and len(names) == k:
                return [str(n) for n in names]
    return [str(i) for i in range(k)]


def _confusion_title(where: str) -> str:
    return "Confusion matrix per track" if "track" in where.lower() else "Confusion matrix per clip"


def _per_class_table(per_class: dict) -> str | None:
    if not per_class or not all(isinstance(v, dict) for v in per_class.values()):
        return None
    columns: list[str] = []
    for metrics in per_class.values():
        columns += [k for k in metrics if k not in columns]
    rows = [[esc(name), *(fmt(m.get(c, "")) for c in columns)] for name, m in per_class.items()]
    return table(("class", *columns), rows, numeric=set(range(1, len(columns) + 1)))


def evaluation_section(bundle: BundleInputs | None) -> Section:
    title = "Evaluation"
    if bundle is None:
        return Section("evaluation", title, note("No model directory: the evaluation is left out."))
    if bundle.evaluation is None and bundle.confusion_png is None:
        return Section(
            "evaluation", title, note("No evaluation.json: run `musicnas evaluate --model DIR` first.")
        )
    body = []
    if bundle.evaluation is not None:
        evaluation = bundle.evaluation
        per_class = evaluation.get("per_class") if isinstance(evaluation.get("per_class"), dict) else None
        pairs = flatten_scalars({k: v for k, v in evaluation.items() if k != "per_class"}, depth=3)
        if pairs:
            body.append(key_value_table(pairs[:MAX_SUMMARY_ROWS]))
        per_class_html = _per_class_table(per_class) if per_class else None
        if per_class_html:
            body.append("<h3>Per class</h3>" + per_class_html)
        confusions = _find_confusions(evaluation)
        figures = []
        for where, matrix in confusions:
            names = _class_names(bundle, matrix.shape[0])
            label = _confusion_title(where)
            caption = f"evaluation.json: {where}. Colour: share of the true class; numbers: counts."
            if "track" in where.lower():
                caption += " A track's prediction averages its clips' logits."
            figures.append(image(plots.confusion_matrix(matrix, names, label), label, caption))
        if figures:
            body.append('<div class="row">' + "".join(figures) + "</div>")
        if confusions:
            return Section("evaluation", title, "\n".join(body))
        body.append(note("evaluation.json holds no confusion matrix."))
    if bundle.confusion_png is not None:
        body.append(
            image(bundle.confusion_png, "confusion matrix", "confusion.png as written by musicnas evaluate")
        )
    return Section("evaluation", title, "\n".join(body))


def _number_list(value, what: str) -> list[float]:
    if not isinstance(value, list) or not all(as_number(v) is not None for v in value):
        raise MusicnasError(f"ranking.json: {what!r} must be a list of numbers")
    return [float(v) for v in value]


def ranking_section(data: dict | None) -> Section | None:
    if data is None:
        return None
    shared = _number_list(data.get("shared"), "shared")
    standalone = _number_list(data.get("standalone"), "standalone")
    if len(shared) != len(standalone):
        raise MusicnasError(
            f"ranking.json: 'shared' has {len(shared)} values but 'standalone' has {len(standalone)}; they must pair up"
        )
    tau, p = as_number(data.get("kendall_tau")), as_number(data.get("p_value"))
    text = (
        f"<p>{len(shared)} architectures scored with the search's shared weights and retrained stand-alone. "
        f"Kendall tau {fmt(tau)} (p = {fmt(p)}): how well the search's ranking predicts the real one.</p>"
    )
    if isinstance(data.get("note"), str):
        text += note(data["note"])
    if not shared:
        return Section("ranking", "Ranking quality", text + note("ranking.json holds no architectures."))
    return Section(
        "ranking",
        "Ranking quality",
        text + image(plots.ranking_scatter(shared, standalone, tau, p), "ranking scatter"),
    )


def benchmark_section(rows: list[dict] | None) -> Section | None:
    if rows is None:
        return None
    if not rows:
        return Section("benchmark", "Benchmark", note("benchmark.json is empty."))
    # Columns in first-seen order; "x_mean"/"x_std" pairs merge into one "x" column shown as mean ± std.
    columns: list[str] = []
    for row in rows:
        for key in row:
            base = (
                key[: -len("_mean")]
                if key.endswith("_mean")
                else key[: -len("_std")]
                if key.endswith("_std")
                else key
            )
            if base not in columns:
                columns.append(base)

    def cell(row: dict, column: str) -> str:
        if column in row:
            return fmt(row[column])
        if f"{column}_mean" in row:
            return _mean_std(row[f"{column}_mean"], row.get(f"{column}_std"))
        return ""

    body = table(columns, ([cell(r, c) for c in columns] for r in rows), numeric=set(range(1, len(columns))))
    return Section(
        "benchmark", "Benchmark", body + '<p class="meta">mean &plusmn; standard deviation over seeds.</p>'
    )


def config_section(inputs: ReportInputs) -> Section | None:
    parts = []
    bundle = inputs.bundle
    for label, data in (
        ("search config.json", inputs.run.config if inputs.run else None),
        ("model bundle.json", _bundle_meta(bundle)),
        ("model train_config.json", bundle.train_config if bundle else None),
        # train_config.json holds the same training config; summary.json's copy is the fallback.
        ("model summary.json: config", _summary_config(bundle)),
    ):
        if data:
            parts.append(
                f"<details><summary>{esc(label)}</summary><pre>{esc(json.dumps(data, indent=2))}</pre></details>"
            )
    if not parts:
        return None
    return Section("config", "Configuration", "\n".join(parts))


def _summary_config(bundle: BundleInputs | None):
    if bundle is None or bundle.train_config or not bundle.summary:
        return None
    return bundle.summary.get("config")


def _bundle_meta(bundle: BundleInputs | None):
    if bundle is None or not bundle.bundle:
        return None
    # mean/std are n_mels numbers each: noise in a report.
    return {k: v for k, v in bundle.bundle.items() if k not in ("mean", "std")}


# ---------------------------------------------------------------- page


def build_sections(inputs: ReportInputs) -> list[Section]:
    """Sections in page order. They are built cheapest-first (tables before plots), so a malformed file
    stops the report before seconds go into drawing."""
    page_order = [
        "summary",
        "search",
        "architecture",
        "candidates",
        "latency",
        "training",
        "evaluation",
        "ranking",
        "benchmark",
        "config",
    ]
    builders: dict[str, Callable[[], Section | None]] = {
        "summary": lambda: summary_section(inputs),
        "candidates": lambda: candidates_section(inputs.run),
        "ranking": lambda: ranking_section(inputs.ranking),
        "benchmark": lambda: benchmark_section(inputs.benchmark),
        "config": lambda: config_section(inputs),
        "architecture": lambda: arch_section(inputs),
        "evaluation": lambda: evaluation_section(inputs.bundle),
        "training": lambda: training_section(inputs.bundle),
        "search": lambda: search_section(inputs.run),
        "latency": lambda: latency_section(inputs.run),
    }
    built = {}
    for name, build in builders.items():
        log.debug("report section %s", name)
        built[name] = build()
    return [built[name] for name in page_order if built[name] is not None]


def render_page(inputs: ReportInputs, title: str | None = None) -> str:
    sections = build_sections(inputs)
    title = title or f"musicnas report: {inputs.source.resolve().name}"
    notes = list(inputs.notes)
    for part in (inputs.run, inputs.bundle):
        if part is not None:
            notes.extend(part.notes)
    nav = " ".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="meta">Generated {esc(stamp)} by musicnas {esc(__version__)} from <code>{esc(inputs.source)}</code></p>',
            f"<nav>{nav}</nav>",
            *(note(n) for n in notes),
            *(s.render() for s in sections),
            "</body></html>",
        ]
    )
