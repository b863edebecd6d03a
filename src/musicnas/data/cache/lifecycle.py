"""Where feature caches live and when they are built: the cache key, reuse of a complete cache, building
in a hidden temporary folder (``builder.py``) published by rename, and removal of builds whose process
died. :func:`open_data` is the entry every command uses."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from pathlib import Path

import torch

from musicnas.data.cache import builder
from musicnas.data.cache.builder import BuildOptions
from musicnas.data.cache.reader import (
    CACHE_FORMAT,
    CACHE_VERSION,
    META_FILE,
    TMP_PREFIX,
    FeatureCache,
    cache_problem,
)
from musicnas.data.features import FeatureConfig
from musicnas.data.sources import AudioSource, find_audio
from musicnas.runtime import MusicnasError
from musicnas.utils.io import ensure_dir, fsync_dir

log = logging.getLogger(__name__)


def cache_key(
    source: AudioSource, config: FeatureConfig, seed: int, val_fraction: float, test_fraction: float
) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "features": config.key(),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "source": str(source.root),
        "inputs": source.fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _cache_name(source: AudioSource, key: str) -> str:
    stem = source.root.stem if source.kind == "manifest" else source.root.name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "data"
    return f"{stem[:40]}-{key}"


def is_cache(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a cache folder (has a musicnas meta.json), complete or not."""
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == CACHE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def find_caches(cache_dir: str | os.PathLike) -> list[Path]:
    """Complete caches directly inside ``cache_dir`` (or ``cache_dir`` itself if it is one), newest first."""
    cache_dir = Path(cache_dir)
    if is_cache(cache_dir):
        return [cache_dir] if cache_problem(cache_dir) is None else []
    if not cache_dir.is_dir():
        return []
    found = [
        p
        for p in cache_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and cache_problem(p) is None
    ]
    return sorted(found, key=lambda p: (p / META_FILE).stat().st_mtime, reverse=True)


def prepare(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike = ".musicnas-cache",
    config: FeatureConfig | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    workers: int | None = None,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
) -> FeatureCache:
    """Decodes, cuts, splits and extracts ``path`` (audio folder or CSV manifest) into a cache under
    ``cache_dir``, or reuses the cache already built with the same options and inputs."""
    config = config or FeatureConfig()
    source = find_audio(path)
    key = cache_key(source, config, seed, val_fraction, test_fraction)
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / _cache_name(source, key)
    if cache_problem(target) is None:
        log.info("reusing feature cache %s", target)
        return FeatureCache.open(target)
    if target.exists():
        log.warning(
            "feature cache %s is incomplete or damaged (%s); rebuilding it", target, cache_problem(target)
        )
    ensure_dir(cache_dir, "cache folder")
    _remove_stale_builds(cache_dir)
    tmp = cache_dir / f"{TMP_PREFIX}{key}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        options = BuildOptions(seed, val_fraction, test_fraction, workers, device, batch_size, show_progress)
        builder.build_cache(tmp, source, key, config, options)
        _publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return FeatureCache.open(target)


def _publish(tmp: Path, target: Path) -> None:
    """Renames the finished build into place. If another process finished the same cache first, keep
    theirs; if a damaged one is in the way, move it aside and delete it after the rename."""
    fsync_dir(tmp)
    if target.exists():
        if cache_problem(target) is None:
            log.info("another run finished %s first; using it", target)
            return
        trash = target.with_name(f"{TMP_PREFIX}old-{target.name}-{secrets.token_hex(4)}")
        os.rename(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if cache_problem(target) is None:  # lost a race to a concurrent prepare with the same key
            return
        raise
    fsync_dir(target.parent)


def _remove_stale_builds(cache_dir: Path) -> None:
    """Deletes temporary build folders whose process is gone (left by a crash or kill)."""
    for p in cache_dir.glob(f"{TMP_PREFIX}*"):
        match = re.match(rf"{re.escape(TMP_PREFIX)}[0-9a-f]+-(\d+)-[0-9a-f]+$", p.name)
        if match and _pid_alive(int(match.group(1))):
            continue
        log.info("removing unfinished cache build %s", p)
        shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_data(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike = ".musicnas-cache",
    config: FeatureConfig | None = None,
    seed: int = 0,
    workers: int | None = None,
    **prepare_options,
) -> FeatureCache:
    """The data every command trains on: ``path`` is an audio folder or CSV manifest (prepared into
    ``cache_dir``, or reused from it) or a folder that is itself a prepared cache."""
    p = Path(path).expanduser()
    cache_root = _as_cache_root(p)
    if cache_root is None:
        return prepare(p, cache_dir, config, seed=seed, workers=workers, **prepare_options)
    cache = FeatureCache.open(cache_root)
    if config is not None and config != cache.config:
        log.warning(
            "%s is a prepared cache with its own feature options; using them instead of the ones given (%s)",
            cache_root,
            ", ".join(f"{k}={v}" for k, v in cache.config.to_dict().items() if getattr(config, k) != v),
        )
    return cache


def _as_cache_root(p: Path) -> Path | None:
    """The cache folder ``p`` names (itself, or its only cache subfolder), or None for audio input."""
    if is_cache(p):
        return p
    if not p.is_dir():
        return None
    # hidden folders are unfinished builds (see TMP_PREFIX), never candidates
    subcaches = [c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".") and is_cache(c)]
    if not subcaches:
        return None
    complete = [c for c in subcaches if cache_problem(c) is None]
    if len(complete) == 1:
        return complete[0]
    names = ", ".join(sorted(c.name for c in subcaches))
    raise MusicnasError(
        f"{p} holds {len(complete)} complete feature caches ({names}); pass one of them as --data, or the audio folder"
    )
