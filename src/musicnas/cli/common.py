"""Options shared by several subcommands, so they are spelled and documented the same everywhere."""

from __future__ import annotations

import functools

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
    @click.option("--threads", type=int, default=None, help="CPU threads for torch [default: all usable cores].")
    @functools.wraps(func)
    def wrapper(*args, device: str, threads: int | None, **kwargs):
        kwargs["rt"] = runtime.setup(device, threads)
        return func(*args, **kwargs)

    return wrapper


def seed_option(func):
    return click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")(func)
