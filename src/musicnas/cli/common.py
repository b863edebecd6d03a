"""Options shared by several subcommands, so they are spelled and documented the same everywhere.

Every numeric option takes one of the ranged types below: a value out of range is refused by click with
the option's name, and the range shows in ``--help`` (click appends e.g. ``[x>=1]``).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import click

from musicnas import runtime


class FiniteFloatRange(click.FloatRange):
    """A float range that also refuses nan and inf (which compare false against any bound)."""

    name = "float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


# Seeds go to torch.manual_seed and numpy's SeedSequence: non-negative and at most 64 bits.
SEED = click.IntRange(0, 2**63 - 1)
COUNT = click.IntRange(min=1)  # epochs, batch sizes, top-k, seeds to run: at least one
NON_NEGATIVE_INT = click.IntRange(min=0)  # patience, step intervals: 0 switches the feature off
# More threads than the machine has CPUs only oversubscribe the cores.
THREADS = click.IntRange(1, max(os.cpu_count() or 1, runtime.default_threads()))
WORKERS = click.IntRange(1, 256)  # decoding threads / rendering processes
TRAIN_BATCH = click.IntRange(min=2)  # batch norm needs two samples
POSITIVE_FLOAT = FiniteFloatRange(min=0, min_open=True)  # learning rates, tolerances, targets
NON_NEGATIVE_FLOAT = FiniteFloatRange(min=0)  # mixup alpha, fmin
FRACTION = FiniteFloatRange(0, 1, max_open=True)  # dropout, label smoothing, split fractions
LAYERS = click.IntRange(1, 128)
CHANNELS = click.IntRange(1, 1024)


def runtime_options(func=None, *, data_parallel: bool = False):
    """Adds ``--device``, ``--threads`` and ``--precision`` and passes a :class:`musicnas.runtime.Runtime`
    as ``rt``.

    ``data_parallel=True`` (search, train): under torchrun the command joins the process group and ``rt``
    is this rank's (``musicnas.distributed``); any other command refuses to run N times over."""
    if func is None:
        return functools.partial(runtime_options, data_parallel=data_parallel)

    @click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N. Under torchrun each process takes "
        "GPU LOCAL_RANK.",
    )
    @click.option(
        "--threads",
        type=THREADS,
        default=None,
        help="CPU threads for torch [default: all usable cores; under torchrun: shared out between the "
        "processes of a node].",
    )
    @click.option(
        "--precision",
        type=click.Choice(runtime.PRECISION_CHOICES),
        default="auto",
        show_default=True,
        help="Compute precision of training and scoring: auto (bf16 autocast on CUDA and on CPUs with "
        "native bf16, i.e. AVX512-BF16 or AMX; fp32 elsewhere), fp32, or bf16.",
    )
    @functools.wraps(func)
    def wrapper(*args, device: str, threads: int | None, precision: str, **kwargs):
        from musicnas import distributed

        rt = runtime.setup(device, threads, precision)
        if data_parallel:
            rt = distributed.init_from_env(rt, threads_given=threads is not None)
        else:
            distributed.refuse_under_torchrun(func.__name__)
        kwargs["rt"] = rt
        return func(*args, **kwargs)

    return wrapper


def seed_option(func):
    return click.option(
        "--seed", type=SEED, default=0, show_default=True, help="Seed for every random choice."
    )(func)


def cache_option(func):
    """``--cache DIR`` (as ``cache``): where prepared feature caches live."""
    return click.option(
        "--cache",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".musicnas-cache"),
        show_default=True,
        help="Where prepared feature caches live.",
    )(func)


def model_option(func):
    """``--model DIR`` (as ``model_dir``): a model bundle folder, required."""
    return click.option(
        "--model",
        "model_dir",
        type=click.Path(file_okay=False, path_type=Path),
        required=True,
        help="Model bundle folder (written by `musicnas train` or `musicnas extract`).",
    )(func)


def space_size_options(func):
    """``--space`` and the space size options; unset ones keep the preset's / config file's values."""
    options = [
        click.option("--space", "space_name", type=click.Choice(["macro", "micro"]), default=None,
                     help="Search space [default: macro]."),
        click.option("--layers", type=LAYERS, default=None, help="Macro: layers [preset: cpu 6, reference 12]."),
        click.option("--channels", type=CHANNELS, default=None,
                     help="Channels of the search network [preset: macro cpu 12, reference 36]."),
        click.option("--branches", type=click.IntRange(4, 6), default=None, help="Macro: ops to choose from, 4-6 [6]."),
        click.option("--whole-channels/--channel-ranges", default=None,
                     help="Macro: one op per layer (default), or every op on a searched channel range."),
        click.option("--cells", type=click.IntRange(1, 32), default=None, help="Micro: normal cells per stage."),
        click.option("--nodes", type=click.IntRange(1, 16), default=None, help="Micro: nodes per cell."),
    ]  # fmt: skip

    @functools.wraps(func)
    def wrapper(*args, space_name, layers, channels, branches, whole_channels, cells, nodes, **kwargs):
        kwargs["space_name"] = space_name
        kwargs["space_opts"] = {"layers": layers, "channels": channels, "branches": branches,
                                "whole_channels": whole_channels, "cells": cells, "nodes": nodes}  # fmt: skip
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def space_overrides(space: str, options: dict) -> dict | None:
    """The space options given on the command line, as Space fields (None when none were given)."""
    from musicnas.spaces import get_space_module

    space_cls = get_space_module(space).Space
    space_cls.from_options(**options)  # rejects options of the other space, bad values
    return {space_cls.OPTIONS[k]: v for k, v in options.items() if v is not None} or None
