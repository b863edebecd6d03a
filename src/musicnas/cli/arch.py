"""``musicnas arch``: sample random architectures and inspect one (layout, parameters, MACs)."""

from __future__ import annotations

import functools
import json
import re

import click

from musicnas.cli.common import CHANNELS, LAYERS, SEED
from musicnas.runtime import MusicnasError

DEFAULT_INPUT = "64x94"  # the demo's log-mel clips: 64 mels x 94 frames


def space_options(func):
    """``--space`` and every space's size options; unset options reach ``Space.from_options`` as None,
    so each space applies its own defaults and rejects options that are not its own."""

    @click.option(
        "--space",
        "space_name",
        type=click.Choice(["macro", "micro"]),
        default=None,
        help="Search space [default: macro, or the space recorded in ARCH.json].",
    )
    @click.option("--layers", type=LAYERS, default=None, help="Macro: number of layers [default: 6].")
    @click.option(
        "--channels", type=CHANNELS, default=None, help="Channels of the search network [macro default: 24]."
    )
    @click.option(
        "--branches",
        type=click.IntRange(4, 6),
        default=None,
        help="Macro: ops to choose from, 4-6 [default: 6].",
    )
    @click.option(
        "--whole-channels/--channel-ranges",
        default=None,
        help="Macro: one op per layer (default), or every op on a searched channel range.",
    )
    @click.option("--cells", type=click.IntRange(1, 32), default=None, help="Micro: cells per stage.")
    @click.option("--nodes", type=click.IntRange(1, 16), default=None, help="Micro: nodes per cell.")
    @functools.wraps(func)
    def wrapper(*args, space_name, layers, channels, branches, whole_channels, cells, nodes, **kwargs):
        kwargs["space_name"] = space_name
        kwargs["space_opts"] = {
            "layers": layers,
            "channels": channels,
            "branches": branches,
            "whole_channels": whole_channels,
            "cells": cells,
            "nodes": nodes,
        }
        return func(*args, **kwargs)

    return wrapper


def build_space(name: str | None, options: dict):
    from musicnas.spaces import get_space_module

    return get_space_module(name or "macro").Space.from_options(**options)


def parse_input_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text or "")
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise MusicnasError(
            f"--input must be HEIGHTxWIDTH in pixels (mels x frames), e.g. 64x94; got {text!r}"
        )
    return int(match.group(1)), int(match.group(2))


def parse_flat(text: str) -> list[int]:
    """Integers separated by spaces and/or commas, optionally in brackets (the reference's arc string)."""
    body = text.strip().strip("[]()")
    parts = [p for p in re.split(r"[\s,]+", body) if p]
    try:
        return [int(p) for p in parts]
    except ValueError as exc:
        raise MusicnasError(f"--arc must be integers separated by spaces or commas, got {text!r}") from exc


@click.group()
def arch() -> None:
    """Sample random architectures and inspect one: layout, parameters and MACs."""


@arch.command("sample")
@space_options
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random choice.")
def sample(space_name, space_opts, seed: int) -> None:
    """Print a uniformly random architecture of a space as JSON (feed it to `arch info` or `train --arch`)."""
    space = build_space(space_name, space_opts)
    click.echo(json.dumps(space.sample(seed).to_json(), indent=2))


@arch.command("info")
@click.argument("arch_file", metavar="[ARCH.json]", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--arc", "arc_text", default=None, help='A flat integer architecture instead of a file, e.g. "1 0 3 1 1".'
)
@space_options
@click.option(
    "--input",
    "input_size",
    default=DEFAULT_INPUT,
    show_default=True,
    help="Input height x width (mels x frames).",
)
@click.option(
    "--in-channels", type=click.IntRange(1, 64), default=1, show_default=True, help="Input channels."
)
@click.option(
    "--classes", type=click.IntRange(2, 100_000), default=10, show_default=True, help="Output classes."
)
@click.option(
    "--search-net",
    is_flag=True,
    help="Cost of the shared search network running this architecture, instead of the fixed network.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(
    arch_file, arc_text, space_name, space_opts, input_size, in_channels, classes, search_net, as_json
) -> None:
    """Show an architecture (ARCH.json or --arc) with the parameters and MACs of its fixed network.

    With --search-net, the cost is that of the search network of the architecture's space running it
    (parameters actually used by that architecture). MACs are counted by torch's FlopCounterMode for one
    input of --in-channels x --input."""
    from musicnas.spaces import get_space_module, load_arch
    from musicnas.spaces.cost import count_cost

    if (arch_file is None) == (arc_text is None):
        raise MusicnasError('give exactly one architecture: an ARCH.json file or --arc "INTS"')
    if arch_file is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in space_opts.items() if v is not None]
        if given:
            raise MusicnasError(
                f"{', '.join(given)} only apply with --arc: ARCH.json records its own space; drop them"
            )
        architecture = load_arch(arch_file)
        if space_name is not None and space_name != architecture.space.type:
            raise MusicnasError(
                f"--space {space_name} but {arch_file} holds a {architecture.space.type} architecture"
            )
    else:
        space = build_space(space_name, space_opts)
        architecture = get_space_module(space.type).Arch.from_flat(parse_flat(arc_text), space)
    if in_channels < 1 or classes < 1:
        raise MusicnasError("--in-channels and --classes must be at least 1")
    height, width = parse_input_size(input_size)
    module = get_space_module(architecture.space.type)
    shape = (in_channels, height, width)
    if search_net:
        net = module.SearchNet(architecture.space, in_channels=in_channels, num_classes=classes)
        cost = count_cost(net, shape, architecture)
    else:
        net = module.FixedNet(architecture, in_channels=in_channels, num_classes=classes)
        cost = count_cost(net, shape)
    network = "search" if search_net else "fixed"
    if as_json:
        payload = {
            "arch": architecture.to_json(),
            "network": network,
            "input": list(shape),
            "classes": classes,
            "params": cost.params,
            "macs": cost.macs,
            "space_size": str(architecture.space.size()),
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(str(architecture))
    click.echo(f"space size: {_short_int(architecture.space.size())} architectures")
    click.echo(f"{network} network on {in_channels}x{height}x{width}, {classes} classes:")
    click.echo(f"  parameters: {cost.params:,}")
    click.echo(f"  MACs:       {cost.macs:,} ({cost.macs / 1e6:.1f} M)")


def _short_int(n: int) -> str:
    digits = str(n)
    return f"{n:,}" if len(digits) <= 15 else f"{digits[0]}.{digits[1:4]}e{len(digits) - 1}"
