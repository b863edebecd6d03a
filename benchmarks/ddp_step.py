"""Data-parallel ENAS child steps: 1 process vs 2 gloo processes, and what the gradient sync costs.

A macro search network (4 layers x 16 channels, stride-2 stem) trains one sampled architecture per step
on a global batch of 1x64x96 log-mel-sized inputs (the demo's feature size), SGD as in the search. Side by
side in one run, on the same architectures:

* ``1 process``: the whole batch, ``--threads`` threads (default 2);
* 2 processes x 1 thread, each on half the batch, with
  * ``no sync``: no gradient all-reduce and per-rank batch norm (wrong, the compute floor);
  * ``used-grad all-reduce``: musicnas's way, one flat all-reduce of the gradients that exist;
  * ``DDP find_unused``: ``DistributedDataParallel(find_unused_parameters=True)``, the stock way for
    a model whose forward skips parameters;
  * ``used-grad + synced BN``: musicnas's full step (batch norm over the global batch as well).

Rounds alternate the variants so machine noise hits them alike. Run: ``python benchmarks/ddp_step.py``
(``--steps``, ``--rounds``, ``--batch``); it prints ms per step, samples/s and ratios.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from musicnas import distributed
from musicnas.runtime import Runtime
from musicnas.spaces.macro import MacroSpace
from musicnas.spaces.macro.search_net import MacroSearchNet

SPACE = MacroSpace(num_layers=4, num_branches=6, channels=16, stem_stride=2)
SHAPE = (1, 64, 96)
VARIANTS = ("no sync", "used-grad all-reduce", "DDP find_unused", "used-grad + synced BN")


def _data(batch: int, steps: int):
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(steps, batch, *SHAPE, generator=g)
    ys = torch.randint(0, 8, (steps, batch), generator=g)
    archs = [SPACE.sample(i) for i in range(steps)]
    return xs, ys, archs


def _net(synced_bn: bool, rt: Runtime):
    torch.manual_seed(0)
    net = MacroSearchNet(SPACE, in_channels=1, num_classes=8).to(memory_format=torch.channels_last)
    if synced_bn:
        net = distributed.prepare_model(net, rt)
    return net


def _time_steps(model, xs, ys, archs, sync: str) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    ddp = None
    if sync == "ddp":
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    t0 = 0.0
    for i in range(len(archs)):
        if i == 2:  # two warm-up steps
            t0 = time.perf_counter()
        x = distributed.shard(xs[i]).contiguous(memory_format=torch.channels_last)
        y = distributed.shard(ys[i])
        opt.zero_grad(set_to_none=True)
        logits = ddp(x, archs[i]) if ddp is not None else model(x, archs[i])
        F.cross_entropy(logits, y).backward()
        if sync == "used":
            distributed.average_gradients(model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return (time.perf_counter() - t0) / (len(archs) - 2)


def _worker(rank: int, port: int, args, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")  # fmt: skip
    rt = distributed.init_from_env(Runtime(torch.device("cpu"), 1), threads_given=True, quiet_followers=False)
    torch.set_num_threads(1)
    xs, ys, archs = _data(args.batch, args.steps + 2)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant, synced, sync in zip(
            VARIANTS, (False, False, False, True), ("none", "used", "ddp", "used"), strict=True
        ):
            distributed.barrier()
            times[variant].append(_time_steps(_net(synced, rt), xs, ys, archs, sync))
    if rank == 0:
        np.save(out, np.array([times[v] for v in VARIANTS]))
    distributed.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all variants")
    parser.add_argument("--batch", type=int, default=32, help="global batch")
    parser.add_argument("--threads", type=int, default=2, help="threads of the 1-process run")
    args = parser.parse_args()
    xs, ys, archs = _data(args.batch, args.steps + 2)
    torch.set_num_threads(args.threads)
    rt = Runtime(torch.device("cpu"), args.threads)
    one = [_time_steps(_net(False, rt), xs, ys, archs, "none") for _ in range(args.rounds)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(tempfile.mkdtemp()) / "times.npy"
    mp.spawn(_worker, args=(port, args, str(out)), nprocs=2, join=True)
    two = np.load(out)
    one.append(_time_steps(_net(False, rt), xs, ys, archs, "none"))  # before and after the 2-process part
    base = float(np.median(one))
    print(
        f"global batch {args.batch} of {SHAPE}, {SPACE}; median of {args.rounds} rounds x {args.steps} steps"
    )
    print(f"{'variant':34s} {'ms/step':>9s} {'samples/s':>10s} {'vs 1 process':>13s} {'vs no sync':>11s}")
    print(
        f"{f'1 process x {args.threads} threads':34s} {1e3 * base:9.1f} {args.batch / base:10.1f} {1.0:13.2f}"
    )
    floor = float(np.median(two[0]))
    for variant, row in zip(VARIANTS, two, strict=True):
        t = float(np.median(row))
        print(f"{'2 processes x 1 thread, ' + variant:34s} {1e3 * t:9.1f} {args.batch / t:10.1f} "
              f"{base / t:13.2f} {t / floor:11.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
