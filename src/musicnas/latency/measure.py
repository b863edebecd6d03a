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
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from musicnas.latency import BACKENDS, DEFAULT_BACKEND, DEFAULT_THREADS
from musicnas.runtime import MusicnasError

DEFAULT_RUNS = 100
MIN_RUNS = 50  # the CLI's floor: fewer runs make the median and IQR too noisy to compare
DEFAULT_WARMUP = 10
DEFAULT_GAP_MS = 1.0  # sleep before each timed run (see time_calls)
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
    """Latency of one network: median and IQR over ``runs`` timed calls after ``warmup`` untimed ones."""

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

    def to_dict(self) -> dict:
        return {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "p25_ms": self.p25_ms,
            "p75_ms": self.p75_ms,
            "min_ms": self.min_ms,
            "runs": self.runs,
            "warmup": self.warmup,
            "gap_ms": self.gap_ms,
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


def time_calls(
    fn: Callable[[], object], runs: int, warmup: int, gap_ms: float = DEFAULT_GAP_MS
) -> np.ndarray:
    """Wall-clock milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls, with a sleep of
    ``gap_ms`` before each timed call.

    Why the gap: on a machine shared with CPU-bound work, back-to-back calls exhaust the process's time
    slice and most of them are preempted (measured on the 2-vCPU development VM at load 8: a ~2 ms
    network's median 13-18 ms back to back, 2.4-3.0 ms with a 1 ms gap; IQR 12-20 ms vs 0.4-0.7 ms).
    A process that has just slept is scheduled at once, so each timed call starts with the CPU. On a
    quiet machine the gap changes little; ``gap_ms=0`` times calls back to back."""
    if runs < 1 or warmup < 0 or gap_ms < 0:
        raise MusicnasError(f"need runs >= 1, warmup >= 0, gap >= 0; got {runs}, {warmup}, {gap_ms}")
    for _ in range(warmup):
        fn()
    times = np.empty(runs, dtype=np.float64)
    clock = time.perf_counter_ns
    gap = gap_ms / 1000.0
    for i in range(runs):
        if gap:
            time.sleep(gap)
        start = clock()
        fn()
        times[i] = (clock() - start) / 1e6
    return times


def summarise(times_ms: np.ndarray) -> dict:
    p25, median, p75 = np.percentile(times_ms, [25, 50, 75])
    return {
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


def time_module(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    gap_ms: float = DEFAULT_GAP_MS,
) -> np.ndarray:
    """Timings (ms) of ``module(*inputs)``: exported to ONNX and run in onnxruntime, or in eager PyTorch.
    Used for the table's parts (several inputs allowed); :func:`measure_deployed` for whole networks."""
    check_backend(backend, threads)
    module = module.cpu().eval()
    inputs = tuple(x.detach().cpu().contiguous() for x in inputs)
    if backend == "torch":
        with torch_threads(threads), torch.inference_mode():
            return time_calls(lambda: module(*inputs), runs, warmup, gap_ms)
    from musicnas.export.formats import write_onnx

    names = [f"x{i}" for i in range(len(inputs))]
    with tempfile.TemporaryDirectory(prefix="musicnas-latency-") as tmp:
        path = Path(tmp) / "part.onnx"
        write_onnx(module, inputs, path, names, output_names=("y",), dynamic_batch=False)
        session = onnx_session(path, threads)
    feeds = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
    return time_calls(lambda: session.run(None, feeds), runs, warmup, gap_ms)


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
    return DeployedNet(model, config, torch.zeros(n_mels), torch.ones(n_mels), "architecture", arch)


def deployed_from_path(path, num_classes: int = 10) -> DeployedNet:
    """A model bundle folder (its trained network) or an architecture JSON file (untrained)."""
    path = Path(path)
    if path.is_dir():
        from musicnas.export.bundle import load_bundle

        clf = load_bundle(path, device="cpu")
        return DeployedNet(clf.model, clf.feature_config, clf.mean, clf.std, f"bundle {path}", clf.arch)
    if not path.is_file():
        raise MusicnasError(f"{path} is neither an architecture JSON file nor a model bundle folder")
    from musicnas.spaces import load_arch

    arch = load_arch(path)
    deployed = deployed_from_arch(arch, num_classes=num_classes)
    deployed.source = f"architecture {path}"
    return deployed


def measure_deployed(
    net: DeployedNet,
    backend: str = DEFAULT_BACKEND,
    threads: int = DEFAULT_THREADS,
    with_frontend: bool = False,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    gap_ms: float = DEFAULT_GAP_MS,
) -> Measurement:
    """Latency of ``net`` at batch 1 as deployed with ``backend`` (see the module docstring)."""
    from musicnas.export.formats import example_input, export_onnx, torch_reference

    check_backend(backend, threads)
    x = example_input(net, with_frontend, batch=1, seed=2)
    shape = [1, *x.shape[1:]]
    name = "waveform" if with_frontend else "features"
    if backend == "torch":
        module = torch_reference(net, with_frontend)
        with torch_threads(threads), torch.inference_mode():
            times = time_calls(lambda: module(x), runs, warmup, gap_ms)
    else:
        with tempfile.TemporaryDirectory(prefix="musicnas-latency-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(net, path, with_frontend=with_frontend)
            session = onnx_session(path, threads)
        feeds = {name: x.numpy()}
        times = time_calls(lambda: session.run(None, feeds), runs, warmup, gap_ms)
    stats = summarise(times)
    return Measurement(
        median_ms=stats["median_ms"],
        iqr_ms=stats["iqr_ms"],
        p25_ms=stats["p25_ms"],
        p75_ms=stats["p75_ms"],
        min_ms=stats["min_ms"],
        runs=runs,
        warmup=warmup,
        backend=backend,
        threads=threads,
        input={"name": name, "shape": shape},
        with_frontend=with_frontend,
        gap_ms=gap_ms,
    )
