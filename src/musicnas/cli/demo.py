"""``musicnas demo``: the whole path on demo music the project composes itself."""

from __future__ import annotations

import json
from pathlib import Path

import click

from musicnas.cli.common import COUNT, FiniteFloatRange, runtime_options, seed_option


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Folder for everything the demo writes (audio/, cache/, search/, model/, report.html).",
)
@click.option(
    "--space",
    type=click.Choice(["macro", "micro"]),
    default="macro",
    show_default=True,
    help="Search space to search.",
)
@click.option(
    "--classes", type=click.IntRange(min=2), default=8, show_default=True, help="Number of demo genres."
)
@click.option("--tracks-per-class", type=COUNT, default=24, show_default=True, help="Demo tracks per genre.")
@click.option(
    "--seconds",
    type=FiniteFloatRange(0, 600, min_open=True),
    default=15.0,
    show_default=True,
    help="Length of each demo track.",
)
@click.option("--search-epochs", type=COUNT, default=None, help="Search epochs [default: the cpu preset's].")
@click.option("--train-epochs", type=COUNT, default=None, help="Retraining epochs [default: the trainer's].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@seed_option
@runtime_options
def demo(out, space, classes, tracks_per_class, seconds, search_epochs, train_epochs, as_json, seed, rt):
    """Run everything on generated demo music: compose → prepare features → ENAS search → retrain the
    found architecture → evaluate on the test split → HTML report.

    Nothing is downloaded. A rerun with the same options reuses finished stages and resumes an
    interrupted search or training from its last checkpoint; delete OUT to start afresh.
    About 10-15 minutes on 2 CPU cores with the defaults.
    """
    from musicnas.demo import DemoSizes, run_demo

    sizes = DemoSizes(classes, tracks_per_class, seconds, search_epochs, train_epochs)
    summary = run_demo(out, rt, seed=seed, space=space, sizes=sizes)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    floor = summary["logreg_floor"]["test"]
    click.echo(f"architecture:  {summary['arch']}")
    click.echo(f"model bundle:  {summary['model']}")
    click.echo(
        f"test accuracy: {summary['test_clip_accuracy']:.3f} per clip, {summary['test_track_accuracy']:.3f} per track "
        f"(log-mel statistics + logistic regression: {floor['clip_acc']:.3f} / {floor['track_acc']:.3f})"
    )
    click.echo(f"report:        {summary['report']}")
    click.echo(
        f"time:          {summary['total_seconds']:.0f} s, peak memory {summary['peak_rss_mib']:.0f} MiB"
    )
