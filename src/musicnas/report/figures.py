"""Headless figure plumbing: matplotlib Figures rendered by the Agg canvas straight to PNG bytes.

``matplotlib.figure.Figure`` is used without pyplot, so no GUI backend is ever selected, no global
figure registry grows, and reports can be drawn from any thread or a server without a display.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software" or date metadata: the same inputs give the same bytes.
    # bbox "tight": long tick labels (class names) are never cut off at the figure's edge.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.08)
    return buf.getvalue()


def plain(text: object, max_chars: int | None = None) -> str:
    """Text shown literally by matplotlib: ``$`` would otherwise start mathtext (and a lone or odd one,
    e.g. in a class name, makes drawing fail). ``max_chars`` shortens long labels with an ellipsis."""
    text = str(text)
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "\u2026"
    return text.replace("$", r"\$")
