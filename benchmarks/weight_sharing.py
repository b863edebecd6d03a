"""Cost of weight sharing: a training step of the search network running one architecture against the
same step of that architecture's extracted sub-network.

For each sampled architecture the two models train side by side, steps interleaved (and the order
alternated) so both see the same machine noise. A step is forward, cross-entropy, backward and an SGD
step (momentum 0.9, as the child optimiser), batch 32 of 1x64x94 by default. Peak memory is the peak of
bytes allocated during one step, from torch's profiler (CPU allocations made by torch; tracemalloc and
ru_maxrss cannot attribute torch's C++ allocations to one model).

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0 \\
        .venv/bin/python benchmarks/weight_sharing.py --space macro

Target: median time ratio (search / sub-network) <= 1.10.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import click
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from musicnas.spaces import get_space_module


@dataclass
class Row:
    label: str
    search_ms: float
    sub_ms: float
    search_peak_mib: float
    sub_peak_mib: float

    @property
    def ratio(self) -> float:
        return self.search_ms / self.sub_ms


def _step(model, opt, x, y, forward_args) -> None:
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x, *forward_args), y)
    loss.backward()
    opt.step()


def _peak_step_mib(model, opt, x, y, forward_args) -> float:
    """Peak of torch's allocated bytes during one step, relative to its start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(model, opt, x, y, forward_args)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def compare(search_net, extract_subnet, archs, x, y, steps: int, channels_last: bool) -> list[Row]:
    """Times the search net on each architecture against its extracted sub-network, interleaved."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    search_net = search_net.to(memory_format=fmt).train()
    x = x.contiguous(memory_format=fmt)
    search_opt = torch.optim.SGD(search_net.parameters(), lr=0.01, momentum=0.9)
    rows = []
    for label, arch in archs:
        sub = extract_subnet(search_net, arch).to(memory_format=fmt).train()
        sub_opt = torch.optim.SGD(sub.parameters(), lr=0.01, momentum=0.9)
        runs = {"search": (search_net, search_opt, (arch,)), "sub": (sub, sub_opt, ())}
        times = {"search": [], "sub": []}
        for name in runs:  # warm-up: first-call allocations, optimiser state
            _step(runs[name][0], runs[name][1], x, y, runs[name][2])
        for i in range(steps):
            order = ("search", "sub") if i % 2 == 0 else ("sub", "search")
            for name in order:
                model, opt, args = runs[name]
                start = time.perf_counter()
                _step(model, opt, x, y, args)
                times[name].append(time.perf_counter() - start)
        peaks = {name: _peak_step_mib(*runs[name][:2], x, y, runs[name][2]) for name in runs}
        rows.append(
            Row(
                label,
                1e3 * statistics.median(times["search"]),
                1e3 * statistics.median(times["sub"]),
                peaks["search"],
                peaks["sub"],
            )
        )
    return rows


def _data(batch, in_channels, height, width, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels, height, width, generator=gen)
    return x, torch.randint(classes, (batch,), generator=gen)


def bench_macro(opts) -> list[Row]:
    module = get_space_module("macro")
    space = module.Space.from_options(
        layers=opts["layers"], channels=opts["channels"], whole_channels=not opts["channel_ranges"]
    )
    net = module.SearchNet(space, in_channels=1, num_classes=10)
    archs = [(f"macro seed {s}", space.sample(opts["seed"] + s)) for s in range(opts["archs"])]
    x, y = _data(opts["batch"], 1, *opts["input"], 10, opts["seed"])
    return compare(net, module.extract_subnet, archs, x, y, opts["steps"], opts["channels_last"])


def bench_micro(opts) -> list[Row]:
    module = get_space_module("micro")
    space = module.Space.from_options(channels=opts["channels"])
    net = module.SearchNet(space, in_channels=1, num_classes=10)
    archs = [(f"micro seed {s}", space.sample(opts["seed"] + s)) for s in range(opts["archs"])]
    x, y = _data(opts["batch"], 1, *opts["input"], 10, opts["seed"])
    return compare(net, module.extract_subnet, archs, x, y, opts["steps"], opts["channels_last"])


BENCHES = {"macro": bench_macro, "micro": bench_micro}


@click.command()
@click.option("--space", type=click.Choice(["macro", "micro", "all"]), default="macro", show_default=True)
@click.option("--archs", type=int, default=5, show_default=True, help="Sampled architectures per space.")
@click.option(
    "--steps", type=int, default=6, show_default=True, help="Timed steps per model and architecture."
)
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--input", "input_size", default="64x94", show_default=True, help="Input height x width.")
@click.option("--layers", type=int, default=None, help="Macro layers [space default].")
@click.option("--channels", type=int, default=None, help="Search-network channels [space default].")
@click.option("--channel-ranges", is_flag=True, help="Macro: channel-range mode instead of whole channels.")
@click.option(
    "--threads", type=int, default=1, show_default=True, help="torch threads (the machine is shared)."
)
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(
    space, archs, steps, batch, input_size, layers, channels, channel_ranges, threads, channels_last, seed
):
    """Training-step time and peak memory: search network running an architecture vs its sub-network."""
    torch.set_num_threads(threads)
    height, width = (int(v) for v in input_size.lower().split("x"))
    opts = dict(archs=archs, steps=steps, batch=batch, input=(height, width), layers=layers, channels=channels,
                channel_ranges=channel_ranges,
                channels_last=channels_last, seed=seed)  # fmt: skip
    click.echo(f"torch {torch.__version__}, {threads} thread(s), batch {batch} x 1x{height}x{width}, "
               f"{'channels_last' if channels_last else 'contiguous'}, {steps} timed steps each")  # fmt: skip
    for name in BENCHES if space == "all" else [space]:
        rows = BENCHES[name](opts)
        click.echo(f"\n{name}: {'architecture':<16} {'search ms':>10} {'subnet ms':>10} {'ratio':>6} "
                   f"{'search MiB':>11} {'subnet MiB':>11}")  # fmt: skip
        for r in rows:
            click.echo(f"{'':{len(name) + 2}}{r.label:<16} {r.search_ms:10.1f} {r.sub_ms:10.1f} {r.ratio:6.3f} "
                       f"{r.search_peak_mib:11.1f} {r.sub_peak_mib:11.1f}")  # fmt: skip
        click.echo(f"{name}: median time ratio search/subnet = {statistics.median(r.ratio for r in rows):.3f} "
                   f"(target <= 1.10); median peak MiB search {statistics.median(r.search_peak_mib for r in rows):.1f}"
                   f", subnet {statistics.median(r.sub_peak_mib for r in rows):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
