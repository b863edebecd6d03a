"""``musicnas benchmark``: ENAS against random search, a hand-designed CNN and a floor, on your data."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from musicnas.cli.common import COUNT, SEED, runtime_options
from musicnas.runtime import MusicnasError

METHOD_NAMES = ("enas", "random_ws", "random_retrained", "hand_cnn", "logreg")


def _methods(value: str) -> list[str]:
    methods = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown or not methods:
        raise MusicnasError(
            f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHOD_NAMES)}"
        )
    return methods


@click.command()
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Audio folder (one subfolder per class), CSV manifest or prepared cache.",
)
@click.option(
    "--seeds", type=COUNT, default=3, show_default=True, help="Number of seeds each method is run with."
)
@click.option("--first-seed", type=SEED, default=0, show_default=True, help="Seeds are FIRST .. FIRST+N-1.")
@click.option(
    "--budget",
    "budget_spec",
    default="default",
    show_default=True,
    help="Compute budget: a preset (tiny, reduced, default, full) optionally followed by KEY=VALUE overrides, "
    "e.g. 'reduced,search_epochs=12,random_k=6'. Keys: search_epochs, retrain_epochs, random_k, "
    "derive_samples, batch_size, space, num_layers, channels, num_branches, cnn_channels, cnn_blocks, "
    "controller_updates, controller_archs. See docs/baselines.md.",
)
@click.option(
    "--methods",
    default=",".join(METHOD_NAMES),
    show_default=True,
    help="Comma-separated methods to run.",
)
@click.option(
    "--no-ranking", is_flag=True, help="Skip the ranking study (Kendall tau of shared vs stand-alone)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/benchmark"),
    show_default=True,
    help="Output folder: benchmark.json, benchmark.md, ranking.json and one folder per seed and method. "
    "Running again into the same folder reuses finished runs.",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=".musicnas-cache",
    show_default=True,
    help="Feature cache folder.",
)
@click.option(
    "--shard",
    "shard_spec",
    default=None,
    metavar="I/N",
    help="Run only shard I of N: every N-th (seed, method) run, starting with the I-th, into --out, which "
    "then holds shard.json instead of the tables. Give each shard its own --out (e.g. one per SLURM array "
    "task or host) and combine them with --merge.",
)
@click.option(
    "--merge",
    "merge_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Build the tables from the --out folders of shards 1/N..N/N (repeat the option, one folder each) "
    "into --out; runs nothing but the ranking study. Needs the same --data and --cache as the shards.",
)
@runtime_options
def benchmark(data_path, seeds, first_seed, budget_spec, methods, no_ranking, out_dir, cache_dir, shard_spec,
              merge_dirs, rt):  # fmt: skip
    """Was the search worth it? Run ENAS, random search with and without weight sharing, a hand-designed
    music CNN and a log-mel + logistic-regression floor over several seeds with matched compute, and
    write a table of test accuracy (clip and track, mean ± std), parameters, MACs and times.

    \b
    Compute is matched in child training steps: random search with weight sharing runs the ENAS loop
    with the same epochs; random search without it trains k architectures for search_epochs/k epochs
    each; every chosen architecture and the hand CNN get the same final training.
    The data split is fixed (seed 0); the seeds vary search, sampling, initialisation and training.

    \b
    Example (demo data, reduced budget):
      musicnas data synth --out demo_audio
      musicnas benchmark --data demo_audio --seeds 2 --budget reduced --out runs/benchmark
    """
    from musicnas.baselines.budget import parse_budget
    from musicnas.baselines.harness import merge_benchmark, parse_shard, run_benchmark
    from musicnas.data.cache import open_data

    if merge_dirs:
        if shard_spec:
            raise MusicnasError("--merge builds the tables of finished shards; drop --shard")
        data = open_data(data_path, cache_dir)
        command = " ".join(shlex.quote(p) for p in ["musicnas", "benchmark", "--data", str(data_path),
                           *(a for d in merge_dirs for a in ("--merge", str(d))), "--out", str(out_dir)])  # fmt: skip
        report = merge_benchmark(merge_dirs, data, out_dir, rt, command=command)
        _echo_report(report, out_dir)
        return
    shard = parse_shard(shard_spec) if shard_spec else None
    if seeds < 1:
        raise MusicnasError(f"--seeds must be at least 1, got {seeds}")
    budget = parse_budget(budget_spec)
    method_list = _methods(methods)
    data = open_data(data_path, cache_dir)
    parts = ["musicnas", "benchmark", "--data", str(data_path), "--seeds", str(seeds)]
    if first_seed:
        parts += ["--first-seed", str(first_seed)]
    parts += ["--budget", budget_spec]
    if method_list != list(METHOD_NAMES):
        parts += ["--methods", ",".join(method_list)]
    if no_ranking:
        parts.append("--no-ranking")
    if shard:
        parts += ["--shard", f"{shard[0]}/{shard[1]}"]
    parts += ["--out", str(out_dir)]
    command = " ".join(shlex.quote(p) for p in parts)
    report = run_benchmark(
        data,
        out_dir,
        budget,
        list(range(first_seed, first_seed + seeds)),
        rt,
        methods=method_list,
        ranking=not no_ranking,
        data_path=str(data_path),
        command=command,
        shard=shard,
    )
    if shard:
        click.echo(
            f"shard {shard[0]}/{shard[1]}: {len(report['jobs'])} runs in {out_dir} "
            f"({report['wall_time']:.0f} s); when all {shard[1]} are done: musicnas benchmark --data "
            f"{data_path} --merge DIR1 ... --merge DIR{shard[1]} --out OUT"
        )
        return
    _echo_report(report, out_dir)


def _echo_report(report: dict, out_dir) -> None:
    from musicnas.baselines.table import to_markdown

    click.echo(to_markdown(report["rows"]))
    for row in report["ranking"]["per_seed"]:
        tau = "n/a" if row["kendall_tau"] is None else f"{row['kendall_tau']:.3f} (p {row['p_value']:.3f})"
        click.echo(
            f"seed {row['seed']}: Kendall tau shared vs stand-alone over {row['n']} architectures: {tau}"
        )
    click.echo(f"wrote {Path(out_dir) / 'benchmark.md'} and benchmark.json ({report['wall_time']:.0f} s)")
