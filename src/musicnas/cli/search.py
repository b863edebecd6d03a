"""``musicnas search``: run (or resume) an ENAS architecture search."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from musicnas.cli.common import (
    COUNT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    SEED,
    runtime_options,
    space_overrides,
    space_size_options,
)
from musicnas.runtime import MusicnasError

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Audio folder (one subfolder per class), CSV manifest or prepared cache. Not needed with --resume.",
)
@space_size_options
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML or JSON file of search settings."
)
@click.option(
    "--preset",
    type=click.Choice(["cpu", "reference"]),
    default="cpu",
    show_default=True,
    help="Base settings: 'cpu' is sized for a 2-core CPU, 'reference' is the ENAS paper's (GPU-sized).",
)
@click.option("--epochs", type=COUNT, default=None, help="Search epochs [preset: cpu 10, reference 310].")
@click.option("--batch-size", type=COUNT, default=None, help="Minibatch size of the shared weights [preset].")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory to create [default: runs/search].",
)
@click.option("--seed", type=SEED, default=None, help="Seed for every random choice [default: 0].")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue the run in this directory from its last checkpoint (its own config is used).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Feature cache folder [default: .musicnas-cache].",
)
@click.option(
    "--reward",
    type=click.Choice(["accuracy", "mnas-soft", "mnas-hard", "tunas"]),
    default=None,
    help="Controller reward: accuracy (ENAS), MnasNet soft/hard or TuNAS absolute (cost-aware) [accuracy].",
)
@click.option(
    "--cost-metric",
    type=click.Choice(["macs", "params", "latency"]),
    default=None,
    help="Cost used by cost-aware rewards [macs]; latency is predicted by the machine's latency table.",
)
@click.option(
    "--cost-target", type=POSITIVE_FLOAT, default=None, help="Target cost T0 for cost-aware rewards."
)
@click.option(
    "--target-latency-ms",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Search for this latency (ms, batch 1) on this machine: cost metric latency with target T, "
    "reward tunas unless --reward says otherwise (mnas-soft, mnas-hard). See docs/latency.md.",
)
@click.option(
    "--latency-backend",
    type=click.Choice(["onnxruntime", "torch"]),
    default=None,
    help="Runtime whose latency is targeted [onnxruntime].",
)
@click.option("--latency-threads", type=click.IntRange(min=1), default=None, help="Its intra-op threads [1].")
@click.option(
    "--latency-table",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Latency table file [default: this machine's, built on first use: musicnas latency build-table].",
)
@click.option(
    "--controller",
    type=click.Choice(["lstm", "factorized"]),
    default=None,
    help="Policy: 'lstm' (ENAS) or 'factorized' (TuNAS-style independent categoricals, updated every few "
    "child steps with normalised rewards) [lstm].",
)
@click.option(
    "--controller-bn",
    type=click.Choice(["eval", "batch", "recalibrate"]),
    default=None,
    help="Batch norm while scoring architectures: running statistics, the batch's own, or recomputed per "
    "architecture on a few training batches [preset].",
)
@click.option(
    "--checkpoint-every",
    type=NON_NEGATIVE_INT,
    default=None,
    help="Also checkpoint every N child steps (0: every epoch only).",
)
@click.option("--deterministic", is_flag=True, default=None, help="Bit-for-bit repeatable kernels (slower).")
@runtime_options(data_parallel=True)
def search(
    data_path,
    space_name,
    space_opts,
    config_file,
    preset,
    epochs,
    batch_size,
    out_dir,
    seed,
    resume_dir,
    cache_dir,
    reward,
    cost_metric,
    cost_target,
    target_latency_ms,
    latency_backend,
    latency_threads,
    latency_table,
    controller,
    controller_bn,
    checkpoint_every,
    deterministic,
    rt,
):
    """Search an architecture with ENAS: train shared weights and an LSTM controller in turns, then derive
    the best architectures.

    \b
    Writes into --out: config.json, metrics_steps.jsonl, metrics_epochs.jsonl, controller_probs.jsonl,
    arch.json (the chosen architecture), candidates.json, checkpoints/last.pt, tb/ (TensorBoard).
    A killed search continues with: musicnas search --resume RUN
    """
    from musicnas.search.config import resolve_config
    from musicnas.search.enas import run_search

    config, given = None, None
    if resume_dir is not None:
        if out_dir is not None and Path(out_dir) != Path(resume_dir):
            raise MusicnasError(
                "--resume RUN continues RUN in place; drop --out (or give the same directory)"
            )
        # run_search merges these into the run's own config (None: keep the run's value)
        given = {"epochs": epochs, "data": str(data_path) if data_path else None, "cache_dir": cache_dir,
                 "checkpoint_every_steps": checkpoint_every}  # fmt: skip
        # a policy option that differs from the run's own is refused, not silently ignored
        given.update({k: v for k, v in (("controller", controller), ("controller_bn", controller_bn)) if v})
        out = Path(resume_dir)
    else:
        if data_path is None:
            raise MusicnasError("--data PATH is required (an audio folder, CSV manifest or prepared cache)")
        space = space_name or "macro"
        if target_latency_ms is not None:
            if cost_target is not None or cost_metric not in (None, "latency"):
                raise MusicnasError(
                    "--target-latency-ms sets the cost metric (latency) and target; drop --cost-metric/--cost-target"
                )
            cost_metric, cost_target, reward = "latency", target_latency_ms, reward or "tunas"
        overrides = {
            "space": space,
            "space_options": space_overrides(space, space_opts),
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "data": str(data_path),
            "cache_dir": cache_dir,
            "reward": reward,
            "cost_metric": cost_metric,
            "cost_target": cost_target,
            "latency_backend": latency_backend,
            "latency_threads": latency_threads,
            "latency_table": str(latency_table) if latency_table else None,
            "controller": controller,
            "controller_bn": controller_bn,
            "checkpoint_every_steps": checkpoint_every,
            "deterministic": deterministic,
        }
        config = resolve_config(preset, space, config_file, overrides)
        out = Path(out_dir) if out_dir is not None else Path("runs/search")
    result = run_search(config, None, out, rt, resume=resume_dir is not None, overrides=given)
    if result.get("stopped"):
        click.echo(
            f"stopped after {result['child_steps']} steps; continue with: musicnas search --resume {out}"
        )
        return
    click.echo(result["arch_str"])
    cost = result.get("cost") or {}
    click.echo(
        f"score {result['score']:.4f} (val accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} with "
        f"shared weights; ranked by {result['derive']['ranked_by']}), "
        f"{cost.get('params', 0):,} params, {cost.get('macs', 0):,} MACs; {result['elapsed']:.0f}s"
    )
    lat = result.get("latency")
    if lat:
        click.echo(
            f"latency: predicted {lat['predicted_ms']:.3f} ms, measured {lat['measured_ms']:.3f} ms "
            f"(IQR {lat['measured']['iqr_ms']:.3f}; drift {lat['drift_factor']:.3f}, corrected "
            f"{lat['corrected_ms']:.3f} ms) with {lat['measured']['backend']}, {lat['measured']['threads']} "
            f"thread(s); target {lat['target_ms']:g} ms (measured {lat['measured_error']:+.1%}, corrected "
            f"{lat['corrected_error']:+.1%})"
        )
    click.echo(
        f"wrote {out / 'arch.json'}; train it with: musicnas train --arch {out / 'arch.json'} --data ..."
    )
