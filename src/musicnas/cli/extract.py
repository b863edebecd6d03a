"""``musicnas extract``: bundle a searched architecture's sub-network without retraining."""

from __future__ import annotations

from pathlib import Path

import click

from musicnas.cli.common import cache_option


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Search run folder (written by `musicnas search --out`).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model bundle folder to write.",
)
@click.option(
    "--arch",
    "arch_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Architecture JSON to extract [default: RUN/arch.json].",
)
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Data [default: the run's own].")
@cache_option
def extract(run_dir, out, arch_path, data, cache):
    """Write a model bundle of the architecture's sub-network, cut out of the search network with the
    shared weights the search trained: a classifier with no retraining at all.

    The bundle works with evaluate, predict, export and musicnas.load like a retrained one. Retraining
    from scratch (`musicnas train`) usually scores better; this is the quick path.
    """
    from musicnas.export.subnet import bundle_from_search
    from musicnas.spaces import load_arch

    dataset = None
    if data is not None:
        from musicnas.data.cache import open_data

        dataset = open_data(data, cache)
    arch = load_arch(arch_path) if arch_path is not None else None
    path = bundle_from_search(run_dir, out, data=dataset, arch=arch)
    click.echo(f"wrote {path}")
