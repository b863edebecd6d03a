"""Options shared by several subcommands, so they are spelled and documented the same everywhere."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from musicnas import runtime


def runtime_options(func):
    """Adds ``--device`` and ``--threads`` and passes a :class:`musicnas.runtime.Runtime` as ``rt``."""

    @click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.",
    )
    @click.option(
        "--threads", type=int, default=None, help="CPU threads for torch [default: all usable cores]."
    )
    @functools.wraps(func)
    def wrapper(*args, device: str, threads: int | None, **kwargs):
        kwargs["rt"] = runtime.setup(device, threads)
        return func(*args, **kwargs)

    return wrapper


def seed_option(func):
    return click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed for every random choice."
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
