"""Measured latency of a network as deployed: batch 1, N intra-op threads, warm-up, then the median and
interquartile range of repeated runs.

Two backends:

* ``onnxruntime``: the model exported by :func:`musicnas.export.formats.export_onnx` (the same exporter
  and check as ``musicnas export``) run by an onnxruntime CPU session with ``intra_op_num_threads = N``,
  sequential execution and every graph optimisation on (what a deployment gets by default);
* ``torch``: the PyTorch module in eager mode under ``torch.inference_mode()`` with
  ``torch.set_num_threads(N)`` (restored afterwards).

With ``with_frontend`` the input is a waveform clip and the model includes the log-mel front end and the
bundle's normalisation (the DFT-as-conv front end in ONNX, ``torch.stft`` in PyTorch); without it the
input is a log-mel feature tensor ``[1, 1, n_mels, frames]``. Weights do not change latency, so an
architecture is measured with freshly initialised weights.

:func:`measure_drift_corrected` measures a network interleaved with reference networks of known latency
and corrects its latency for the machine's drift since they were measured (:class:`DriftCorrected`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import numpy as np
import torch
from torch import nn

from musicnas.latency import BACKENDS, DEFAULT_BACKEND, DEFAULT_THREADS
from musicnas.runtime import MusicnasError
from musicnas.utils.logging import progress

DEFAULT_RUNS = 100
MIN_RUNS = 50  # the CLI's floor: fewer runs make the median and IQR too noisy to compare
DEFAULT_WARMUP = 10
DEFAULT_GAP_MS = 0.0  # sleep before each timed run (see time_interleaved)
DEFAULT_ROUNDS = 5  # timed runs are spread over this many rounds (see time_interleaved)
ROUND_WARMUP = 2  # untimed calls at the start of each later round
INIT_SEED = 0  # weights of a measured architecture (latency does not depend on them)


def machine_info() -> dict:
    """The machine a latency was measured on: CPU model, logical cores, cores this process may use."""
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu or platform.processor() or platform.machine() or "unknown",
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "system": f"{platform.system()} {platform.machine()}",
    }


def machine_key(machine: dict | None = None) -> str:
    """A file-name-safe name of the machine (CPU model and core count) for the table's cache file."""
    m = machine or machine_info()
    text = f"{m['cpu']}-{m['cores']}c".lower()
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").replace("--", "-")[:80]


def check_backend(backend: str, threads: int) -> None:
    if backend not in BACKENDS:
        raise MusicnasError(f"unknown latency backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise MusicnasError(f"latency threads must be a positive integer, got {threads!r}")


@dataclass
class Measurement:
    """Latency of one network: ``latency_ms`` (the fastest of ``runs`` timed calls spread over ``rounds``
    rounds, the protocol's estimate, see :func:`summarise`), and their median and IQR."""

    latency_ms: float
    median_ms: float
    iqr_ms: float
    runs: int
    warmup: int
    backend: str
    threads: int
    input: dict
    with_frontend: bool = False
    machine: dict = field(default_factory=machine_info)
    p25_ms: float = 0.0
    p75_ms: float = 0.0
    min_ms: float = 0.0
    gap_ms: float = DEFAULT_GAP_MS
    rounds: int = DEFAULT_ROUNDS

    @classmethod
    def from_times(cls, times_ms: np.ndarray, **fields) -> Measurement:
        return cls(**summarise(times_ms), runs=len(times_ms), **fields)

    def to_dict(self) -> dict:
        return {
            "latency_ms": self.latency_ms,
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "p25_ms": self.p25_ms,
            "p75_ms": self.p75_ms,
            "min_ms": self.min_ms,
            "runs": self.runs,
            "warmup": self.warmup,
            "gap_ms": self.gap_ms,
            "rounds": self.rounds,
            "batch": 1,
            "backend": self.backend,
            "threads": self.threads,
            "with_frontend": self.with_frontend,
            "input": self.input,
            "machine": self.machine,
            "versions": _versions(self.backend),
        }


def _versions(backend: str) -> dict:
    out = {"torch": torch.__version__}
    if backend == "onnxruntime":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


def time_interleaved(
    fns: Sequence[Callable[[], object]],
    runs: int,
    warmup: int = DEFAULT_WARMUP,
    rounds: int = DEFAULT_ROUNDS,
    gap_ms: float = DEFAULT_GAP_MS,
    seed: int = 0,
    desc: str | None = None,
) -> list[np.ndarray]:
    """Wall-clock milliseconds of ``runs`` timed calls of each of ``fns``, taken in ``rounds`` rounds:
    in each round every function (in a seeded random order) gets untimed calls (``warmup`` in the first
    round, :data:`ROUND_WARMUP` later: the others' calls in between have evicted its data from the
    caches), then its share of the timed calls back to back (``gap_ms`` of sleep before each, 0 by
    default).

    Why rounds: on a shared machine the speed of the CPU drifts by tens of percent over seconds (other
    processes' memory traffic, preemption, the hypervisor). Spreading each network's runs over the whole
    measurement, interleaved with the others', makes every network see the same mix of machine states, so
    the networks measured together (a table's parts and its fitting networks, a check's networks) are
    comparable. Why back to back: a part timed after a sleep starts with cold caches, a layer inside a
    network does not (see docs/latency.md)."""
    if runs < 1 or warmup < 0 or gap_ms < 0 or rounds < 1:
        raise MusicnasError(
            f"need runs >= 1, warmup >= 0, gap >= 0, rounds >= 1; got {runs}, {warmup}, {gap_ms}, {rounds}"
        )
    rounds = min(rounds, runs)
    shares = [len(chunk) for chunk in np.array_split(np.arange(runs), rounds)]
    times = [np.empty(runs, dtype=np.float64) for _ in fns]
    filled = [0] * len(fns)
    clock = time.perf_counter_ns
    gap = gap_ms / 1000.0
    order_rng = np.random.default_rng(seed)
    for r, share in enumerate(progress(shares, desc=f"{desc}: timing", unit="round", disable=desc is None)):
        for i in order_rng.permutation(len(fns)):
            fn, out = fns[i], times[i]
            for _ in range(warmup if r == 0 else min(warmup, ROUND_WARMUP)):
                fn()
            for _ in range(share):
                if gap:
                    time.sleep(gap)
                start = clock()
                fn()
                out[filled[i]] = (clock() - start) / 1e6
                filled[i] += 1
    return times


def time_calls(
    fn: Callable[[], object],
    runs: int,
    warmup: int = DEFAULT_WARMUP,
    gap_ms: float = DEFAULT_GAP_MS,
    rounds: int = 1,
) -> np.ndarray:
    """:func:`time_interleaved` of one function."""
    return time_interleaved([fn], runs, warmup, rounds, gap_ms)[0]


def summarise(times_ms: np.ndarray) -> dict:
    """The figures of a measurement. ``latency_ms``, the protocol's estimate, is the fastest timed run:
    other processes only ever add time to a run, so on a shared machine the median measures the load as
    much as the network, while the minimum over runs spread across the measurement is the most repeatable
    figure (docs/latency.md has the comparison); on a quiet machine the two are close."""
    p25, median, p75 = np.percentile(times_ms, [25, 50, 75])
    return {
        "latency_ms": float(np.min(times_ms)),
        "median_ms": float(median),
        "iqr_ms": float(p75 - p25),
        "p25_ms": float(p25),
        "p75_ms": float(p75),
        "min_ms": float(np.min(times_ms)),
    }


@contextlib.contextmanager
def torch_threads(n: int):
    """``torch.set_num_threads(n)`` for the block, the previous count restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnx_session(path, threads: int):
    """An onnxruntime CPU session: ``threads`` intra-op threads, sequential, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's concern
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timing_context(backend: str, threads: int):
    """What the timed calls of ``backend`` run under: for torch, ``threads`` threads and inference mode
    (onnxruntime sessions carry their thread count)."""
    if backend != "torch":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch_threads(threads))
    stack.enter_context(torch.inference_mode())
    return stack


def prepare_module(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
) -> Callable[[], object]:  # fmt: skip
    """A call of ``module(*inputs)`` as ``backend`` runs it: exported to ONNX and run by an onnxruntime
    session, or eager PyTorch (time it under :func:`timing_context`). Used for the table's parts
    (several inputs allowed); :func:`prepare_deployed` for whole networks."""
    check_backend(backend, threads)
    module = module.cpu().eval()
    inputs = tuple(x.detach().cpu().contiguous() for x in inputs)
    if backend == "torch":
        return lambda: module(*inputs)
    from musicnas.export.formats import write_onnx

    names = [f"x{i}" for i in range(len(inputs))]
    with tempfile.TemporaryDirectory(prefix="musicnas-latency-") as tmp:
        path = Path(tmp) / "part.onnx"
        write_onnx(module, inputs, path, names, output_names=("y",), dynamic_batch=False)
        session = onnx_session(path, threads)
    feeds = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
    return lambda: session.run(None, feeds)


def time_module(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    gap_ms: float = DEFAULT_GAP_MS,
    rounds: int = DEFAULT_ROUNDS,
) -> np.ndarray:
    """Timings (ms) of ``module(*inputs)`` with ``backend`` (see :func:`prepare_module`)."""
    fn = prepare_module(module, inputs, backend, threads)
    with timing_context(backend, threads):
        return time_calls(fn, runs, warmup, gap_ms, rounds)


@dataclass
class DeployedNet:
    """What the exporter needs of a model (the attributes of a :class:`~musicnas.export.classifier.Classifier`):
    the network, its feature options and normalisation. Built from a bundle or from an architecture."""

    model: nn.Module
    feature_config: object
    mean: torch.Tensor
    std: torch.Tensor
    source: str
    arch: object = None
    num_classes: int | None = None


def deployed_from_arch(arch, num_classes: int = 10, feature_config=None, in_channels: int = 1) -> DeployedNet:
    """The fixed network ``musicnas train`` builds for ``arch``, freshly initialised (in a forked RNG
    scope, so measuring never consumes the caller's global torch RNG), with identity normalisation."""
    from musicnas.data.features import FeatureConfig
    from musicnas.spaces import get_space_module

    config = feature_config or FeatureConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = get_space_module(arch.space.type).FixedNet(
            arch, in_channels=in_channels, num_classes=num_classes
        )
    model.eval()
    n_mels = config.n_mels
    return DeployedNet(
        model, config, torch.zeros(n_mels), torch.ones(n_mels), "architecture", arch, num_classes
    )


def deployed_from_path(path, num_classes: int = 10) -> DeployedNet:
    """A model bundle folder (its trained network) or an architecture JSON file (untrained)."""
    path = Path(path)
    if path.is_dir():
        from musicnas.export.bundle import load_bundle

        clf = load_bundle(path, device="cpu")
        return DeployedNet(clf.model, clf.feature_config, clf.mean, clf.std, f"bundle {path}", clf.arch,
                           len(clf.classes))  # fmt: skip
    if not path.is_file():
        raise MusicnasError(f"{path} is neither an architecture JSON file nor a model bundle folder")
    from musicnas.spaces import load_arch

    arch = load_arch(path)
    deployed = deployed_from_arch(arch, num_classes=num_classes)
    deployed.source = f"architecture {path}"
    return deployed


def prepare_deployed(
    net: DeployedNet,
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    with_frontend: bool = False,
) -> tuple[Callable[[], object], dict]:
    """A batch-1 call of ``net`` as deployed with ``backend`` (see the module docstring; time it under
    :func:`timing_context`), and its input's name and shape."""
    from musicnas.export.formats import example_input, export_onnx, torch_reference

    check_backend(backend, threads)
    x = example_input(net, with_frontend, batch=1, seed=2)
    name = "waveform" if with_frontend else "features"
    info = {"name": name, "shape": [1, *x.shape[1:]]}
    if backend == "torch":
        module = torch_reference(net, with_frontend)
        return (lambda: module(x)), info
    with tempfile.TemporaryDirectory(prefix="musicnas-latency-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(net, path, with_frontend=with_frontend)
        session = onnx_session(path, threads)
    feeds = {name: x.numpy()}
    return (lambda: session.run(None, feeds)), info


def measure_many(
    nets: Sequence[DeployedNet],
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    with_frontend: bool = False,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    gap_ms: float = DEFAULT_GAP_MS,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    extra: Sequence[Callable[[], object]] = (),
    desc: str | None = None,
) -> tuple[list[Measurement], list[np.ndarray]]:
    """Latency of each of ``nets`` (batch 1, as deployed with ``backend``), their runs interleaved in
    rounds (:func:`time_interleaved`) so they are measured under the same machine states. ``extra``
    calls (e.g. a table's parts) are timed in the same rounds. Returns the measurements and the raw
    timings of every call (``nets``' first, then ``extra``'s). ``desc`` shows progress bars."""
    prepared = [
        prepare_deployed(net, backend, threads, with_frontend)
        for net in progress(nets, desc=f"{desc}: export", unit="net", disable=desc is None)
    ]
    with timing_context(backend, threads):
        times = time_interleaved([fn for fn, _ in prepared] + list(extra), runs, warmup, rounds, gap_ms, seed,
                                 desc)  # fmt: skip
    measurements = [
        Measurement.from_times(
            t,
            warmup=warmup,
            backend=backend,
            threads=threads,
            input=info,
            with_frontend=with_frontend,
            gap_ms=gap_ms,
            rounds=min(rounds, runs),
        )  # fmt: skip
        for t, (_, info) in zip(times, prepared, strict=False)
    ]
    return measurements, times


def measure_deployed(
    net: DeployedNet,
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    with_frontend: bool = False,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    gap_ms: float = DEFAULT_GAP_MS,
    rounds: int = DEFAULT_ROUNDS,
) -> Measurement:
    """Latency of ``net`` at batch 1 as deployed with ``backend`` (see the module docstring)."""
    (measurement,), _ = measure_many([net], backend, threads, with_frontend, runs, warmup, gap_ms, rounds)
    return measurement


DEFAULT_REFERENCES = 5  # reference networks measured beside a network to correct for the machine's drift


@dataclass
class DriftCorrected:
    """A network measured interleaved with reference networks of known latency (``reference_ms``, e.g.
    a latency table's fitting networks as measured when the table was built).

    ``measured`` is the raw measurement (each network's fastest run over all sessions). ``corrected_ms``
    pairs the networks in time: in each round (every network's share of runs, all within a fraction of a
    second) the round's drift is the median over references of (their fastest run in the round / known
    latency), and the network's fastest run in the round divided by it is that round's corrected
    latency; ``corrected_ms`` is the median over all rounds of all sessions. ``drift_factor`` is
    ``measured_ms / corrected_ms``: how much slower than when the references were measured the machine
    was at the network's fastest run (> 1: slower now). ``reference_now_ms`` are the references' own
    fastest runs, ``round_drift`` the rounds' drifts (min, median, max), ``sessions`` every session's own
    figures."""

    measured: Measurement
    drift_factor: float
    corrected_ms: float
    reference_ms: list[float]
    reference_now_ms: list[float]
    sessions: list[dict] = field(default_factory=list)
    round_drift: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "measured_ms": self.measured.latency_ms,
            "corrected_ms": self.corrected_ms,
            "drift_factor": self.drift_factor,
            "estimator": "median over rounds of fastest run / round drift",
            "round_drift": {
                "min": self.round_drift[0],
                "median": self.round_drift[1],
                "max": self.round_drift[2],
            }
            if self.round_drift
            else None,
            "references": [
                {"known_ms": then, "now_ms": now, "ratio": now / then}
                for then, now in zip(self.reference_ms, self.reference_now_ms, strict=True)
            ],
            "sessions": list(self.sessions),
            "measured": self.measured.to_dict(),
        }


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages now (None where the system has none): what a measurement
    on a shared machine ran beside."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def drift_factor(now_ms: Sequence[float], known_ms: Sequence[float]) -> float:
    """Median over reference networks of their latency now over their known latency (> 1: the machine
    is slower now). The median, so that one reference disturbed by a busy spell does not move it."""
    if len(now_ms) == 0:
        raise MusicnasError("a drift correction needs at least one reference network; none was given")
    if len(now_ms) != len(known_ms):
        raise MusicnasError(f"got {len(now_ms)} reference measurements for {len(known_ms)} known latencies")
    bad = [v for v in [*now_ms, *known_ms] if not (np.isfinite(v) and v > 0)]
    if bad:
        raise MusicnasError(f"reference latencies must be positive and finite, got {bad[0]!r}")
    return float(median(now / then for now, then in zip(now_ms, known_ms, strict=True)))


def measure_drift_corrected(
    net: DeployedNet,
    references: Sequence[DeployedNet],
    reference_ms: Sequence[float],
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    runs: int = DEFAULT_RUNS,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    sessions: int = 1,
    seed: int = 0,
    measure: Callable[..., tuple[list[Measurement], list[np.ndarray]]] = measure_many,
) -> DriftCorrected:
    """``net`` measured in the same interleaved rounds as ``references`` (:func:`measure_many`), whose
    latencies under the same protocol are known (``reference_ms``), in ``sessions`` sessions: the raw
    latency, the machine's drift since the references were measured and the corrected latency (see
    :class:`DriftCorrected`). Why: on a shared VM the same network measured alone gives 0.78 and 1.13 ms
    a minute apart (docs/latency.md), while networks measured in the same rounds move together.
    ``measure`` is :func:`measure_many` (a stand-in in tests)."""
    if not references:
        raise MusicnasError(
            "a drift-corrected measurement needs reference networks of known latency; none was given "
            "(a latency table's fitting networks serve: build the table with --fit-archs >= 1)"
        )
    if len(references) != len(reference_ms):
        raise MusicnasError(
            f"got {len(references)} reference networks for {len(reference_ms)} known latencies"
        )
    if sessions < 1:
        raise MusicnasError(f"need at least one measuring session, got {sessions}")
    drift_factor([1.0] * len(reference_ms), reference_ms)  # a clear error for a bad known latency first
    best: list[Measurement] | None = None
    per_session, corrected, drifts = [], [], []
    for s in range(sessions):
        load = load_average()
        found, times = measure([net, *references], backend, threads, runs=runs, warmup=warmup, rounds=rounds,
                               seed=seed + s)  # fmt: skip
        session_corrected, session_drifts = paired_rounds(times, reference_ms, rounds)
        corrected.extend(session_corrected)
        drifts.extend(session_drifts)
        raw = found[0].latency_ms
        median_corrected = float(np.median(session_corrected))
        per_session.append({"measured_ms": raw, "corrected_ms": median_corrected,
                            "drift_factor": raw / median_corrected, "load_average": load})  # fmt: skip
        best = (
            found
            if best is None
            else [min(a, b, key=lambda m: m.latency_ms) for a, b in zip(best, found, strict=True)]
        )
    raw, corrected_ms = best[0].latency_ms, float(np.median(corrected))
    return DriftCorrected(best[0], raw / corrected_ms, corrected_ms, [float(v) for v in reference_ms],
                          [m.latency_ms for m in best[1:]], per_session,
                          [float(np.min(drifts)), float(np.median(drifts)), float(np.max(drifts))])  # fmt: skip


def round_minima(times_ms: np.ndarray, rounds: int) -> np.ndarray:
    """The fastest run of each round of a network's timings from :func:`time_interleaved` (its runs are
    stored in running order, round after round, in the rounds' shares)."""
    return np.array(
        [chunk.min() for chunk in np.array_split(np.asarray(times_ms), min(rounds, len(times_ms)))]
    )


def paired_rounds(
    times: Sequence[np.ndarray], reference_ms: Sequence[float], rounds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drift correction paired in time: ``times`` are the network's timings then its references', from
    the same interleaved rounds (:func:`time_interleaved`). In a round the network and its references ran
    within a fraction of a second of each other, so the round's drift (median over references of their
    fastest run in the round / known latency) is the machine's speed while the network ran. Returns each
    round's corrected latency (the network's fastest run in the round / the round's drift) and drift.
    Why not the fastest runs over the whole measurement: each network's fastest run may fall in another
    moment, and on the shared VM one network catching a fast spell the others missed moved that
    estimate by up to 20% between repeats (docs/latency.md)."""
    minima = [round_minima(t, rounds) for t in times]
    drifts = np.array([drift_factor([m[r] for m in minima[1:]], reference_ms) for r in range(len(minima[0]))])
    return minima[0] / drifts, drifts
