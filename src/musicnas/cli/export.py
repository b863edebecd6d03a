"""``musicnas export``: ONNX or TorchScript from a model bundle, checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import click

from musicnas.cli.common import POSITIVE_FLOAT, model_option
from musicnas.export.formats import DEFAULT_TOLERANCE, FORMATS, ONNX_MAX_OPSET, ONNX_MIN_OPSET


@click.command()
@model_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Export format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
@click.option(
    "--with-frontend",
    is_flag=True,
    help="Put the log-mel front end and normalisation inside the export: it then takes a mono waveform "
    "[batch, samples] at the bundle's sample rate instead of features [batch, 1, mels, frames].",
)
@click.option(
    "--tolerance",
    type=POSITIVE_FLOAT,
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="Largest allowed absolute difference of the exported model's logits from PyTorch's.",
)
@click.option(
    "--opset",
    type=click.IntRange(ONNX_MIN_OPSET, ONNX_MAX_OPSET),
    default=None,
    help="ONNX opset [default: 17, or 18 with --dynamo].",
)
@click.option("--dynamo", is_flag=True, help="ONNX: use the torch.export-based exporter.")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
def export(model_dir, fmt, out, with_frontend, tolerance, opset, dynamo, as_json):
    """Export a model bundle to ONNX or TorchScript (on the CPU).

    The exported file is run on random input right away (ONNX in onnxruntime) and compared with the
    PyTorch model; the export fails, writing nothing, when the largest difference exceeds --tolerance.
    """
    from musicnas.export.bundle import load_bundle
    from musicnas.export.formats import export_model

    classifier = load_bundle(model_dir, device="cpu")
    kwargs = {"tolerance": tolerance}
    if fmt == "onnx":
        kwargs.update(opset=opset, dynamo=dynamo)
    report = export_model(classifier, fmt, out, with_frontend, **kwargs)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    shape = "x".join(str(s) for s in report.input_shape)
    click.echo(
        f"wrote {report.path} ({fmt}, input {report.input_name!r} [{shape}], output 'logits'); "
        f"max abs diff to PyTorch {report.max_abs_diff:.2e} (tolerance {report.tolerance:g})"
    )
