"""The one place that decides where and how compute runs: device, threads, seeds, AMP, memory layout.

Everything else asks this module instead of calling ``torch.cuda.is_available()`` or
``torch.set_num_threads`` itself, so a run's placement is decided once and recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# auto: bf16 autocast on CUDA (fp16 where bf16 is missing) and on CPUs with native bf16 instructions
# (AVX512-BF16 or AMX), fp32 on other CPUs, where bf16 is emulated and much slower than fp32.
PRECISION_CHOICES = ("auto", "fp32", "bf16")

# glibc returns large activation buffers to the OS after every step on CPU, and page faults then
# dominate the training step (1.15-2.5x measured, see shared/docs/stack.md). The setting must be in
# the environment before the process starts, so the CLI re-execs itself once with it.
# Without the per-thread cache and the fast bins, the few bytes posix_memalign splits off either end of
# a large (64-byte aligned) tensor are freed into the ordinary bins and merge back when the tensor is
# freed; parked in those caches they fence the hole to exactly the tensor's size, too small for the next
# aligned request of that size, so the heap grew by a tensor at a time: the search step's peak RSS at the
# reference size went 3.4 -> 4.2 -> 4.25 GB over its first three steps, and stays at 2.9 GB without them
# (docs/performance.md).
MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"

# OpenMP threads that spin while they wait for each other collapse when any other process wants the same
# cores. benchmarks/omp_wait.py (demo network, 2 threads): with one competing busy process a step takes
# 1.34-1.44x longer with the default (active) policy than with the passive one, and 4x longer on cores
# shared with several jobs (5.7 s vs 1.4 s); on idle cores passive costs 2-18%. We take the robust one.
# Also read only at process start; a user's own OMP_WAIT_POLICY is kept.
OMP_WAIT_POLICY = "PASSIVE"


class MusicnasError(Exception):
    """An error whose message tells the user what is wrong and how to fix it (shown without traceback)."""


def describe_exception(exc: BaseException, limit: int = 200) -> str:
    """``"TypeName: first line of the message"`` (an empty message gives the type name alone)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


@dataclass(frozen=True)
class Runtime:
    """Where tensors live and how many threads work on them."""

    device: torch.device
    threads: int
    # "fp32" or "bf16" (resolved by setup(); "bf16" on CUDA means mixed precision, fp16 where the GPU
    # lacks bf16). Built directly, a Runtime computes in fp32 on CPU, as before precision existed.
    precision: str = "fp32"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self, enabled: bool = True):
        """The training/scoring step's precision: autocast to bf16 when ``precision`` is bf16 (on CPU:
        convolutions and matmuls in bf16, reductions such as the loss in fp32), else a no-op context.
        ``enabled=False`` (e.g. ``TrainConfig.amp``) forces fp32."""
        if not enabled or self.precision != "bf16":
            return contextlib.nullcontext()
        if self.is_cuda:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Moves a 4-D input batch to the device in ``channels_last`` (1.6-1.9x on CPU convs)."""
        x = x.to(self.device, non_blocking=True)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Moves a model to the device in ``channels_last``."""
        return model.to(self.device, memory_format=torch.channels_last)

    def describe(self) -> dict:
        return {
            "device": str(self.device),
            "threads": self.threads,
            "precision": self.precision,
            "torch": torch.__version__,
        }


def select_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else CPU; ``cuda`` without a GPU is an error, not a fallback."""
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise MusicnasError(f"unknown device {name!r}: use one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MusicnasError(
            f"--device {name} was asked for but no CUDA GPU is visible; use --device cpu or auto"
        )
    return torch.device(name)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), as oneDNN sees it."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA and on CPUs with native bf16, else ``fp32``; ``bf16`` on a CPU
    without it is allowed (same numbers, several times slower) but logged."""
    name = (name or "auto").lower()
    if name not in PRECISION_CHOICES:
        raise MusicnasError(f"unknown precision {name!r}: use one of {', '.join(PRECISION_CHOICES)}")
    native = device.type == "cuda" or cpu_has_native_bf16()
    if name == "auto":
        return "bf16" if native else "fp32"
    if name == "bf16" and not native:
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and slower than fp32")
    return name


def setup(device: str = "auto", threads: int | None = None, precision: str = "auto") -> Runtime:
    """Decides device, thread count and compute precision once for the whole process."""
    dev = select_device(device)
    n = threads if threads and threads > 0 else default_threads()
    torch.set_num_threads(n)
    return Runtime(device=dev, threads=n, precision=resolve_precision(precision, dev))


# Every stream of random numbers derived from a run's seed, by name, in one table, so no two of them can
# collide. The numbers are part of what a seed means: changing one changes every run that uses it.
SEED_STREAMS: dict[str, int] = {
    "search.train_order": 1,  # per-epoch order of the shared weights' training clips
    "search.val_order": 2,  # per-epoch order of the controller's validation batches
    "search.score_order": 3,  # the fixed validation batches candidates are scored on
    "search.policy_order": 4,  # per-epoch order of the validation batches of interleaved policy updates
    "search.bn_calibration": 5,  # the training batches batch norm is recalibrated on when scoring
    "search.controller": 11,  # the controller's own generator
    "search.torch": 12,  # torch's global generator during a search (dropout)
    "search.init": 13,  # initial weights of the search network and the controller
    "search.uniform_controller": 21,  # random search with weight sharing: the uniform controller
    "benchmark.random_archs": 31,  # the k architectures of random search without weight sharing
}
assert len(set(SEED_STREAMS.values())) == len(SEED_STREAMS), "two seed streams share a number"


def stream_rng(seed: int, stream_name: str, *extra: int) -> np.random.Generator:
    """A numpy generator for stream ``stream_name`` of ``seed`` (``extra``: e.g. the epoch)."""
    if stream_name not in SEED_STREAMS:
        raise KeyError(f"unknown seed stream {stream_name!r}; add it to runtime.SEED_STREAMS")
    return np.random.default_rng([int(seed), SEED_STREAMS[stream_name], *(int(e) for e in extra)])


def derive_seed(seed: int, stream_name: str) -> int:
    """An independent seed for stream ``stream_name``, derived from the one run seed."""
    return int(stream_rng(seed, stream_name).integers(0, 2**31 - 1))


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def set_deterministic(enabled: bool = True) -> None:
    """Bit-for-bit repeatable kernels (used by resume tests and ``--deterministic``)."""
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not enabled
        torch.backends.cudnn.deterministic = enabled


def maybe_reexec_with_malloc_tunables(argv: list[str] | None = None) -> None:
    """Re-executes the current command once with the glibc malloc setting and a passive OpenMP wait
    policy (Linux only; settings the user has made are kept).

    Set ``MUSICNAS_NO_REEXEC=1`` to opt out (tests do, to keep the process they spawned)."""
    if sys.platform != "linux" or os.environ.get("MUSICNAS_NO_REEXEC"):
        return
    if "GLIBC_TUNABLES" in os.environ and "OMP_WAIT_POLICY" in os.environ:
        return
    env = dict(os.environ, MUSICNAS_NO_REEXEC="1")
    env.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)
    env.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    args = [sys.executable, "-m", "musicnas", *(sys.argv[1:] if argv is None else argv)]
    try:
        os.execve(sys.executable, args, env)
    except OSError as exc:  # keep going without the speed-up rather than fail
        log.debug("re-exec with malloc tunables failed: %s", exc)
