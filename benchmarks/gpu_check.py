"""A tiny search and a tiny training on CUDA against the same runs on CPU (run by gpu_check.sh).

Prints samples/s of the child steps and training steps, peak GPU memory, and how far the CUDA losses
(bf16 autocast, channels_last) are from the CPU (fp32) ones, step by step. Data: ``--data`` (gpu_check.sh
passes demo music it synthesises; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from musicnas import runtime
from musicnas.data.cache import open_data
from musicnas.search.config import SearchConfig
from musicnas.search.enas import run_search
from musicnas.spaces.macro import MacroSpace
from musicnas.spaces.macro.fixed_net import FixedMacroNet
from musicnas.training.trainer import TrainConfig, Training


def _sync(rt):
    if rt.is_cuda:
        torch.cuda.synchronize(rt.device)


def search(rt, data, args) -> dict:
    config = SearchConfig(
        space_options={"num_layers": args.layers, "channels": args.channels, "num_branches": 6,
                       "whole_channels": True, "stem_stride": 2},
        epochs=1, batch_size=args.batch, controller_archs_per_update=4, controller_updates_per_epoch=2,
        derive_samples=4, derive_batches=1, derive_top_k=2, keep_seen=2, tensorboard=False, seed=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        if rt.is_cuda:
            torch.cuda.reset_peak_memory_stats(rt.device)
        _sync(rt)
        t0 = time.perf_counter()
        run_search(config, data, out, rt)
        _sync(rt)
        seconds = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(out) / "metrics_steps.jsonl").read_text().splitlines()]
    child = [r for r in rows if r["phase"] == "child"]
    return {"losses": [r["loss"] for r in child], "samples_per_s": len(child) * args.batch / seconds,
            "peak_mb": torch.cuda.max_memory_allocated(rt.device) / 2**20 if rt.is_cuda else None}  # fmt: skip


def train(rt, data, args) -> dict:
    torch.manual_seed(0)
    model = FixedMacroNet(MacroSpace(num_layers=args.layers, num_branches=6, channels=args.channels).sample(1),
                          1, data.num_classes, args.channels, 0.0)  # fmt: skip
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        training = Training(model, data, out, TrainConfig(epochs=1, batch_size=args.batch, patience=0), rt,
                            seed=0, show_progress=False, on_step=lambda r: losses.append(r["loss"]))  # fmt: skip
        training.start()
        if rt.is_cuda:
            torch.cuda.reset_peak_memory_stats(rt.device)
        _sync(rt)
        t0 = time.perf_counter()
        training.run_epoch()
        _sync(rt)
        seconds = time.perf_counter() - t0
    return {"losses": losses, "samples_per_s": len(losses) * args.batch / seconds,
            "peak_mb": torch.cuda.max_memory_allocated(rt.device) / 2**20 if rt.is_cuda else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="audio folder or prepared cache")
    parser.add_argument("--cache", default=".musicnas-cache", help="feature cache folder")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--channels", type=int, default=24)
    args = parser.parse_args()
    data = open_data(args.data, args.cache)
    gpu, cpu = runtime.setup("cuda"), runtime.setup("cpu")
    print(f"{torch.cuda.get_device_name(gpu.device)}, torch {torch.__version__}, bf16 "
          f"{torch.cuda.is_bf16_supported()}; {len(data.split_indices('train'))} train clips of {data.input_shape}, "
          f"batch {args.batch}")  # fmt: skip
    for name, fn in (("search (child steps)", search), ("train", train)):
        on_gpu, on_cpu = fn(gpu, data, args), fn(cpu, data, args)
        a, b = np.array(on_gpu["losses"]), np.array(on_cpu["losses"])
        rel = np.abs(a - b) / np.abs(b)
        print(f"{name}: CUDA {on_gpu['samples_per_s']:.0f} samples/s, CPU ({cpu.threads} threads) "
              f"{on_cpu['samples_per_s']:.0f} samples/s ({on_gpu['samples_per_s'] / on_cpu['samples_per_s']:.1f}x); "
              f"peak GPU memory {on_gpu['peak_mb']:.0f} MiB")  # fmt: skip
        print(f"  loss step 1: CUDA {a[0]:.5f} CPU {b[0]:.5f}; last: CUDA {a[-1]:.5f} CPU {b[-1]:.5f}; "
              f"relative difference max {rel.max():.2e}, median {np.median(rel):.2e} over {len(a)} steps")  # fmt: skip


if __name__ == "__main__":
    main()
