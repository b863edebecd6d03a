"""Data-parallel search and training under ``torchrun`` (PyTorch's own launcher and process groups).

``torchrun --standalone --nproc_per_node=N --no-python musicnas search|train ...`` (or multi-node with
``--nnodes``, ``--rdzv-backend c10d --rdzv-endpoint HOST:PORT``) is detected from the environment torchrun
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``...); there is no separate command. This module is the one
home of everything distributed; the search loop and the trainer call it through small hooks, and every
hook is the identity in a single process, so a plain run is unchanged.

The design keeps an N-process run equal to a 1-process run with the same **global** batch and seed:

* every rank holds the same replica (same seed, same init) and trains the **same sampled architecture**:
  all ranks sample from identical controllers (their generators stay in step) and rank 0's architecture is
  broadcast, so a drifted rank cannot train another one;
* each global batch (the same per-epoch, seeded order on every rank: ``DistributedSampler``-style) is cut
  into contiguous per-rank shards; ``global batch = world size x local batch``, and a batch size the world
  size does not divide is refused;
* gradients are averaged with **one** all-reduce of the gradients that exist after backward: a sampled
  architecture leaves its unused branches without ``.grad`` (``zero_grad(set_to_none=True)``), and since
  every rank trains the same architecture, every rank holds the same set, in the same order. This is what
  ``DistributedDataParallel(find_unused_parameters=True)`` achieves with a graph traversal and per-bucket
  hooks on every step; ``benchmarks/ddp_step.py`` measures both;
* batch norm normalises with the statistics of the **global** batch (:class:`SyncedBatchNorm` on CPU,
  ``torch.nn.SyncBatchNorm`` on CUDA), so the forward pass equals the single-process one;
* accuracies, losses and rewards are all-reduced, so every rank sees the same numbers; the controller is
  updated on every rank from them and rank 0's state (weights, optimiser, generator, baseline) is then
  broadcast;
* only rank 0 writes run files, TensorBoard events and checkpoints; a checkpoint holds nothing that
  depends on the world size, so it resumes in any number of processes with the same global batch.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from musicnas.runtime import MusicnasError, Runtime, default_threads

log = logging.getLogger(__name__)

# seconds a rank waits for the others at a collective before it fails (a dead peer, a deadlock)
TIMEOUT_ENV = "MUSICNAS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# -------------------------------------------------------------------------------------------------
# who am I


def launched() -> bool:
    """True when this process was started by torchrun (or anything that sets its environment)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the one process that writes files (True in a single process)."""
    return rank() == 0


def _comm_device() -> torch.device:
    """Where collective buffers live: NCCL works on CUDA tensors, gloo on CPU ones."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -------------------------------------------------------------------------------------------------
# set-up and teardown


def init_from_env(rt: Runtime, threads_given: bool = False, quiet_followers: bool = True) -> Runtime:
    """Joins the process group torchrun describes and returns this rank's Runtime; without torchrun,
    returns ``rt`` unchanged.

    CUDA: rank ``LOCAL_RANK`` takes GPU ``LOCAL_RANK`` and the group uses NCCL; CPU: gloo. Without
    ``--threads`` each rank gets its share of the cores (2 processes on 2 cores: 1 thread each).
    ``quiet_followers``: ranks > 0 print nothing on stdout and log only warnings (the CLI's setting)."""
    if not launched() or active():
        return rt
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = rt.device
    if rt.is_cuda:
        if local_rank >= torch.cuda.device_count():
            raise MusicnasError(
                f"LOCAL_RANK {local_rank} has no GPU: this node shows {torch.cuda.device_count()}; start at most "
                "that many processes per node (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
        # gloo picks the interface of the host name, which may not reach 127.0.0.1 (stack.md)
        if os.environ.get("MASTER_ADDR", "127.0.0.1") in LOOPBACK:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    threads = rt.threads if threads_given else max(1, default_threads() // max(local_world, 1))
    torch.set_num_threads(threads)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    try:
        dist.init_process_group(
            backend, timeout=timeout, **({"device_id": device} if backend == "nccl" else {})
        )
    except (RuntimeError, ValueError) as exc:
        raise MusicnasError(
            f"could not join the torchrun process group ({backend}, MASTER_ADDR "
            f"{os.environ.get('MASTER_ADDR')!r}:{os.environ.get('MASTER_PORT')}): {str(exc)[:300]}"
        ) from exc
    atexit.register(shutdown)
    if quiet_followers and not is_main():
        logging.getLogger("musicnas").setLevel(logging.WARNING)
        os.environ["MUSICNAS_PROGRESS"] = "0"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    log.info("data-parallel: %d processes (%s), %d thread(s) each on %s", world, backend, threads, device)
    return Runtime(device=device, threads=threads, precision=rt.precision)


def shutdown() -> None:
    """Leaves the process group (idempotent)."""
    if active():
        dist.destroy_process_group()


def refuse_under_torchrun(command: str) -> None:
    """Commands that do not run data-parallel must not run N times over the same files."""
    if launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        hint = " (spread a benchmark with --shard I/N instead)" if command == "benchmark" else ""
        raise MusicnasError(
            f"`musicnas {command}` does not run data-parallel; only search and train do under torchrun. "
            f"Run it as one process{hint}."
        )


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# -------------------------------------------------------------------------------------------------
# sharding


def local_batch_size(global_batch: int, what: str = "batch size") -> int:
    """This rank's share of a global batch; a MusicnasError when the world size does not divide it."""
    world = world_size()
    if global_batch % world:
        raise MusicnasError(
            f"the {what} {global_batch} cannot be split evenly over {world} processes: the global batch is "
            f"world size x local batch, so use a multiple of {world} (or another --nproc_per_node)"
        )
    return global_batch // world


def shard_bounds(n: int, r: int | None = None) -> tuple[int, int]:
    """Rank ``r``'s (default: this rank's) contiguous slice ``[lo, hi)`` of ``n`` rows, sizes as even as
    possible (a ragged last validation batch may leave a rank fewer rows, or none)."""
    r = rank() if r is None else r
    base, extra = divmod(int(n), world_size())
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def shard(rows):
    """This rank's rows of an index array or batch tensor (all of them in a single process)."""
    if world_size() == 1:
        return rows
    lo, hi = shard_bounds(len(rows))
    return rows[lo:hi]


# -------------------------------------------------------------------------------------------------
# collectives


def all_sum(values: Sequence[float]) -> list[float]:
    """Sums of ``values`` over all ranks (float64)."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def average_gradients(module: nn.Module) -> int:
    """Averages the gradients of ``module``'s parameters that have one, in one all-reduce per dtype.

    Only parameters the step used have ``.grad`` (the loops zero with ``set_to_none=True``); every rank
    trains the same architecture, so the sets match. Returns the number of gradient elements reduced."""
    if world_size() == 1:
        return 0
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    _reduce_flat(grads, average=True)
    return sum(g.numel() for g in grads)


def _groups(tensors: Sequence[torch.Tensor]) -> dict[torch.dtype, list[torch.Tensor]]:
    out: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        out.setdefault(t.dtype, []).append(t)
    return out


def _reduce_flat(tensors: Sequence[torch.Tensor], average: bool) -> None:
    device = _comm_device()
    for group in _groups(tensors).values():
        flat = torch.cat([t.reshape(-1).to(device) for t in group])
        dist.all_reduce(flat)
        if average:
            flat.div_(world_size())
        _scatter_back(flat, group)


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrites ``tensors`` (in place) with rank ``src``'s values, one broadcast per dtype."""
    if world_size() == 1 or not tensors:
        return
    device = _comm_device()
    for group in _groups(tensors).values():
        flat = torch.cat([t.detach().reshape(-1).to(device) for t in group])
        dist.broadcast(flat, src)
        _scatter_back(flat, group)


def _scatter_back(flat: torch.Tensor, group: Sequence[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in group:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view(t.shape))
            offset += n


def agree_ints(values: Sequence[int]) -> list[int]:
    """Rank 0's list of integers, on every rank."""
    if world_size() == 1:
        return [int(v) for v in values]
    length = torch.tensor([len(values)], dtype=torch.int64)
    broadcast_tensors([length])
    data = torch.zeros(int(length), dtype=torch.int64)
    if is_main():
        data = torch.tensor([int(v) for v in values], dtype=torch.int64)
    broadcast_tensors([data])
    return data.tolist()


def agree_arch(arch):
    """Rank 0's architecture (space-agnostic: through ``to_flat``/``from_flat``)."""
    if world_size() == 1:
        return arch
    flat = [int(v) for v in arch.to_flat()]
    agreed = agree_ints(flat)
    return arch if agreed == flat else type(arch).from_flat(agreed, arch.space)


def sync_controller(controller, optimizer, baseline: float | None) -> float | None:
    """Rank 0's controller (weights, buffers, optimiser moments, generator) and REINFORCE baseline on
    every rank; returns the baseline. Every rank computed the same update from the same all-reduced
    rewards, so this only guards against floating-point drift between machines."""
    if world_size() == 1:
        return baseline
    tensors = list(controller.state_dict().values())
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
    generator = controller.generator_state().clone()
    base = torch.tensor([float("nan") if baseline is None else baseline], dtype=torch.float64)
    broadcast_tensors([*tensors, generator, base])
    controller.set_generator_state(generator)
    value = float(base)
    return None if value != value else value


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """This rank's rows (its :func:`shard` of ``total``) gathered into the full tensor, in order, on
    every rank."""
    if world_size() == 1:
        return local
    device = _comm_device()
    bounds = [shard_bounds(total, r) for r in range(world_size())]
    padded = torch.zeros(
        (max(hi - lo for lo, hi in bounds), *local.shape[1:]), dtype=local.dtype, device=device
    )
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in bounds]
    dist.all_gather(parts, padded)
    return torch.cat([part[: hi - lo] for part, (lo, hi) in zip(parts, bounds, strict=True)]).to(local.device)


# -------------------------------------------------------------------------------------------------
# models


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks (the adjoint of a sum-all-reduce)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all ranks, for CPU/gloo (``torch.nn.SyncBatchNorm`` runs on
    accelerators only). Same parameters, buffers and state-dict keys as ``nn.BatchNorm*d``; identical to it
    in eval mode and in a single process.

    In training mode every rank's per-channel count, mean and variance are gathered (one all-reduce,
    float64) and pooled; the all-reduce's backward all-reduces the gradient, so the backward pass of every
    rank includes what the other ranks' losses owe to its activations, as in SyncBatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active() and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c, world = x.shape[1], world_size()
        dims = [d for d in range(x.dim()) if d != 1]
        n_local = x.numel() // max(c, 1)
        # every rank's (count, mean, variance) in its own row of a zero matrix, summed over ranks: an
        # all-gather that autograd can differentiate
        rows = torch.zeros((world, 2 * c + 1), dtype=torch.float64, device=x.device)
        if n_local:
            var_l, mean_l = torch.var_mean(x, dims, correction=0)
            rows = rows.index_put((torch.tensor([rank()], device=x.device),),
                                  torch.cat([mean_l.double(), var_l.double(), rows.new_tensor([n_local])])[None])  # fmt: skip
        rows = _AllReduceSum.apply(rows.to(_comm_device())).to(x.device)
        counts = rows[:, 2 * c].detach()
        total = float(counts.sum())
        if total == 0:
            raise MusicnasError("batch norm over an empty global batch")
        weights = (counts / total)[:, None]
        mean = (weights * rows[:, :c]).sum(0)
        # the pooled variance: within-rank variances plus the spread of the rank means (no cancellation)
        var = (weights * (rows[:, c : 2 * c] + (rows[:, :c] - mean) ** 2)).sum(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked) if self.momentum is None else float(self.momentum)
                )
                unbiased = var * (total / (total - 1)) if total > 1 else var
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        # y = x * scale + shift: one fused pass over the activations
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.double()
        shift = -mean * scale + (self.bias.double() if self.affine else 0.0)
        shape = [1, c] + [1] * (x.dim() - 2)
        return torch.addcmul(shift.to(x.dtype).view(shape), x, scale.to(x.dtype).view(shape))


def _convert_batch_norm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncedBatchNorm):
        synced = SyncedBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias  # the same Parameter objects
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        new = _convert_batch_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def prepare_model(model: nn.Module, rt: Runtime) -> nn.Module:
    """The replica of ``model`` for this rank: batch norm over the global batch and rank 0's weights.
    The identity in a single process. Call before building the optimiser."""
    if world_size() == 1:
        return model
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if rt.is_cuda else _convert_batch_norm(model)
    # the same seed gives the same init everywhere; broadcasting makes that a guarantee
    broadcast_tensors(list(model.state_dict().values()))
    return model


def check_space(space) -> None:
    """Refuses what data-parallel runs do not support yet."""
    if (
        world_size() > 1
        and getattr(space, "type", None) == "macro"
        and not getattr(space, "whole_channels", True)
    ):
        raise MusicnasError(
            "the macro space's channel-range mode (--channel-ranges) normalises channel slices with a batch norm "
            "that is not synchronised across processes; search it in one process, or use --whole-channels"
        )
