"""Search spaces. Each space is a package exporting ``Space``, ``Arch``, ``SearchNet``, ``FixedNet`` and
``extract_subnet`` (see docs/architecture.md); this module finds them by name."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

from musicnas.runtime import MusicnasError

SPACE_MODULES = {"macro": "musicnas.spaces.macro", "micro": "musicnas.spaces.micro"}


def get_space_module(name: str) -> ModuleType:
    """The package of space ``name`` (``macro`` or ``micro``)."""
    if name not in SPACE_MODULES:
        raise MusicnasError(f"unknown search space {name!r}: choose one of {', '.join(SPACE_MODULES)}")
    return importlib.import_module(SPACE_MODULES[name])


def load_arch(source):
    """Reads an architecture from a JSON file path or an already parsed dict, for any space."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise MusicnasError(f"architecture file not found: {path}")
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MusicnasError(f"architecture file {path} is not valid JSON: {exc}") from exc
    if not isinstance(source, dict) or not isinstance(source.get("space"), dict):
        raise MusicnasError("architecture JSON must be an object with a 'space' object (written by musicnas)")
    kind = source["space"].get("type")
    if kind not in SPACE_MODULES:
        raise MusicnasError(f"architecture JSON names unknown space type {kind!r}")
    return get_space_module(kind).Arch.from_json(source)
