"""``musicnas evaluate``: accuracy, macro-F1, per-class precision/recall and confusion matrix of a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from musicnas.cli.common import COUNT, cache_option, model_option, runtime_options


@click.command()
@model_option
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Audio folder, CSV manifest or prepared feature cache to evaluate on.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default="test",
    show_default=True,
    help="Which split of the data to evaluate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full metrics as JSON instead of a table.")
@click.option("--batch-size", type=COUNT, default=128, show_default=True, help="Clips per forward pass.")
@cache_option
@runtime_options
def evaluate(model_dir, data, split, as_json, batch_size, cache, rt):
    """Evaluate a model bundle: clip accuracy, track accuracy (mean of a track's clip logits),
    macro-F1, per-class precision and recall, and the confusion matrix.

    Writes MODEL/evaluation.json and MODEL/confusion.png. Audio input is prepared with the bundle's own
    feature options, so the features match what the model was trained on.
    """
    from musicnas.data.cache import open_data
    from musicnas.export.bundle import load_bundle
    from musicnas.training.evaluate import evaluate_bundle

    classifier = load_bundle(model_dir, device=str(rt.device))
    dataset = open_data(data, cache, config=classifier.feature_config)
    metrics = evaluate_bundle(
        classifier, dataset, split, rt, batch_size=batch_size, show_progress=not as_json
    )
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo(
        f"{split} split of {dataset.root}: {metrics['clips']} clips, {metrics['files']} files, "
        f"{metrics['tracks']} tracks"
    )
    click.echo(
        f"clip accuracy {metrics['clip_accuracy']:.4f}   file accuracy {metrics['file_accuracy']:.4f}   "
        f"track accuracy {metrics['track_accuracy']:.4f}   "
        f"macro-F1 {metrics['macro_f1']:.4f}"
    )
    width = max(len(c) for c in metrics["classes"]) + 2
    click.echo(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'clips':>8}")
    for name, row in metrics["per_class"].items():
        click.echo(
            f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>8d}"
        )
    click.echo("confusion matrix (rows true, columns predicted):")
    for name, row in zip(metrics["classes"], metrics["confusion_matrix"], strict=True):
        click.echo(f"  {name:<{width}}" + " ".join(f"{v:>5d}" for v in row))
    click.echo(f"wrote {Path(model_dir) / 'evaluation.json'} and {Path(model_dir) / 'confusion.png'}")
