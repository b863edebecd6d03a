"""Logging set-up shared by the CLI and the library."""

from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm


class TqdmHandler(logging.Handler):
    """Writes log lines through tqdm so they do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # stderr, like the progress bars: stdout stays clean for --json output and pipes
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    root = logging.getLogger("musicnas")
    root.handlers.clear()
    handler = TqdmHandler()
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr. It hides itself when stderr is not a terminal (CI logs, pipes),
    unless ``MUSICNAS_PROGRESS=1``; ``disable=True`` or ``MUSICNAS_PROGRESS=0`` (ranks > 0 of a
    data-parallel run) always hides it."""
    if kwargs.pop("disable", False) or os.environ.get("MUSICNAS_PROGRESS") == "0":
        kwargs["disable"] = True
    else:
        kwargs["disable"] = False if os.environ.get("MUSICNAS_PROGRESS") == "1" else None
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
