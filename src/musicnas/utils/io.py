"""Atomic file writes and safe checkpoint loading.

Every file a long run depends on is written to a temporary file in the same folder, fsynced and then
renamed over the target, so a crash leaves either the old file or the new one, never half of one.
Checkpoints are loaded with ``weights_only=True``: loading never executes pickled code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from musicnas.runtime import MusicnasError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yields a temporary path beside ``target``; on success it is fsynced and renamed onto it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); outputs get the usual permissions the umask allows.
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise MusicnasError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MusicnasError(f"{what} {path} is not valid JSON ({exc}); was it truncated or edited?") from exc


def save_checkpoint(target: str | os.PathLike, state: dict) -> None:
    """Writes a checkpoint atomically. ``state`` may hold tensors, numbers, strings, lists and dicts
    (what ``torch.load(weights_only=True)`` accepts); nothing else, so loading stays code-free."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(target, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Loads a checkpoint without executing pickled code; a truncated, corrupt or unsafe file gives a
    :class:`MusicnasError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MusicnasError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncation, bad zip, unsafe globals
        raise MusicnasError(
            f"checkpoint {path} cannot be loaded safely ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it is truncated, corrupt or contains pickled code. Resume from an earlier checkpoint or start again."
        ) from exc
    if not isinstance(state, dict):
        raise MusicnasError(f"checkpoint {path} does not hold a state dict")
    return state
