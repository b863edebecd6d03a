"""Self-contained HTML reports of searches and trained models.

``write_report(path)`` reads a search run directory, a model bundle directory (following it back to its
search run when its summary says where that is) or a folder holding one of each, draws every section it
has data for with headless matplotlib, and writes one HTML file with the images embedded.
"""

from __future__ import annotations

import os
from pathlib import Path

from musicnas.utils.io import atomic_write_text

__all__ = ["render_report", "write_report"]


def render_report(path: str | os.PathLike, title: str | None = None) -> str:
    """The report page for ``path`` as an HTML string."""
    from musicnas.report.inputs import find_inputs
    from musicnas.report.page import render_page

    return render_page(find_inputs(path), title=title)


def write_report(
    path: str | os.PathLike, out: str | os.PathLike | None = None, title: str | None = None
) -> Path:
    """Writes the report for ``path`` to ``out`` (default: ``report.html`` inside the run/model directory,
    or beside the file given) and returns where it went."""
    source = Path(path)
    page = render_report(source, title=title)
    if out is None:
        out = (source if source.is_dir() else source.parent) / "report.html"
    out = Path(out)
    atomic_write_text(out, page)
    # The atomic writer's temporary file is private (mkstemp: 0600); a report is meant to be shared.
    out.chmod(0o644)
    return out
