"""The latency model: a per-machine lookup table of part latencies, summed, plus a fitted overhead.

``predicted_ms(arch) = scale * sum(entry_ms[key] for key in parts(arch)) + overhead_ms``

Each entry is the median latency of one part (:mod:`musicnas.latency.parts`) measured alone with the
backend and thread count of the table, less the backend's per-call cost (the median latency of a
trivial model, ``call_overhead_ms``), because a deployed network pays that once, not once per part.
``scale`` and ``overhead_ms`` are fitted by least squares on a handful of whole architectures measured
while the table is built: they absorb what parts measured alone do not see (tensors moving between
parts, caches, the runtime's scheduling).

Files: one versioned JSON per machine, backend and thread count under the user's cache,
``CACHE/latency/<cpu>-<cores>c-<backend>-t<threads>.json`` (``CACHE`` is ``$MUSICNAS_CACHE_DIR`` or
the platform's user cache folder, e.g. ``~/.cache/musicnas``). It holds one table per *signature*
(search space, input shape, number of classes), so several spaces share the machine's file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from musicnas.latency import DEFAULT_BACKEND, DEFAULT_THREADS
from musicnas.latency.measure import (
    DEFAULT_GAP_MS,
    DEFAULT_WARMUP,
    check_backend,
    deployed_from_arch,
    machine_info,
    machine_key,
    measure_deployed,
    summarise,
    time_module,
)
from musicnas.latency.parts import arch_part_keys, check_supported, space_parts
from musicnas.runtime import MusicnasError, make_generator
from musicnas.utils.io import atomic_write_json, read_json
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)

TABLE_FORMAT = "musicnas-latency-table"
TABLE_VERSION = 1
DEFAULT_TABLE_RUNS = 50
DEFAULT_FIT_ARCHS = 10
WITHIN = 0.10  # the check's tolerance: |predicted / measured - 1| <= 10%


def cache_root() -> Path:
    """``$MUSICNAS_CACHE_DIR``, else the platform's user cache folder for musicnas."""
    env = os.environ.get("MUSICNAS_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("musicnas"))


def default_table_path(backend: str = DEFAULT_BACKEND, threads: int = DEFAULT_THREADS) -> Path:
    return cache_root() / "latency" / f"{machine_key()}-{backend}-t{threads}.json"


# how entries and fitting runs are timed: a table timed otherwise is another table (rebuilt, not reused)
TIMING = {"gap_ms": DEFAULT_GAP_MS}


def signature(space, input_shape, num_classes: int) -> dict:
    return {
        "space": space.to_dict(),
        "input_shape": [int(v) for v in input_shape],
        "num_classes": int(num_classes),
        "timing": dict(TIMING),
    }


def signature_key(sig: dict) -> str:
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class LatencyModel:
    """One table: entries (ms per part key), fitted ``scale`` and ``overhead_ms``, and where it came from."""

    space: object
    input_shape: tuple[int, int, int]
    num_classes: int
    backend: str
    threads: int
    entries: dict[str, float]
    scale: float = 1.0
    overhead_ms: float = 0.0
    call_overhead_ms: float = 0.0
    fit: dict = field(default_factory=dict)
    machine: dict = field(default_factory=machine_info)  # where the entries were measured
    path: Path | None = None

    @property
    def signature(self) -> dict:
        return signature(self.space, self.input_shape, self.num_classes)

    def part_keys(self, arch) -> list[str]:
        if arch.space != self.space:
            raise MusicnasError(
                f"the latency table is for space {self.space.to_dict()}, not {arch.space.to_dict()}; "
                "build one for this space with `musicnas latency build-table`"
            )
        return arch_part_keys(arch, self.input_shape, self.num_classes)

    def parts_sum_ms(self, arch) -> float:
        keys = self.part_keys(arch)
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise MusicnasError(
                f"the latency table {self.path or ''} lacks {len(missing)} parts of this architecture "
                f"(e.g. {missing[0]}); rebuild it with `musicnas latency build-table`"
            )
        return float(sum(self.entries[k] for k in keys))

    def predict(self, arch) -> float:
        """Predicted latency (ms) of ``arch``'s deployed network, batch 1, without the front end."""
        return self.scale * self.parts_sum_ms(arch) + self.overhead_ms

    def describe(self) -> dict:
        return {
            "path": str(self.path) if self.path else None,
            "backend": self.backend,
            "threads": self.threads,
            "entries": len(self.entries),
            "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "call_overhead_ms": self.call_overhead_ms,
            "fit_archs": len(self.fit.get("archs", [])),
            "machine": self.machine,
        }

    def to_record(self) -> dict:
        return {
            **self.signature,
            "entries": dict(sorted(self.entries.items())),
            "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "call_overhead_ms": self.call_overhead_ms,
            "fit": self.fit,
        }


def _read_file(path: Path) -> dict:
    data = read_json(path, what="latency table")
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise MusicnasError(f"{path} is not a musicnas latency table; delete it or pass another --table")
    if data.get("version") != TABLE_VERSION:
        raise MusicnasError(
            f"{path} is a latency table of version {data.get('version')!r}; this musicnas reads version "
            f"{TABLE_VERSION}: rebuild it with `musicnas latency build-table`"
        )
    return data


def save_model(model: LatencyModel, path: Path | None = None) -> Path:
    """Adds (or replaces) ``model``'s table in the machine's file, atomically."""
    path = Path(path or model.path or default_table_path(model.backend, model.threads))
    data = (
        _read_file(path)
        if path.is_file()
        else {"format": TABLE_FORMAT, "version": TABLE_VERSION, "backend": model.backend, "threads": model.threads, "tables": {}}
    )  # fmt: skip
    if data.get("backend") != model.backend or data.get("threads") != model.threads:
        raise MusicnasError(
            f"{path} holds tables for {data.get('backend')} with {data.get('threads')} threads, not "
            f"{model.backend} with {model.threads}; pass another --table"
        )
    data["machine"] = model.machine
    data["tables"][signature_key(model.signature)] = model.to_record()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)
    model.path = path
    return path


def load_model(
    space, input_shape, num_classes: int, backend: str = DEFAULT_BACKEND, threads: int = DEFAULT_THREADS,
    path=None,
) -> LatencyModel:  # fmt: skip
    """The table for this space, input and class count from ``path`` (default: this machine's file)."""
    check_backend(backend, threads)
    path = Path(path or default_table_path(backend, threads))
    hint = (
        f"build it with `musicnas latency build-table --backend {backend} --threads {threads}` "
        "(with the same space options and input)"
    )
    if not path.is_file():
        raise MusicnasError(f"no latency table at {path}; {hint}")
    data = _read_file(path)
    if data.get("backend") != backend or data.get("threads") != threads:
        raise MusicnasError(
            f"{path} is a table for {data.get('backend')} with {data.get('threads')} threads, "
            f"not {backend} with {threads}; {hint}"
        )
    sig = signature(space, input_shape, num_classes)
    record = data.get("tables", {}).get(signature_key(sig))
    if record is None:
        raise MusicnasError(
            f"{path} has no table for space {sig['space']}, input {sig['input_shape']}, "
            f"{sig['num_classes']} classes; {hint}"
        )
    here = machine_info()
    if data.get("machine", {}).get("cpu") != here["cpu"]:
        log.warning("latency table %s was built on %s, this is %s", path, data.get("machine"), here["cpu"])
    return LatencyModel(
        space=space,
        input_shape=tuple(sig["input_shape"]),
        num_classes=int(num_classes),
        backend=backend,
        threads=threads,
        entries={k: float(v) for k, v in record["entries"].items()},
        scale=float(record["scale"]),
        overhead_ms=float(record["overhead_ms"]),
        call_overhead_ms=float(record.get("call_overhead_ms", 0.0)),
        fit=record.get("fit", {}),
        machine=data.get("machine", {}),
        path=path,
    )


def fit_scale_overhead(sums_ms, measured_ms) -> tuple[float, float]:
    """Least squares ``measured = scale * sum + overhead``; falls back to the mean difference (scale 1)
    when the sums do not vary (one architecture, or all alike)."""
    sums = np.asarray(sums_ms, dtype=np.float64)
    measured = np.asarray(measured_ms, dtype=np.float64)
    if len(sums) < 2 or float(np.ptp(sums)) <= 1e-9 * max(float(np.max(np.abs(sums))), 1.0):
        return 1.0, float(np.mean(measured - sums))
    a = np.stack([sums, np.ones_like(sums)], axis=1)
    (scale, overhead), *_ = np.linalg.lstsq(a, measured, rcond=None)
    if not scale > 0:  # a degenerate fit (noise swamping the spread): keep the sum's own scale
        return 1.0, float(np.mean(measured - sums))
    return float(scale), float(overhead)


def fit_robust(rows: list[dict], tolerance: float = 0.15, keep: int = 3) -> tuple[float, float]:
    """:func:`fit_scale_overhead` on ``rows`` (``sum_ms``, ``measured_ms``), then the worst-fitting row
    is left out and the fit redone while its relative residual exceeds ``tolerance`` and more than
    ``keep`` rows remain: on a shared machine one measurement slowed by another process would otherwise
    tilt the line for every prediction. Left-out rows get ``"excluded": True``."""
    used = list(rows)
    while True:
        scale, overhead = fit_scale_overhead([r["sum_ms"] for r in used], [r["measured_ms"] for r in used])
        residual = [abs((scale * r["sum_ms"] + overhead) / r["measured_ms"] - 1.0) for r in used]
        worst = int(np.argmax(residual))
        if residual[worst] <= tolerance or len(used) <= keep:
            break
        used.pop(worst)
    for r in rows:
        r["excluded"] = not any(r is u for u in used)
    return scale, overhead


def random_archs(space, n: int, seed: int) -> list:
    """``n`` architectures drawn uniformly (distinct while the space allows), from ``seed``."""
    gen = make_generator(seed)
    archs: dict[str, object] = {}
    tries = 0
    while len(archs) < n and tries < 50 * n:
        arch = space.sample(gen)
        archs.setdefault(arch.key(), arch)
        tries += 1
    return list(archs.values())


def _call_overhead_ms(backend: str, threads: int, runs: int, warmup: int) -> float:
    """Median latency of a trivial model (ReLU of one number): the backend's per-call cost."""
    times = time_module(torch.nn.ReLU(), (torch.ones(1, 1),), backend, threads, max(runs, 50), warmup)
    return summarise(times)["median_ms"]


def build_model(
    space,
    input_shape,
    num_classes: int,
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    runs: int = DEFAULT_TABLE_RUNS,
    warmup: int = DEFAULT_WARMUP,
    fit_archs: int = DEFAULT_FIT_ARCHS,
    seed: int = 0,
    feature_config=None,
) -> LatencyModel:
    """Measures every part of ``space`` and fits scale and overhead on ``fit_archs`` random
    architectures (drawn from ``seed``) measured whole. Not saved: see :func:`save_model`."""
    check_backend(backend, threads)
    check_supported(space)
    input_shape = tuple(int(v) for v in input_shape)
    config = feature_config_for(input_shape, feature_config)
    call = _call_overhead_ms(backend, threads, runs, warmup)
    entries: dict[str, float] = {}
    spread: dict[str, float] = {}
    parts = space_parts(space, input_shape, num_classes)
    for part in progress(parts, desc=f"latency table ({backend}, {threads} thr)", unit="part"):
        module, inputs = part.build()
        stats = summarise(time_module(module, inputs, backend, threads, runs, warmup))
        entries[part.key] = max(stats["median_ms"] - call, 0.0)
        spread[part.key] = stats["iqr_ms"]
    model = LatencyModel(space, input_shape, num_classes, backend, threads, entries, 1.0, 0.0, call,
                         machine=machine_info())  # fmt: skip
    fit_rows = []
    for arch in progress(random_archs(space, fit_archs, seed), desc="fit overhead", unit="arch"):
        m = measure_deployed(deployed_from_arch(arch, num_classes, config, input_shape[0]), backend,
                             threads, runs=max(runs, 50), warmup=warmup)  # fmt: skip
        fit_rows.append({"flat": arch.to_flat(), "sum_ms": model.parts_sum_ms(arch), "measured_ms": m.median_ms,
                         "iqr_ms": m.iqr_ms})  # fmt: skip
    scale, overhead = fit_robust(fit_rows) if fit_rows else (1.0, call)
    model.scale, model.overhead_ms = scale, overhead
    model.fit = {
        "archs": fit_rows,
        "seed": seed,
        "runs": runs,
        "warmup": warmup,
        "gap_ms": DEFAULT_GAP_MS,
        "entry_iqr_ms": dict(sorted(spread.items())),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return model


def feature_config_for(input_shape, feature_config=None):
    """Feature options whose ``input_shape`` is ``input_shape`` (the exporter builds inputs from them)."""
    from musicnas.data.features import FeatureConfig

    config = feature_config or FeatureConfig()
    if tuple(config.input_shape) != tuple(input_shape):
        raise MusicnasError(
            f"input shape {tuple(input_shape)} does not match the feature options' {tuple(config.input_shape)}; "
            "pass the feature options of the data (or the default input 1x64x94)"
        )
    return config


def check_model(
    model: LatencyModel,
    n_archs: int = 50,
    seed: int = 1,
    runs: int = DEFAULT_TABLE_RUNS,
    warmup: int = DEFAULT_WARMUP,
    feature_config=None,
) -> dict:
    """Predicted vs measured latency of ``n_archs`` random architectures (from ``seed``, a stream other
    than the fit's by default). Returns per-architecture rows and the share within ±10%."""
    config = feature_config_for(model.input_shape, feature_config)
    rows = []
    for arch in progress(random_archs(model.space, n_archs, seed), desc="latency check", unit="arch"):
        predicted = model.predict(arch)
        m = measure_deployed(deployed_from_arch(arch, model.num_classes, config, model.input_shape[0]),
                             model.backend, model.threads, runs=max(runs, 50), warmup=warmup)  # fmt: skip
        rows.append({"arch": arch.key(), "flat": arch.to_flat(), "predicted_ms": predicted,
                     "measured_ms": m.median_ms, "iqr_ms": m.iqr_ms,
                     "error": predicted / m.median_ms - 1.0})  # fmt: skip
    errors = np.abs([r["error"] for r in rows])
    return {
        "archs": len(rows),
        "within_10pct": float(np.mean(errors <= WITHIN)) if rows else 0.0,
        "mean_abs_error": float(np.mean(errors)) if rows else None,
        "median_abs_error": float(np.median(errors)) if rows else None,
        "max_abs_error": float(np.max(errors)) if rows else None,
        "measured_ms_range": [min(r["measured_ms"] for r in rows), max(r["measured_ms"] for r in rows)] if rows else None,
        "seed": seed,
        "runs": max(runs, 50),
        "table": model.describe(),
        "machine": machine_info(),
        "rows": rows,
    }  # fmt: skip


def model_for_search(config, space, input_shape, num_classes: int, feature_config=None) -> LatencyModel:
    """The table a latency-aware search uses: ``config.latency_table`` or this machine's file; built
    (once, then cached) when it is missing, so ``--target-latency-ms`` works on a fresh machine."""
    backend, threads = config.latency_backend, config.latency_threads
    path = Path(config.latency_table) if config.latency_table else default_table_path(backend, threads)
    try:
        return load_model(space, input_shape, num_classes, backend, threads, path)
    except MusicnasError as exc:
        if path.is_file() and "has no table" not in str(exc):
            raise
    log.info("no latency table for this space and input in %s: building it (once per machine)", path)
    model = build_model(space, input_shape, num_classes, backend, threads, feature_config=feature_config)
    save_model(model, path)
    return model
