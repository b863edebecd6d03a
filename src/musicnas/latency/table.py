"""The latency model: a per-machine lookup table of part latencies, summed, scaled, plus an overhead.

``predicted_ms(arch) = sum over groups g of scales[g] * sum(entry_ms[key] for key in parts(arch) in g)
+ overhead_ms``

Each entry is the latency of one part (:mod:`musicnas.latency.parts`) run alone with the backend and
thread count of the table, less the backend's per-call cost (``call_overhead_ms``, a trivial model's
latency), because a deployed network pays that once, not once per part. The parts, the trivial model
and the fitting architectures (whole random networks) are all timed in the same interleaved rounds
(:func:`musicnas.latency.measure.time_interleaved`), so they see the same machine states. The scales and
``overhead_ms`` are fitted on the fitting architectures (non-negative least squares, free overhead): they
absorb what parts run alone do not see (tensors moving between parts, the runtime's per-node work).
Groups: ``one`` (default) puts every part in one group, i.e. ``scale * sum + overhead``; ``per-kind``
fits one scale per kind of part (``op/<name>``, ``skip_mix``, ``reduce``, ``stem``, ``head``).

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
    DEFAULT_REFERENCES,
    DEFAULT_WARMUP,
    DriftCorrected,
    check_backend,
    deployed_from_arch,
    machine_info,
    machine_key,
    measure_drift_corrected,
    measure_many,
    prepare_module,
    summarise,
)
from musicnas.latency.parts import arch_part_keys, check_supported, space_parts
from musicnas.runtime import MusicnasError, make_generator
from musicnas.utils.io import atomic_write_json, read_json
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)

TABLE_FORMAT = "musicnas-latency-table"
# 2: entries and fit from interleaved back-to-back rounds, latency = fastest run; per-group scales
TABLE_VERSION = 2
DEFAULT_TABLE_RUNS = 200
DEFAULT_TABLE_ROUNDS = 10
DEFAULT_FIT_ARCHS = 20
FIT_GROUPS = ("one", "per-kind")
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
TIMING = {"gap_ms": DEFAULT_GAP_MS, "statistic": "min", "interleaved": True}


def part_kind(key: str) -> str:
    """``op/<name>`` for a layer's op, else the part's kind (``stem``, ``skip_mix``, ``reduce``, ``head``)."""
    head, _, rest = key.partition("/")
    return f"op/{rest.split('/', 1)[0]}" if head == "op" else head


def part_group(key: str, groups: str) -> str:
    if groups not in FIT_GROUPS:
        raise MusicnasError(f"unknown fit grouping {groups!r}: use one of {', '.join(FIT_GROUPS)}")
    return "all" if groups == "one" else part_kind(key)


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
    """One table: entries (ms per part key), fitted ``scales`` (per group of parts, see ``groups``) and
    ``overhead_ms``, and where it came from. A group without a fitted scale counts at scale 1."""

    space: object
    input_shape: tuple[int, int, int]
    num_classes: int
    backend: str
    threads: int
    entries: dict[str, float]
    scales: dict[str, float] = field(default_factory=dict)
    overhead_ms: float = 0.0
    call_overhead_ms: float = 0.0
    fit: dict = field(default_factory=dict)
    machine: dict = field(default_factory=machine_info)  # where the entries were measured
    path: Path | None = None
    groups: str = "one"

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

    def group_sums_ms(self, arch) -> dict[str, float]:
        """The entries of ``arch``'s parts summed per group (what the fit scales)."""
        keys = self.part_keys(arch)
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise MusicnasError(
                f"the latency table {self.path or ''} lacks {len(missing)} parts of this architecture "
                f"(e.g. {missing[0]}); rebuild it with `musicnas latency build-table`"
            )
        sums: dict[str, float] = {}
        for k in keys:
            group = part_group(k, self.groups)
            sums[group] = sums.get(group, 0.0) + self.entries[k]
        return sums

    def parts_sum_ms(self, arch) -> float:
        return float(sum(self.group_sums_ms(arch).values()))

    def predict(self, arch) -> float:
        """Predicted latency (ms) of ``arch``'s deployed network, batch 1, without the front end."""
        sums = self.group_sums_ms(arch)
        return float(sum(self.scales.get(g, 1.0) * v for g, v in sums.items()) + self.overhead_ms)

    def describe(self) -> dict:
        return {
            "path": str(self.path) if self.path else None,
            "backend": self.backend,
            "threads": self.threads,
            "entries": len(self.entries),
            "groups": self.groups,
            "scales": dict(self.scales),
            "overhead_ms": self.overhead_ms,
            "call_overhead_ms": self.call_overhead_ms,
            "fit_archs": len(self.fit.get("archs", [])),
            "machine": self.machine,
        }

    def to_record(self) -> dict:
        return {
            **self.signature,
            "entries": dict(sorted(self.entries.items())),
            "groups": self.groups,
            "scales": dict(sorted(self.scales.items())),
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
            f"{TABLE_VERSION} (its timing protocol and fit changed): rebuild it with "
            "`musicnas latency build-table`, or delete the file"
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
        scales={k: float(v) for k, v in record["scales"].items()},
        overhead_ms=float(record["overhead_ms"]),
        call_overhead_ms=float(record.get("call_overhead_ms", 0.0)),
        fit=record.get("fit", {}),
        machine=data.get("machine", {}),
        path=path,
        groups=record.get("groups", "one"),
    )


def fit_scales(features, measured_ms) -> tuple[np.ndarray, float]:
    """``measured ~ features @ scales + overhead`` with ``scales >= 0`` and a free ``overhead``
    (non-negative least squares on the centred rows). ``features`` is rows x groups (the per-group sums
    of part entries). A group whose sum does not vary over the rows (a part every architecture has, or
    a single row) cannot be told from the overhead: it keeps scale 1. A group the fit would zero keeps
    scale 1 too, and the rest is refitted: a part never costs nothing inside a network, and a scale of
    0 would make a latency-aware search see its op as free."""
    from scipy.optimize import nnls

    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    y = np.asarray(measured_ms, dtype=np.float64)
    if x.shape[0] != len(y) or len(y) == 0:
        raise MusicnasError(f"need one row of features per measurement, got {x.shape[0]} and {len(y)}")
    scales = np.ones(x.shape[1])
    free = np.ptp(x, axis=0) > 1e-9 * max(float(np.max(np.abs(x))), 1.0)
    while free.any():
        rest = y - x[:, ~free] @ scales[~free]
        xf = x[:, free]
        fitted, _ = nnls(xf - xf.mean(axis=0), rest - rest.mean())
        if np.all(fitted > 0):
            scales[free] = fitted
            break
        free[np.flatnonzero(free)[fitted <= 0]] = False
    overhead = float(np.mean(y - x @ scales))
    return scales, overhead


def fit_robust(rows: list[dict], groups: list[str], tolerance: float = 0.15, keep: int = 3):
    """:func:`fit_scales` on ``rows`` (``sums_ms`` per group, ``measured_ms``), then the worst-fitting row
    is left out and the fit redone while its relative residual exceeds ``tolerance`` and more than
    ``keep`` rows remain: on a shared machine one measurement slowed by another process would otherwise
    tilt every prediction. Left-out rows get ``"excluded": True``. Returns (scales per group, overhead)."""

    def features(rs):
        return np.array([[r["sums_ms"].get(g, 0.0) for g in groups] for r in rs]).reshape(
            len(rs), len(groups)
        )

    used = list(rows)
    while True:
        scales, overhead = fit_scales(features(used), [r["measured_ms"] for r in used])
        predicted = features(used) @ scales + overhead
        residual = np.abs(predicted / np.array([r["measured_ms"] for r in used]) - 1.0)
        worst = int(np.argmax(residual))
        if residual[worst] <= tolerance or len(used) <= keep:
            break
        used.pop(worst)
    for r in rows:
        r["excluded"] = not any(r is u for u in used)
    return dict(zip(groups, (float(v) for v in scales), strict=True)), overhead


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
    rounds: int = DEFAULT_TABLE_ROUNDS,
    groups: str = "one",
) -> LatencyModel:
    """Times every part of ``space``, a trivial model (the per-call cost) and ``fit_archs`` random
    architectures (drawn from ``seed``) whole, all in the same interleaved rounds, then fits the scales
    and overhead. Not saved: see :func:`save_model`."""
    check_backend(backend, threads)
    check_supported(space)
    part_group("", groups)  # a clear error for an unknown grouping before minutes of measuring
    input_shape = tuple(int(v) for v in input_shape)
    config = feature_config_for(input_shape, feature_config)
    parts = space_parts(space, input_shape, num_classes)
    calls = [prepare_module(torch.nn.ReLU(), (torch.ones(1, 1),), backend, threads)]
    for part in progress(parts, desc=f"latency table: export parts ({backend})", unit="part"):
        calls.append(prepare_module(*part.build(), backend, threads))
    archs = random_archs(space, fit_archs, seed)
    nets = [deployed_from_arch(arch, num_classes, config, input_shape[0]) for arch in archs]
    measured, times = measure_many(nets, backend, threads, runs=runs, warmup=warmup, rounds=rounds,
                                   seed=seed, extra=calls, desc="latency table")  # fmt: skip
    part_times = times[len(nets) :]
    call = summarise(part_times[0])["latency_ms"]
    entries: dict[str, float] = {}
    spread: dict[str, float] = {}
    for part, t in zip(parts, part_times[1:], strict=True):
        stats = summarise(t)
        entries[part.key] = max(stats["latency_ms"] - call, 0.0)
        spread[part.key] = stats["iqr_ms"]
    model = LatencyModel(space, input_shape, num_classes, backend, threads, entries, {}, 0.0, call,
                         machine=machine_info(), groups=groups)  # fmt: skip
    fit_rows = [
        {"flat": arch.to_flat(), "sums_ms": model.group_sums_ms(arch), "measured_ms": m.latency_ms,
         "median_ms": m.median_ms, "iqr_ms": m.iqr_ms}
        for arch, m in zip(archs, measured, strict=True)
    ]  # fmt: skip
    names = sorted({g for r in fit_rows for g in r["sums_ms"]})
    model.scales, model.overhead_ms = fit_robust(fit_rows, names) if fit_rows else ({}, call)
    model.fit = {
        "archs": fit_rows,
        "seed": seed,
        "runs": runs,
        "rounds": min(rounds, runs),
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


def repeatability(times_ms: np.ndarray) -> float:
    """Relative difference of the latency (fastest run) of the first and the second half of a network's
    timed runs, which are consecutive rounds: the measurement's own noise, as two measurements in a row."""
    half = len(times_ms) // 2
    return float(np.min(times_ms[:half]) / np.min(times_ms[half:]) - 1.0) if half else 0.0


def check_model(
    model: LatencyModel,
    n_archs: int = 50,
    seed: int = 1,
    runs: int = DEFAULT_TABLE_RUNS,
    warmup: int = DEFAULT_WARMUP,
    feature_config=None,
    rounds: int = DEFAULT_TABLE_ROUNDS,
) -> dict:
    """Predicted vs measured latency of ``n_archs`` random architectures (from ``seed``, a stream other
    than the fit's by default), measured in interleaved rounds. Returns per-architecture rows, the share
    within ±10%, and the measurement's own repeatability (the two halves of each network's runs)."""
    config = feature_config_for(model.input_shape, feature_config)
    archs = random_archs(model.space, n_archs, seed)
    nets = [deployed_from_arch(arch, model.num_classes, config, model.input_shape[0]) for arch in archs]
    measured, times = measure_many(nets, model.backend, model.threads, runs=runs, warmup=warmup,
                                   rounds=rounds, seed=seed, desc="latency check")  # fmt: skip
    rows = []
    for arch, m, t in zip(archs, measured, times, strict=True):
        predicted = model.predict(arch)
        rows.append({"arch": arch.key(), "flat": arch.to_flat(), "predicted_ms": predicted,
                     "measured_ms": m.latency_ms, "median_ms": m.median_ms, "iqr_ms": m.iqr_ms,
                     "error": predicted / m.latency_ms - 1.0, "halves_diff": repeatability(t)})  # fmt: skip
    errors = np.abs([r["error"] for r in rows])
    halves = np.abs([r["halves_diff"] for r in rows])
    return {
        "archs": len(rows),
        "within_10pct": float(np.mean(errors <= WITHIN)) if rows else 0.0,
        "mean_abs_error": float(np.mean(errors)) if rows else None,
        "median_abs_error": float(np.median(errors)) if rows else None,
        "max_abs_error": float(np.max(errors)) if rows else None,
        "measured_ms_range": [min(r["measured_ms"] for r in rows), max(r["measured_ms"] for r in rows)] if rows else None,
        "halves_within_10pct": float(np.mean(halves <= WITHIN)) if rows else None,
        "halves_median_diff": float(np.median(halves)) if rows else None,
        "seed": seed,
        "runs": runs,
        "rounds": min(rounds, runs),
        "table": model.describe(),
        "machine": machine_info(),
        "rows": rows,
    }  # fmt: skip


def reference_archs(model: LatencyModel, near_ms: float | None = None, n: int = DEFAULT_REFERENCES):
    """Up to ``n`` of the table's fitting architectures (those the fit kept) and their latency measured
    when the table was built, the references of a drift-corrected measurement: the ``n`` whose latency
    was nearest ``near_ms`` (networks of similar size slow down alike), else the first ``n``."""
    hint = "rebuild it with `musicnas latency build-table` (with --fit-archs >= 1)"
    rows = [r for r in model.fit.get("archs", []) if not r.get("excluded") and "flat" in r]
    if not rows:
        raise MusicnasError(
            f"the latency table {model.path or ''} has no fitting networks to serve as references for a "
            f"drift-corrected measurement; {hint}"
        )
    if n < 1:
        raise MusicnasError(f"need at least one reference network, got {n}")
    if near_ms is not None:
        rows = sorted(rows, key=lambda r: abs(float(r["measured_ms"]) - near_ms))
    from musicnas.spaces import get_space_module

    arch_type = get_space_module(model.space.type).Arch
    archs = [arch_type.from_flat(r["flat"], model.space) for r in rows[:n]]
    return archs, [float(r["measured_ms"]) for r in rows[:n]]


def measure_against_table(
    model: LatencyModel,
    net,
    sessions: int = 1,
    n_references: int = DEFAULT_REFERENCES,
    runs: int = DEFAULT_TABLE_RUNS,
    rounds: int = DEFAULT_TABLE_ROUNDS,
    measure=measure_many,
) -> DriftCorrected:
    """``net`` (a :class:`~musicnas.latency.measure.DeployedNet` without front end) measured with the
    table's backend, threads and protocol, interleaved with the table's fitting networks nearest its
    predicted latency, and corrected for the machine's drift since the table was built
    (:func:`~musicnas.latency.measure.measure_drift_corrected`): the corrected latency is the quantity
    the table predicts, the latency on the machine as it was when the table was built."""
    input_shape = tuple(int(v) for v in net.feature_config.input_shape)
    if input_shape != tuple(model.input_shape):
        raise MusicnasError(
            f"the network's input {input_shape} is not the latency table's {tuple(model.input_shape)}; "
            "pass the table built for this input"
        )
    near = model.predict(net.arch) if net.arch is not None and net.arch.space == model.space else None
    archs, known = reference_archs(model, near, n_references)
    refs = [deployed_from_arch(a, model.num_classes, net.feature_config, model.input_shape[0]) for a in archs]
    return measure_drift_corrected(net, refs, known, model.backend, model.threads, runs=runs, rounds=rounds,
                                   warmup=model.fit.get("warmup", DEFAULT_WARMUP), sessions=sessions,
                                   measure=measure)  # fmt: skip


def model_for_search(config, space, input_shape, num_classes: int, feature_config=None) -> LatencyModel:
    """The table a latency-aware search uses: ``config.latency_table`` or this machine's file; built
    (once, then cached) when it is missing, so ``--target-latency-ms`` works on a fresh machine. A table
    without fitting networks is refused: they are the references the derived network is measured with."""
    backend, threads = config.latency_backend, config.latency_threads
    path = Path(config.latency_table) if config.latency_table else default_table_path(backend, threads)
    try:
        model = load_model(space, input_shape, num_classes, backend, threads, path)
    except MusicnasError as exc:
        if path.is_file() and "has no table" not in str(exc):
            raise
    else:
        reference_archs(
            model
        )  # the derived network is measured against them: refuse now, not after the search
        return model
    log.info("no latency table for this space and input in %s: building it (once per machine)", path)
    model = build_model(space, input_shape, num_classes, backend, threads, feature_config=feature_config)
    save_model(model, path)
    return model
