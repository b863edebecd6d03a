"""Atomic file writes and safe checkpoint loading.

Every file a long run depends on is written to a temporary file in the same folder, fsynced and then
renamed over the target, so a crash leaves either the old file or the new one, never half of one.
Checkpoints are loaded with ``weights_only=True``: loading never executes pickled code.

A full disk (ENOSPC) or an exhausted quota (EDQUOT) while writing becomes one :class:`MusicnasError` that
says what could not be written, where, and how much was needed when that is known; the temporary file is
removed, so the previous version of the target (e.g. the last good checkpoint) stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from musicnas.runtime import MusicnasError, describe_exception

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def _size_text(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            if folder.is_dir():
                return shutil.disk_usage(folder).free
    return None


def disk_full_error(exc: OSError, target: str | os.PathLike, needed: int | None = None) -> MusicnasError:
    """The message for a write that ran out of space: what, where, how much was needed and is free."""
    target = Path(target)
    cause = "the disk quota is exhausted" if exc.errno == errno.EDQUOT else "no space is left on the device"
    sizes = []
    if needed is not None:
        sizes.append(f"needed {_size_text(int(needed))}")
    free = _free_bytes(target.parent)
    if free is not None:
        sizes.append(f"{_size_text(free)} free")
    detail = f" ({', '.join(sizes)})" if sizes else ""
    return MusicnasError(
        f"could not write {target.name} in {target.parent}: {cause}{detail}. The partial file was removed; "
        "free some space or choose an output folder on another disk, then run the command again"
    )


@contextlib.contextmanager
def disk_full_guard(target: str | os.PathLike, needed: int | None = None):
    """Turns ENOSPC/EDQUOT raised inside the block into :func:`disk_full_error` for ``target``."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(exc, target, needed) from exc
        raise


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Creates folder ``path`` (and its parents); a file in the way is a MusicnasError, not a traceback."""
    path = Path(path)
    try:
        with disk_full_guard(path):
            path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise MusicnasError(
            f"{what} {path} cannot be created: {blocker} is a file, not a folder; choose another path"
        ) from exc
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, needed: int | None = None):
    """Yields a temporary path beside ``target``; on success it is fsynced and renamed onto it.

    Running out of space anywhere in the block is a :func:`disk_full_error` (``needed``: the size being
    written, when the caller knows it); the temporary file is removed whatever happens."""
    target = Path(target)
    ensure_dir(target.parent)
    with disk_full_guard(target, needed):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            # mkstemp makes the file private (0600); outputs get the usual permissions the umask allows.
            os.chmod(tmp_path, 0o666 & ~_UMASK)
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
            fsync_dir(target.parent)
        finally:
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target, needed=len(data)) as tmp:
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
    # musicnas keeps one checkpoint per run (written atomically), so there is no earlier one to go back to.
    remedy = "restore the file from a backup or start the run again with a new --out"
    if path.stat().st_size == 0:
        raise MusicnasError(f"checkpoint {path} is empty (0 bytes): it was cut off when written; {remedy}")
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickle protocols in a damaged file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise MusicnasError(
                f"checkpoint {path} is corrupt ({describe_exception(exc)}); {remedy}"
            ) from exc
        raise MusicnasError(
            f"checkpoint {path} holds pickled Python objects, not only tensors and plain data; musicnas never "
            f"loads pickles (they can run code when opened). It was not written by musicnas: {remedy}"
        ) from exc
    except Exception as exc:  # torch raises several types for truncation and bad zip archives
        raise MusicnasError(
            f"checkpoint {path} is truncated or corrupt ({describe_exception(exc)}); {remedy}"
        ) from exc
    if not isinstance(state, dict):
        raise MusicnasError(f"checkpoint {path} does not hold a state dict; {remedy}")
    return state
