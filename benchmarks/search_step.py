"""Speed and memory of the search's child training step, optionally against NNI 3.0's ENAS supernet.

Times the product's own child step: ``SearchRun.child_step`` of a search built from ``SearchConfig``'s
defaults (SGD with Nesterov momentum 0.9, lr 0.05, weight decay 5e-4, gradient clipping at 5, the
runtime's default precision), with the controller's sample replaced by each given architecture. Only the
workload (space size, input, batch, threads) comes from the options. Each measurement runs in a fresh
child process (with the glibc malloc setting and passive OpenMP waiting, as the CLI sets them), so its
peak RSS (``ru_maxrss``) belongs to that one measurement.

With ``--peer-python PATH`` the same architectures also run as NNI 3.0 one-shot ENAS supernet steps
(``benchmarks/peers/nni_enas_macro.py``, run by that interpreter); with ``--compare-plain`` also as the
musicnas step with the spaces' step optimisations switched off (``spaces.ops.optimised_ops(False)``);
with ``--compare-keep`` also as the optimised step that keeps its activations for the backward instead of
rebuilding them (``spaces.ops.recompute_allowed(False)``).
The sides alternate their order from round to round, and the ratios are medians over rounds.

    python benchmarks/search_step.py --json runs/search_step.json \\
        --peer-python /work/nni-venv/bin/python --compare-plain

(defaults: the reference workload, 12 layers x 36 channels, 6 branches, stem stride 1, batch 32 of
1x128x128, 8 classes, 2 threads, 3 sampled architectures, 2 rounds.) Development sizes:
``--layers 4 --channels 8 --input 32x32 --batch 8 --steps 2``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "peers" / "nni_enas_macro.py"


def parse_input(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise click.BadParameter(f"expected HxW such as 128x128, got {text!r}") from exc
    if h < 4 or w < 4:
        raise click.BadParameter(f"input must be at least 4x4, got {text!r}")
    return h, w


def build_space(spec: dict):
    from musicnas.spaces import get_space_module

    module = get_space_module(spec["space"])
    if spec["space"] == "macro":
        options = {
            "num_layers": spec["layers"],
            "channels": spec["channels"],
            "num_branches": spec["branches"],
            "whole_channels": True,
            "stem_stride": spec["stem_stride"],
        }
    else:
        options = {"num_cells": spec["layers"], "channels": spec["channels"], "num_nodes": spec["nodes"]}
    return module, options, module.Space.from_dict({"type": spec["space"], **options})


def load_archs(path: Path | None, spec: dict, count: int, seed: int) -> list[list[int]]:
    """Flat architectures: from a JSON list (musicnas arch JSON objects or flat lists) or sampled."""
    from musicnas.runtime import MusicnasError

    module, _, space = build_space(spec)
    if path is None:
        return [space.sample(seed + i).to_flat() for i in range(count)]
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MusicnasError(f"--archs {path}: cannot read a JSON list: {exc}") from exc
    if not isinstance(items, list) or not items:
        raise MusicnasError(f"--archs {path}: expected a non-empty JSON list of architectures")
    flats = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            arch = module.Arch.from_json(item)
            if arch.space != space:
                raise MusicnasError(
                    f"--archs {path}: architecture {i} is of {arch.space}, but the options give {space}; "
                    "pass matching --layers/--channels/--space"
                )
        elif isinstance(item, list):
            arch = module.Arch.from_flat(item, space)
        else:
            raise MusicnasError(f"--archs {path}: architecture {i} is neither an object nor a flat list")
        flats.append(arch.to_flat())
    return flats


class SyntheticData:
    """Random features with the interface SearchRun reads (the step's speed does not depend on values)."""

    def __init__(self, shape: tuple[int, int, int], classes: int, train: int, val: int, seed: int):
        import numpy as np
        import torch

        rng = np.random.default_rng(seed)
        n = train + val
        self.input_shape, self.num_classes = shape, classes
        self.classes = [f"class{i}" for i in range(classes)]
        self.x = torch.from_numpy(rng.standard_normal((n, *shape)).astype(np.float32))
        self.labels = torch.from_numpy(rng.integers(0, classes, n).astype(np.int64))
        self.splits = np.array(["train"] * train + ["val"] * val)
        self.root = "memory"

    def split_indices(self, split):
        import numpy as np

        return np.nonzero(self.splits == split)[0].astype(np.int64)

    def get_batch(self, indices, normalize=True):
        import torch

        idx = torch.as_tensor(indices)
        return self.x[idx], self.labels[idx]


class _NoBar:
    def set_postfix(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass


def musicnas_worker(spec: dict) -> dict:
    """One measurement: a search's child step on one architecture, ``warmup + steps`` times."""
    import torch

    from musicnas import runtime
    from musicnas.search.config import SearchConfig
    from musicnas.search.controller import ControllerSample
    from musicnas.search.enas import SearchRun
    from musicnas.spaces import ops
    from musicnas.spaces.cost import count_cost

    module, options, space = build_space(spec)
    arch = module.Arch.from_flat(spec["arch"], space)
    rt = runtime.setup("cpu", spec["threads"], spec["precision"])
    h, w = spec["input"]
    batch = spec["batch"]
    data = SyntheticData((1, h, w), spec["classes"], train=batch, val=2, seed=spec["seed"])
    config = SearchConfig(
        space=spec["space"], space_options=options, batch_size=batch, seed=spec["seed"], tensorboard=False
    )
    with (
        tempfile.TemporaryDirectory() as out,
        ops.optimised_ops(not spec["plain"]),
        ops.recompute_allowed(not spec.get("keep", False)),
    ):
        run = SearchRun(config, data, out, rt)
        zero = torch.zeros(())
        fixed = ControllerSample(arch=arch, log_prob=zero, entropy=zero, skip_penalty=zero)
        run.controller.sample = lambda: fixed
        indices = data.split_indices("train")
        times = []
        for step in range(spec["warmup"] + spec["steps"]):
            t0 = time.perf_counter()
            run.child_step(0, step, indices, _NoBar())
            times.append(time.perf_counter() - t0)
        was_training = run.model.training
        macs = count_cost(run.model.eval(), (1, h, w), arch).macs
        run.model.train(was_training)
    return {
        "step_s": times[spec["warmup"] :],
        "first_step_s": times[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "macs_per_sample": int(macs),
        "precision": rt.precision,
    }


def child_env() -> dict:
    from musicnas.runtime import MALLOC_TUNABLES  # the CLI's setting, for both sides

    env = dict(os.environ)
    env.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["MUSICNAS_NO_REEXEC"] = "1"
    return env


def measure(side: str, spec: dict, peer_python: str | None, timeout: float) -> dict:
    if side == "nni":
        cmd = [peer_python, str(PEER_SCRIPT), json.dumps(spec)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise click.ClickException(f"{side} measurement ran past {timeout:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise click.ClickException(
            f"{side} measurement failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    result = json.loads(lines[-1])
    result["median_s_per_step"] = statistics.median(result["step_s"])
    return result


def summarise(runs: list[dict], batch: int) -> dict:
    """Median over rounds of each round's median s/step; peak RSS as the largest of the rounds."""
    median_step = statistics.median(r["median_s_per_step"] for r in runs)
    return {
        "median_s_per_step": median_step,
        "samples_per_s": batch / median_step,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "rounds": [
            {"step_s": r["step_s"], "first_step_s": r.get("first_step_s"), "peak_rss_mib": r["peak_rss_mib"]}
            for r in runs
        ],
    }


def machine_info(threads: int) -> dict:
    import torch

    from musicnas import runtime

    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")),
        platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    return {
        "cpu": model,
        "cores_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "load_average_at_start": list(os.getloadavg()),
        "native_bf16": runtime.cpu_has_native_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "glibc_tunables": child_env()["GLIBC_TUNABLES"],
    }


@click.command(help=__doc__)
@click.option(
    "--archs",
    "archs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON list of architectures (musicnas arch JSON objects or flat integer lists) "
    "[default: --num-archs sampled uniformly from the space].",
)
@click.option(
    "--num-archs", type=int, default=3, show_default=True, help="How many to sample without --archs."
)
@click.option(
    "--space",
    type=click.Choice(["macro", "micro"]),
    default="macro",
    show_default=True,
    help="Search space of the step (the NNI peer exists for macro only).",
)
@click.option(
    "--layers", type=int, default=12, show_default=True, help="Macro layers (micro: normal cells per stage)."
)
@click.option("--channels", type=int, default=36, show_default=True, help="Feature maps per layer.")
@click.option("--branches", type=int, default=6, show_default=True, help="Macro branches (ops) per layer.")
@click.option("--nodes", type=int, default=5, show_default=True, help="Micro nodes per cell.")
@click.option(
    "--stem-stride",
    type=click.Choice(["1", "2"]),
    default="1",
    show_default=True,
    help="Macro stem stride (1 = the reference; the cpu preset uses 2).",
)
@click.option(
    "--input", "input_hw", default="128x128", show_default=True, help="Input height x width (1 channel)."
)
@click.option("--batch", type=int, default=32, show_default=True, help="Batch size of a step.")
@click.option("--classes", type=int, default=8, show_default=True, help="Number of classes.")
@click.option("--threads", type=int, default=2, show_default=True, help="torch threads of each side.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="musicnas precision (auto = the product default: bf16 only on CPUs with native bf16).",
)
@click.option("--steps", type=int, default=3, show_default=True, help="Timed steps per measurement.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed steps before them.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Rounds; the sides' order alternates.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of sampling, data and initial weights."
)
@click.option(
    "--peer-python",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Python of a venv with NNI 3.0: also time its ENAS supernet on the same architectures.",
)
@click.option(
    "--peer-channels-last",
    is_flag=True,
    help="Run the NNI supernet in channels_last too (musicnas always does; NNI's default is not).",
)
@click.option(
    "--compare-plain", is_flag=True, help="Also time the musicnas step with the step optimisations off."
)
@click.option(
    "--compare-keep",
    is_flag=True,
    help="Also time the musicnas step that keeps its activations for the backward instead of rebuilding "
    "them (spaces.ops.recompute_allowed(False); the other step optimisations stay on).",
)
@click.option(
    "--timeout", type=float, default=1800, show_default=True, help="Seconds allowed per measurement."
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results here as JSON.",
)
@click.option("--worker", hidden=True, default=None)
def main(archs_file, num_archs, space, layers, channels, branches, nodes, stem_stride, input_hw, batch, classes,
         threads, precision, steps, warmup, rounds, seed, peer_python, peer_channels_last, compare_plain, compare_keep, timeout, json_out, worker):  # fmt: skip
    if worker is not None:
        print(json.dumps(musicnas_worker(json.loads(worker))))
        return
    from musicnas.runtime import MusicnasError

    if peer_python and space != "macro":
        raise click.UsageError("--peer-python: the NNI peer builds the macro space only")
    if min(steps, rounds, batch - 1, num_archs) < 1:
        raise click.UsageError("--steps, --rounds and --num-archs must be >= 1 and --batch >= 2")
    spec = {
        "space": space, "layers": layers, "channels": channels, "branches": branches, "nodes": nodes,
        "stem_stride": int(stem_stride), "input": parse_input(input_hw), "batch": batch, "classes": classes,
        "threads": threads, "precision": precision, "steps": steps, "warmup": warmup, "seed": seed,
        "plain": False, "keep": False,
    }  # fmt: skip
    try:
        flats = load_archs(archs_file, spec, num_archs, seed)
    except MusicnasError as exc:
        raise click.ClickException(str(exc)) from exc
    module, _, space_obj = build_space(spec)
    sides = (
        ["musicnas"]
        + (["musicnas_plain"] if compare_plain else [])
        + (["musicnas_keep"] if compare_keep else [])
    )
    sides += ["nni"] if peer_python else []
    if peer_python:
        from musicnas.search.config import SearchConfig

        defaults = SearchConfig()  # the peer trains with the musicnas child step's optimiser settings
        spec["pool_layers"] = list(space_obj.pool_layers)
        spec["peer_channels_last"] = peer_channels_last
        spec["optimizer"] = {
            "lr": defaults.child_lr_max,
            "momentum": defaults.child_momentum,
            "nesterov": True,
            "weight_decay": defaults.child_weight_decay,
            "grad_clip": defaults.child_grad_clip,
        }
    results: dict[str, list[list[dict]]] = {s: [[] for _ in flats] for s in sides}
    t_start = time.perf_counter()
    machine = machine_info(threads)
    for r in range(rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for a, flat in enumerate(flats):
            for side in order:
                arch_spec = dict(
                    spec, arch=flat, plain=side == "musicnas_plain", keep=side == "musicnas_keep"
                )
                if side == "nni":
                    arch = module.Arch.from_flat(flat, space_obj)
                    arch_spec["ops"] = list(arch.ops)
                    arch_spec["skips"] = [list(s) for s in arch.skips]
                res = measure(side, arch_spec, peer_python, timeout)
                results[side][a].append(res)
                click.echo(
                    f"round {r + 1} arch {a} {side:15s} {res['median_s_per_step']:.3f} s/step  "
                    f"peak RSS {res['peak_rss_mib']:.0f} MiB",
                    err=True,
                )
    rows = []
    for a, flat in enumerate(flats):
        row = {"arch": flat, **summarise(results["musicnas"][a], batch)}
        macs = results["musicnas"][a][0]["macs_per_sample"]
        row["macs_per_sample"] = macs
        row["gflop_per_step"] = macs * batch * 3 * 2 / 1e9  # forward + backward (2x forward), 2 FLOP per MAC
        row["achieved_gflop_per_s"] = row["gflop_per_step"] / row["median_s_per_step"]
        row["precision"] = results["musicnas"][a][0]["precision"]
        for side in sides[1:]:
            other = summarise(results[side][a], batch)
            row[side] = other
            per_round = [
                o["median_s_per_step"] / m["median_s_per_step"]
                for m, o in zip(results["musicnas"][a], results[side][a], strict=True)
            ]
            row[side]["throughput_ratio_musicnas_over_this"] = statistics.median(per_round)
            row[side]["throughput_ratio_per_round"] = per_round
            row[side]["peak_rss_ratio_musicnas_over_this"] = row["peak_rss_mib"] / other["peak_rss_mib"]
        rows.append(row)
    report = {
        "archs": rows,
        "machine": machine,
        "workload": {k: v for k, v in spec.items() if k not in ("plain", "keep")},
        "rounds": rounds,
        "wall_s": time.perf_counter() - t_start,
        "command": " ".join(sys.argv),
    }
    print_table(rows, sides)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def print_table(rows: list[dict], sides: list[str]) -> None:
    head = f"{'arch':>4} {'s/step':>8} {'samples/s':>9} {'RSS MiB':>8} {'GFLOP/s':>8}"
    for side in sides[1:]:
        head += f" | {side + ' s/step':>20} {'RSS':>6} {'speed x':>7} {'RSS x':>6}"
    click.echo(head)
    for i, row in enumerate(rows):
        line = (
            f"{i:>4} {row['median_s_per_step']:>8.3f} {row['samples_per_s']:>9.1f} "
            f"{row['peak_rss_mib']:>8.0f} {row['achieved_gflop_per_s']:>8.1f}"
        )
        for side in sides[1:]:
            o = row[side]
            line += (
                f" | {o['median_s_per_step']:>20.3f} {o['peak_rss_mib']:>6.0f} "
                f"{o['throughput_ratio_musicnas_over_this']:>7.2f} {o['peak_rss_ratio_musicnas_over_this']:>6.2f}"
            )
        click.echo(line)
    for side in sides[1:]:
        speed = statistics.median(r[side]["throughput_ratio_musicnas_over_this"] for r in rows)
        rss = statistics.median(r[side]["peak_rss_ratio_musicnas_over_this"] for r in rows)
        click.echo(
            f"musicnas vs {side}: median throughput ratio {speed:.2f}x, median peak-RSS ratio {rss:.2f}x"
        )


if __name__ == "__main__":
    main()
