"""``musicnas report``: one self-contained HTML page about a search run and/or a trained model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_or_model", type=click.Path(exists=True, path_type=Path), metavar="RUN_OR_MODEL")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write [default: report.html inside RUN_OR_MODEL].",
)
@click.option("--title", default=None, help="Page title [default: 'musicnas report: <folder name>'].")
def report(run_or_model: Path, out: Path | None, title: str | None) -> None:
    """Write an HTML report of a search run or a trained model.

    RUN_OR_MODEL is a folder written by `musicnas search --out` (search curves, controller, chosen
    architecture, top candidates, ranking quality), by `musicnas train --out` (training curves,
    evaluation and confusion matrix; its search run too when the model records where it came from), or a
    folder holding one of each and/or a benchmark's ranking.json and benchmark.json. Sections without
    data are skipped with a note.

    The page is one file: plots are embedded PNG images, there is no script and nothing is fetched, so it
    can be mailed or archived as is.
    """
    from musicnas.report import write_report

    path = write_report(run_or_model, out, title=title)
    click.echo(str(path))  # only the path on stdout, so scripts can use it
