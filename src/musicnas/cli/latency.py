"""``musicnas latency``: measured latency of a network as deployed, and the per-machine latency table.

``musicnas latency ARCH.json|MODEL_DIR`` measures; ``musicnas latency build-table`` builds the lookup
table that latency-aware searches use; ``musicnas latency check`` compares its predictions with
measurements on random architectures. See docs/latency.md.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from musicnas.cli.common import SEED, THREADS
from musicnas.runtime import MusicnasError

BACKEND_CHOICE = click.Choice(["onnxruntime", "torch"])
MEASURE = "measure"


class LatencyGroup(click.Group):
    """``musicnas latency TARGET ...`` runs the hidden ``measure`` command; subcommands run as usual."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [MEASURE, *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return [name for name in self.commands if name != MEASURE]


def backend_options(func):
    options = [
        click.option("--backend", type=BACKEND_CHOICE, default="onnxruntime", show_default=True,
                     help="onnxruntime runs the exported ONNX model (as deployed); torch runs PyTorch eager."),
        click.option("--threads", type=THREADS, default=1, show_default=True,
                     help="Intra-op threads of the backend."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def table_options(func):
    """Space, input, classes and table file: which table to build or check."""
    from musicnas.cli.common import space_size_options

    options = [
        click.option("--preset", type=click.Choice(["cpu", "reference"]), default="cpu", show_default=True,
                     help="Search preset whose space options are the defaults."),
        click.option("--stem-stride", type=click.Choice(["1", "2"]), default=None,
                     help="Macro: stride of the stem conv [preset: cpu 2, reference 1]."),
        click.option("--input", "input_text", default=None,
                     help="Input CxHxW of the network (log-mel channels x mels x frames) "
                          "[default: the default feature options', 1x64x94]."),
        click.option("--classes", "num_classes", type=click.IntRange(min=2), default=10, show_default=True,
                     help="Outputs of the classifier head."),
        click.option("--table", "table_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Table file [default: this machine's file in the user cache, see docs/latency.md]."),
        click.option("--runs", type=click.IntRange(min=5), default=200, show_default=True,
                     help="Timed runs per part and per architecture (after warm-up), back to back; "
                          "the latency is the fastest."),
        click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True,
                     help="The runs are spread over this many rounds, interleaved across everything "
                          "measured, so all see the same machine states (see docs/latency.md)."),
    ]  # fmt: skip

    @functools.wraps(func)
    def wrapper(*args, space_name, space_opts, preset, stem_stride, input_text, num_classes, **kwargs):
        kwargs["space"] = _space(space_name or "macro", space_opts, preset, stem_stride)
        kwargs["input_shape"] = _input_shape(input_text)
        kwargs["num_classes"] = num_classes
        return func(*args, **kwargs)

    wrapper = space_size_options(wrapper)
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _space(name: str, opts: dict, preset_name: str, stem_stride):
    from musicnas.cli.common import space_overrides
    from musicnas.search.config import preset
    from musicnas.spaces import get_space_module

    values = dict(preset(preset_name, name).space_options)
    values.update(space_overrides(name, opts) or {})
    if stem_stride is not None:
        if name != "macro":
            raise MusicnasError("--stem-stride applies to the macro space only")
        values["stem_stride"] = int(stem_stride)
    return get_space_module(name).Space.from_dict({"type": name, **values})


def _input_shape(text: str | None) -> tuple[int, int, int]:
    from musicnas.data.features import FeatureConfig

    if text is None:
        return tuple(FeatureConfig().input_shape)
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise MusicnasError(f"--input must be CxHxW with positive integers, e.g. 1x64x94; got {text!r}")
    return shape


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


@click.group(cls=LatencyGroup, invoke_without_command=False)
def latency():
    """Latency of networks as deployed (batch 1), and this machine's latency table.

    \b
      musicnas latency ARCH.json|MODEL_DIR [--backend onnxruntime|torch] [--threads N] [--with-frontend] [--json]
      musicnas latency build-table [--space macro ...] [--backend ...] [--threads N]
      musicnas latency check [--archs 50]
    """


@latency.command(MEASURE, hidden=True)
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@backend_options
@click.option("--with-frontend", is_flag=True,
              help="Input is a waveform clip; the log-mel front end and normalisation are part of the model.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
@click.option("--runs", type=click.IntRange(min=50), default=100, show_default=True,
              help="Timed runs after warm-up (at least 50).")  # fmt: skip
@click.option(
    "--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs first."
)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="The timed runs come in this many rounds, each after 2 untimed runs.")  # fmt: skip
@click.option("--gap-ms", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Sleep before each timed run (0: back to back, the table's protocol; a gap times cold caches).")  # fmt: skip
@click.option("--classes", "num_classes", type=click.IntRange(min=2), default=10, show_default=True,
              help="Outputs of the classifier head of an ARCH.json (a bundle has its own).")  # fmt: skip
@click.option("--save", is_flag=True,
              help="MODEL_DIR only: record the measurement in MODEL_DIR/latency.json and its model card.")  # fmt: skip
@click.option("--drift-correct", is_flag=True,
              help="Measure TARGET interleaved with the latency table's reference networks (its fitting "
                   "networks) and also report the latency corrected for the machine's drift since the "
                   "table was built; uses the table's runs and rounds (see docs/latency.md).")  # fmt: skip
@click.option("--table", "table_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --drift-correct: the table file [default: this machine's file in the user cache].")  # fmt: skip
def measure(
    target, backend, threads, with_frontend, as_json, runs, warmup, rounds, gap_ms, num_classes, save,
    drift_correct, table_path,
):  # fmt: skip
    """Measure the latency of TARGET: an architecture JSON (untrained weights: latency does not depend on
    them) or a model bundle folder."""
    from musicnas.latency.measure import deployed_from_path, measure_deployed

    if save and not target.is_dir():
        raise MusicnasError("--save records the latency in a model bundle; TARGET must be a MODEL_DIR")
    if table_path is not None and not drift_correct:
        raise MusicnasError("--table is read by --drift-correct only")
    net = deployed_from_path(target, num_classes=num_classes)
    if drift_correct:
        result = _drift_corrected(net, backend, threads, with_frontend, table_path)
    else:
        result = measure_deployed(
            net, backend, threads, with_frontend, runs, warmup, gap_ms, rounds
        ).to_dict()
    result["source"] = net.source
    if save:
        from musicnas.export.card import record_latency

        record_latency(target, result)
    if as_json:
        _echo_json(result)
        return
    m = result["machine"]
    click.echo(
        f"{result['latency_ms']:.3f} ms (fastest of {result['runs']} runs; median {result['median_ms']:.3f}, "
        f"IQR {result['iqr_ms']:.3f} ms): {backend}, "
        f"{threads} thread(s), batch 1, input {result['input']['name']} {result['input']['shape']}; "
        f"{m['cpu']} ({m['cores']} cores)"
    )
    if drift_correct:
        d = result["drift"]
        click.echo(
            f"drift-corrected {d['corrected_ms']:.3f} ms: the machine is {d['drift_factor']:.3f}x as slow as "
            f"when the table was built ({len(d['references'])} reference networks, median ratio)"
        )


def _drift_corrected(net, backend, threads, with_frontend, table_path) -> dict:
    """The measurement (as without --drift-correct) with ``"drift": {corrected_ms, drift_factor, ...}``."""
    from musicnas.latency.table import load_model, measure_against_table

    if with_frontend:
        raise MusicnasError("--drift-correct measures without the front end (the table's networks have none)")
    if net.arch is None:
        raise MusicnasError(f"{net.source} has no architecture to look up a latency table for")
    input_shape = tuple(net.feature_config.input_shape)
    model = load_model(net.arch.space, input_shape, net.num_classes, backend, threads, table_path)
    found = measure_against_table(model, net, sessions=1).to_dict()
    return {**found.pop("measured"), "drift": found}


@latency.command("build-table")
@table_options
@backend_options
@click.option("--fit-archs", type=click.IntRange(min=0), default=20, show_default=True,
              help="Random architectures measured whole (with the parts) to fit the table's scale and overhead.")  # fmt: skip
@click.option("--fit", "groups", type=click.Choice(["one", "per-kind"]), default="one", show_default=True,
              help="One scale for all parts, or one per kind of part (op, skip mix, reduction...).")  # fmt: skip
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the fitting architectures.")
@click.option("--json", "as_json", is_flag=True, help="Print the table's summary as JSON.")
def build_table(
    space,
    input_shape,
    num_classes,
    table_path,
    runs,
    rounds,
    backend,
    threads,
    fit_archs,
    groups,
    seed,
    as_json,
):
    """Measure every part (op x input shape x channels x stride) of a search space on this machine and
    fit the overhead; saved under the user's cache (or --table) for latency-aware searches."""
    from musicnas.latency.table import build_model, save_model

    model = build_model(space, input_shape, num_classes, backend, threads, runs=runs, fit_archs=fit_archs,
                        seed=seed, rounds=rounds, groups=groups)  # fmt: skip
    path = save_model(model, table_path)
    summary = model.describe()
    if as_json:
        _echo_json(summary)
        return
    scales = ", ".join(f"{g} {v:.3f}" for g, v in sorted(model.scales.items())) or "none"
    click.echo(
        f"latency table: {summary['entries']} parts, scales {scales}, overhead {model.overhead_ms:.3f} ms "
        f"(fitted on {summary['fit_archs']} architectures); wrote {path}"
    )


@latency.command("check")
@table_options
@backend_options
@click.option("--archs", "n_archs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Random architectures to measure and predict.")  # fmt: skip
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seed of the architectures (the table's fit used seed 0 by default).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures and every row as JSON.")
def check(
    space, input_shape, num_classes, table_path, runs, rounds, backend, threads, n_archs, seed, as_json
):
    """Measure random architectures and report how close the table's predictions are (share within ±10%)."""
    from musicnas.latency.table import check_model, load_model

    model = load_model(space, input_shape, num_classes, backend, threads, table_path)
    result = check_model(model, n_archs=n_archs, seed=seed, runs=runs, rounds=rounds)
    if as_json:
        _echo_json(result)
        return
    lo, hi = result["measured_ms_range"]
    click.echo(
        f"{result['within_10pct']:.0%} of {result['archs']} random architectures within ±10% "
        f"(mean |error| {result['mean_abs_error']:.1%}, median {result['median_abs_error']:.1%}, "
        f"max {result['max_abs_error']:.1%}); measured {lo:.2f}-{hi:.2f} ms, {backend}, {threads} thread(s), "
        f"{result['machine']['cpu']}. Measurement noise: the two halves of each network's runs agree within "
        f"±10% for {result['halves_within_10pct']:.0%} (median difference {result['halves_median_diff']:.1%})"
    )
