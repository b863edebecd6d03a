"""What both spaces' architectures and spaces share: the architecture JSON header, what counts as an
integer in an architecture, and turning CLI options into a space's fields."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from musicnas.runtime import MusicnasError

ARCH_FORMAT = "musicnas-arch"
ARCH_VERSION = 1


def as_int(value: Any, what: str) -> int:
    """``value`` as a Python int: ints and numpy/torch integer scalars; never a bool or a float."""
    if isinstance(value, bool):
        raise MusicnasError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise MusicnasError(f"{what} must be an integer, got {value!r}") from None


def soft_int(value: Any) -> Any:
    """Python int for what :func:`as_int` accepts (so archs hash, compare and serialise alike); anything
    else is left as it is for the architecture's validation to reject with context."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def check_arch_header(data: Any) -> dict:
    """``data`` if it is an architecture JSON object of this format and version; else a MusicnasError."""
    if not isinstance(data, dict):
        raise MusicnasError("architecture JSON must be an object written by musicnas")
    if data.get("format") != ARCH_FORMAT:
        raise MusicnasError(
            f"not a musicnas architecture: format is {data.get('format')!r}, expected {ARCH_FORMAT!r}"
        )
    if data.get("version") != ARCH_VERSION:
        raise MusicnasError(
            f"architecture JSON version {data.get('version')!r} is not supported (this musicnas reads "
            f"version {ARCH_VERSION}); re-create it with this version"
        )
    return data


def fields_from_options(
    options: dict, mapping: dict[str, str], foreign_message: Callable[[list[str]], str]
) -> dict:
    """The space fields that CLI ``options`` set (None = not given), through the space's ``mapping``
    (option name -> field name). Options of another space are refused with ``foreign_message(flags)``,
    so a typo'd command line does not silently search a different space."""
    foreign = [k for k, v in options.items() if k not in mapping and v is not None]
    if foreign:
        raise MusicnasError(foreign_message(["--" + k.replace("_", "-") for k in foreign]))
    return {mapping[k]: v for k, v in options.items() if k in mapping and v is not None}
