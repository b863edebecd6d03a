"""``musicnas predict``: label audio files with a trained model bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from musicnas.cli.common import COUNT, model_option, runtime_options
from musicnas.runtime import MusicnasError
from musicnas.utils.logging import progress


@click.command()
@model_option
# readable=False: an unreadable file is reported and skipped by predict itself, not refused with the rest
@click.argument("files", nargs=-1, required=True, type=click.Path(readable=False, path_type=Path))
@click.option("--top-k", type=COUNT, default=3, show_default=True, help="How many labels to show per file.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per file (JSON lines); its 'predictions' is the Hugging Face "
    'audio-classification form [{"label", "score"}, ...].',
)
@click.option(
    "--hf",
    "as_hf",
    is_flag=True,
    help='With --json: print only the Hugging Face form [{"label", "score"}, ...] per file (JSON lines).',
)
@click.option("--batch-size", type=COUNT, default=32, show_default=True, help="Clips per forward pass.")
@runtime_options
def predict(model_dir, files, top_k, as_json, as_hf, batch_size, rt):
    """Label audio FILES with a model bundle.

    Each file is decoded in blocks with the bundle's feature options, cut into clips as in training,
    and its label is the softmax of the MEAN OF ITS CLIP LOGITS. Memory stays bounded on long files.
    Files that cannot be decoded are reported and skipped (exit status 2 if any were).
    """
    from musicnas.export.bundle import load_bundle

    if as_hf and not as_json:
        raise MusicnasError("--hf chooses the form of the --json output; add --json")
    classifier = load_bundle(model_dir, device=str(rt.device))
    classifier.batch_size = batch_size
    failed = []
    for path in progress(files, desc="predict", unit="file", disable=as_json or len(files) < 2):
        try:
            result = classifier.predict(path, top_k=top_k)
        except MusicnasError as exc:
            failed.append(str(path))
            if as_json:
                click.echo(json.dumps({"source": str(path), "error": str(exc)}))
            else:
                click.secho(f"{path}: error: {exc}", fg="red", err=True)
            continue
        if as_json:
            click.echo(json.dumps(result.to_hf() if as_hf else result.to_dict()))
        else:
            labels = ", ".join(f"{name} {p:.3f}" for name, p in result.top)
            click.echo(f"{path}: {labels}  ({result.num_clips} clips)")
    if failed:
        raise MusicnasError(
            f"{len(failed)} of {len(files)} files could not be classified: {', '.join(failed)}"
        )
