"""The model card of a bundle: ``MODEL/README.md`` with YAML front matter (the Hugging Face Hub layout).

The front matter holds ``library_name: musicnas``, ``pipeline_tag: audio-classification``, the classes,
the metrics (each with its split and the seeds behind it), parameters, MACs, the measured latencies
(backend, threads, CPU), and the search's config and seed when the architecture came from a search.
It is written from the bundle's own files, so it can always be rewritten:

* ``bundle.json`` (classes, features), ``summary.json`` (metrics, seed, params, MACs, training config);
* ``latency.json`` (``musicnas latency MODEL_DIR --save``, and ``musicnas train`` by default);
* ``search.json`` (the search run the architecture came from: written by ``musicnas train --arch
  RUN/arch.json``).

The YAML is emitted by hand in a small subset (block mappings and sequences, every scalar in JSON
syntax, which YAML 1.2 reads as is), so no YAML library is needed to write it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from musicnas.runtime import MusicnasError
from musicnas.utils.io import atomic_write_json, atomic_write_text, read_json

CARD_FILE = "README.md"
LATENCY_FILE = "latency.json"
SEARCH_FILE = "search.json"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
HEADLINE_METRICS = ("clip_accuracy", "file_accuracy", "track_accuracy", "macro_f1")


def _key(key) -> str:
    key = str(key)
    return key if _PLAIN_KEY.match(key) else json.dumps(key)


def _scalar(value) -> str:
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):  # NaN and inf have no JSON form
            return "null"
        return json.dumps(value)
    raise TypeError(f"not a YAML scalar: {value!r}")


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def to_yaml(data: dict, indent: int = 0) -> str:
    """Block-style YAML of a JSON-like dict; lists of scalars are written in flow style ``[a, b]``."""
    pad = " " * indent
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            if value:
                lines.append(f"{pad}{_key(key)}:")
                lines.append(to_yaml(value, indent + 2))
            else:
                lines.append(f"{pad}{_key(key)}: {{}}")
        elif isinstance(value, (list, tuple)):
            if all(_is_scalar(v) for v in value):
                lines.append(f"{pad}{_key(key)}: [{', '.join(_scalar(v) for v in value)}]")
            else:
                lines.append(f"{pad}{_key(key)}:")
                for item in value:
                    if not isinstance(item, dict) or not item:
                        raise TypeError(f"{key}: lists must hold only scalars or only non-empty mappings")
                    block = to_yaml(item, indent + 4).splitlines()
                    lines.append(f"{pad}  - {block[0].lstrip()}")
                    lines.extend(block[1:])
        else:
            lines.append(f"{pad}{_key(key)}: {_scalar(value)}")
    return "\n".join(lines)


def _optional_json(path: Path, what: str):
    if not path.is_file():
        return None
    try:
        return read_json(path, what=what)
    except MusicnasError:
        return None  # the card is informative; a broken side file must not block writing the bundle


def _metrics(summary: dict | None) -> list[dict]:
    if not summary:
        return []
    seeds = [summary["seed"]] if isinstance(summary.get("seed"), int) else []
    out = []
    for split in ("val", "test"):
        block = summary.get(split)
        if not isinstance(block, dict):
            continue
        for name in HEADLINE_METRICS:
            if isinstance(block.get(name), (int, float)):
                out.append({"name": name, "split": split, "value": float(block[name]), "seeds": seeds,
                            "clips": block.get("clips")})  # fmt: skip
    return out


def _ms(value) -> str:
    # measurements recorded before latency_ms existed have none
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _latencies(latency: dict | None) -> list[dict]:
    rows = []
    for m in (latency or {}).get("measurements", []):
        machine = m.get("machine") or {}
        rows.append({
            "latency_ms": m.get("latency_ms"), "median_ms": m.get("median_ms"), "iqr_ms": m.get("iqr_ms"),
            "runs": m.get("runs"),
            "batch": m.get("batch", 1), "backend": m.get("backend"), "threads": m.get("threads"),
            "with_frontend": bool(m.get("with_frontend")), "cpu": machine.get("cpu"),
            "cores": machine.get("cores"),
        })  # fmt: skip
    return rows


def card_metadata(bundle_dir) -> dict:
    """The front matter of the bundle's model card (a JSON-like dict)."""
    root = Path(bundle_dir)
    bundle = read_json(root / "bundle.json", what="bundle description")
    summary = _optional_json(root / "summary.json", "training summary")
    latency = _optional_json(root / LATENCY_FILE, "latency record")
    search = _optional_json(root / SEARCH_FILE, "search provenance")
    cost = (summary or {}).get("cost") or {}
    meta: dict = {
        "library_name": "musicnas",
        "pipeline_tag": "audio-classification",
        "tags": ["musicnas", "audio-classification", "music", "neural-architecture-search"],
        "model_type": bundle.get("model", {}).get("type"),
        "classes": list(bundle.get("classes", [])),
        "metrics": _metrics(summary),
        "params": cost.get("params"),
        "macs": cost.get("macs"),
        "latency": _latencies(latency),
        "features": {k: v for k, v in (bundle.get("features") or {}).items() if _is_scalar(v)},
    }
    if summary and isinstance(summary.get("seed"), int):
        meta["training"] = {"seed": summary["seed"], "epochs": summary.get("epochs"),
                            "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch")}  # fmt: skip
    if summary and summary.get("search_run"):
        meta["source"] = summary.get("source")
    if search:
        config = {k: v for k, v in (search.get("config") or {}).items() if v is not None}
        meta["search"] = {"run": search.get("run"), "seed": search.get("seed"), "config": config}
        if search.get("arch_latency"):
            meta["search"]["arch_latency"] = search["arch_latency"]
    return meta


def _body(meta: dict, root: Path) -> str:
    lines = [f"# {root.name}: a musicnas music classifier", ""]
    lines.append(
        f"A {meta.get('model_type')} network found and trained with musicnas "
        f"({len(meta['classes'])} classes: {', '.join(meta['classes'])})."
    )
    lines += ["", "```python", "import musicnas", "", f'model = musicnas.load("{root.name}")',
              'print(model.predict("song.wav").top)', "```", ""]  # fmt: skip
    if meta["metrics"]:
        lines += ["## Metrics", "", "| metric | split | value | seeds |", "|---|---|---|---|"]
        lines += [
            f"| {m['name']} | {m['split']} | {m['value']:.4f} | {m['seeds']} |" for m in meta["metrics"]
        ]
        lines.append("")
    lines += [f"Parameters: {meta['params']}; MACs per clip: {meta['macs']}.", ""]
    if meta["latency"]:
        lines += ["## Latency (batch 1, measured)", "",
                  "| latency ms (fastest run) | median ms | IQR ms | backend | threads | front end | CPU |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {_ms(r['latency_ms'])} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {r['backend']} | {r['threads']} | "
                  f"{'yes' if r['with_frontend'] else 'no'} | {r['cpu']} ({r['cores']} cores) |" for r in meta["latency"]]  # fmt: skip
        lines.append("")
    else:
        lines += ["Latency not measured yet: `musicnas latency MODEL_DIR --save`.", ""]
    if "search" in meta:
        lines += [f"Architecture from the search run `{meta['search']['run']}` (seed {meta['search']['seed']}); "
                  "its config is in the front matter.", ""]  # fmt: skip
    return "\n".join(lines)


def model_card(bundle_dir) -> str:
    meta = card_metadata(bundle_dir)
    return f"---\n{to_yaml(meta)}\n---\n\n{_body(meta, Path(bundle_dir))}"


def write_model_card(bundle_dir) -> Path:
    path = Path(bundle_dir) / CARD_FILE
    atomic_write_text(path, model_card(bundle_dir))
    return path


def record_latency(bundle_dir, measurement: dict) -> None:
    """Adds a measurement to ``latency.json`` (replacing one with the same backend, threads and front
    end setting) and rewrites the model card."""
    path = Path(bundle_dir) / LATENCY_FILE
    record = _optional_json(path, "latency record") or {}
    same = ("backend", "threads", "with_frontend")
    rows = [m for m in record.get("measurements", []) if any(m.get(k) != measurement.get(k) for k in same)]
    atomic_write_json(path, {"measurements": [*rows, measurement]})
    write_model_card(bundle_dir)


def record_search_provenance(bundle_dir, arch_path) -> bool:
    """Writes ``search.json`` when ``arch_path`` lies in a search run (its folder has the run's
    config.json); returns whether it did."""
    arch_path = Path(arch_path)
    config = _optional_json(arch_path.parent / "config.json", "search run config")
    if not isinstance(config, dict) or config.get("format") != "musicnas-search-config":
        return False
    arch_json = _optional_json(arch_path, "architecture") or {}
    search = config.get("search") or {}
    atomic_write_json(
        Path(bundle_dir) / SEARCH_FILE,
        {"run": str(arch_path.parent), "seed": search.get("seed"), "config": search,
         "arch_latency": arch_json.get("latency")},
    )  # fmt: skip
    return True
