"""Logging set-up shared by the CLI and the library."""

from __future__ import annotations

import logging
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
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def progress(iterable=None, **kwargs):
    """A tqdm progress bar that hides itself when output is not a terminal unless forced."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
