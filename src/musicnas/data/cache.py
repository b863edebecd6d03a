"""The feature cache: ``prepare()`` builds it once, :class:`FeatureCache` memory-maps it for training.

Layout of one cache (``CACHE_DIR/<name>-<key>/``)::

    features.npy   float16 [clips, n_mels, frames], written incrementally, read with mmap
    splits.csv     one row per clip: path, group, label, split, offset (seconds)
    files.csv      one row per used file: path, label, group, split, seconds, clips
    meta.json      options, classes, normalisation statistics, skipped files; written last

``<key>`` hashes every option that affects the contents (feature config, split fractions and seed, and a
fingerprint of the input files' paths, labels, sizes and mtimes), so changing any of them builds a new
cache and the same options reuse the old one. A cache is built in a hidden temporary folder and renamed
into place only when complete, and :meth:`FeatureCache.open` checks meta.json and the array shape, so an
interrupted run never leaves something that loads as valid.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import struct
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicnas import __version__
from musicnas.data.extract import extract_features
from musicnas.data.features import FeatureConfig
from musicnas.data.sources import SPLITS, AudioSource, find_audio
from musicnas.data.splits import (
    ClipRow,
    assign_splits,
    check_splits_nonempty,
    majority_label,
    read_splits_csv,
    write_splits_csv,
)
from musicnas.runtime import MusicnasError
from musicnas.utils.io import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)

CACHE_FORMAT = "musicnas-features"
CACHE_VERSION = 1
FEATURES_FILE = "features.npy"
SPLITS_FILE = "splits.csv"
FILES_FILE = "files.csv"
META_FILE = "meta.json"
TMP_PREFIX = ".tmp-"
FEATURE_DTYPE = np.dtype("<f2")
# A mel band that never changes in the training data would otherwise be divided by ~0.
MIN_STD_DB = 0.1
_NPY_HEADER_BYTES = 128  # fixed so the final shape can be written after the data (multiple of 64)


# ----------------------------------------------------------------------------------------- writing
class _IncrementalNpy:
    """Appends rows to a .npy file whose first dimension is only known at the end.

    The header slot is reserved up front and filled in by :meth:`finish`, so features stream to disk
    and a dataset larger than memory never has to be held.
    """

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.row_shape, self.dtype = path, tuple(row_shape), np.dtype(dtype)
        self.rows = 0
        self.fh = open(path, "wb")  # noqa: SIM115 - stays open across append() calls; closed by finish/abort
        self.fh.write(b"\0" * _NPY_HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"row shape {block.shape[1:]} != {self.row_shape}")
        self.fh.write(block.tobytes())
        self.rows += len(block)

    def finish(self) -> None:
        shape = (self.rows, *self.row_shape)
        text = f"{{'descr': {self.dtype.str!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        prefix = b"\x93NUMPY\x01\x00"
        room = _NPY_HEADER_BYTES - len(prefix) - 2
        if len(text) + 1 > room:
            raise ValueError(f"shape {shape} does not fit the reserved .npy header")
        header = (text + " " * (room - len(text) - 1) + "\n").encode("latin1")
        self.fh.seek(0)
        self.fh.write(prefix + struct.pack("<H", len(header)) + header)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()


# ------------------------------------------------------------------------------------------- keys
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


# ----------------------------------------------------------------------------------------- reading
class FeatureCache:
    """A prepared feature cache, memory-mapped. See docs/architecture.md "Data contract"."""

    def __init__(self, root: Path, meta: dict, rows: list[ClipRow]):
        self.root = Path(root)
        self.meta = meta
        self.config = FeatureConfig.from_dict(meta["config"])
        self.classes: list[str] = list(meta["classes"])
        self.num_classes = len(self.classes)
        class_index = {c: i for i, c in enumerate(self.classes)}
        self.labels = np.array([class_index[r.label] for r in rows], dtype=np.int64)
        self.splits = np.array([r.split for r in rows], dtype="<U5")
        groups = [r.group for r in rows]
        unique_groups, self.track_ids = np.unique(np.array(groups, dtype=object), return_inverse=True)
        self.track_ids = self.track_ids.astype(np.int64)
        self.groups: list[str] = list(unique_groups)
        self.offsets = np.array([r.offset for r in rows], dtype=np.float64)
        self.paths: list[str] = [r.path for r in rows]
        self.mean = np.asarray(meta["mean"], dtype=np.float32)
        self.std = np.asarray(meta["std"], dtype=np.float32)
        self._features: np.ndarray | None = None

    # -- opening and validation
    @classmethod
    def open(cls, root: str | os.PathLike) -> FeatureCache:
        """Opens a prepared cache; raises :class:`MusicnasError` if it is incomplete or damaged."""
        root = Path(root)
        problem = _validate(root)
        if problem:
            raise MusicnasError(
                f"feature cache {root} is not usable: {problem}. Delete the folder and run "
                "`musicnas data prepare` again (an interrupted prepare leaves such a state)."
            )
        meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
        rows = read_splits_csv((root / SPLITS_FILE).read_text(encoding="utf-8"))
        cache = cls(root, meta, rows)
        cache._open_features()
        return cache

    def _open_features(self) -> np.ndarray:
        if self._features is None:
            self._features = np.load(self.root / FEATURES_FILE, mmap_mode="r")
        return self._features

    def __getstate__(self):  # a memmap would be pickled by value: reopen it in the other process instead
        state = dict(self.__dict__)
        state["_features"] = None
        return state

    # -- contract
    @property
    def features(self) -> np.ndarray:
        """The float16 [clips, n_mels, frames] memmap (unnormalised dB)."""
        return self._open_features()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.config.n_mels, self.config.frames)

    def __len__(self) -> int:
        return len(self.labels)

    def split_indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise MusicnasError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.splits == split).astype(np.int64)

    def get_batch(self, indices, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips ``indices`` as (x float32 [B, 1, n_mels, frames], y int64 [B]) CPU tensors."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"clip index out of range [0, {len(self)})")
        # Reading a memmap in ascending order is sequential I/O; then restore the asked order.
        order = np.argsort(idx, kind="stable")
        block = np.empty((idx.size, self.config.n_mels, self.config.frames), dtype=np.float32)
        block[order] = self.features[idx[order]]
        x = torch.from_numpy(block)
        if normalize:
            x = (x - torch.from_numpy(self.mean)[:, None]) / torch.from_numpy(self.std)[:, None]
        return x.unsqueeze(1), torch.from_numpy(self.labels[idx])

    def summary(self) -> dict[str, Any]:
        files = _read_files_csv(self.root / FILES_FILE)
        per_split: dict[str, Any] = {}
        for split in SPLITS:
            mask = self.splits == split
            split_files = [f for f in files if f["split"] == split]
            per_class = Counter(self.classes[i] for i in self.labels[mask])
            per_split[split] = {
                "clips": int(mask.sum()),
                "groups": len(set(self.track_ids[mask].tolist())),
                "files": len(split_files),
                "hours": round(sum(f["seconds"] for f in split_files) / 3600, 4),
                "clips_per_class": {c: int(per_class.get(c, 0)) for c in self.classes},
            }
        skipped = self.meta.get("skipped", [])
        return {
            "root": str(self.root),
            "key": self.meta["key"],
            "source": self.meta["source"],
            "classes": self.classes,
            "num_classes": self.num_classes,
            "clips": len(self),
            "groups": len(self.groups),
            "input_shape": list(self.input_shape),
            "features": self.config.to_dict(),
            "seed": self.meta["seed"],
            "val_fraction": self.meta["val_fraction"],
            "test_fraction": self.meta["test_fraction"],
            "splits": per_split,
            "skipped": {
                "count": len(skipped),
                "by_reason": dict(Counter(_reason_kind(s["reason"]) for s in skipped)),
                "files": skipped,
            },
            "created": self.meta.get("created"),
            "build_seconds": self.meta.get("build", {}).get("seconds"),
            "size_mb": round(sum(p.stat().st_size for p in self.root.iterdir() if p.is_file()) / 2**20, 2),
        }

    def __repr__(self) -> str:
        return f"FeatureCache({self.root}, clips={len(self)}, classes={self.num_classes}, shape={self.input_shape})"


def _reason_kind(reason: str) -> str:
    """The reason's leading words ("too short", "silent", ...) for counting."""
    return re.split(r"[(:]", reason, maxsplit=1)[0].strip()


def _read_files_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{**r, "seconds": float(r["seconds"]), "clips": int(r["clips"])} for r in csv.DictReader(fh)]


def _validate(root: Path) -> str | None:
    """Why ``root`` is not a complete cache, or None if it is."""
    if not root.is_dir():
        return "folder not found"
    meta_path = root / META_FILE
    if not meta_path.is_file():
        return f"{META_FILE} missing (the build did not finish)"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{META_FILE} unreadable ({exc})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return f"{META_FILE} is not a musicnas feature cache"
    if meta.get("version") != CACHE_VERSION:
        return f"cache version {meta.get('version')} is not the supported {CACHE_VERSION}"
    if meta.get("complete") is not True:
        return "not marked complete"
    for name in (FEATURES_FILE, SPLITS_FILE, FILES_FILE):
        if not (root / name).is_file():
            return f"{name} missing"
    try:
        config = FeatureConfig.from_dict(meta["config"])
        expected = (int(meta["num_clips"]), config.n_mels, config.frames)
        array = np.load(root / FEATURES_FILE, mmap_mode="r")
    except MusicnasError as exc:
        return str(exc)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        return f"{FEATURES_FILE} or {META_FILE} damaged ({type(exc).__name__}: {exc})"
    if array.shape != expected or array.dtype != FEATURE_DTYPE:
        return f"{FEATURES_FILE} has shape {array.shape} {array.dtype}, expected {expected} float16"
    with open(root / SPLITS_FILE, encoding="utf-8") as fh:
        rows = sum(1 for _ in fh) - 1
    if rows != expected[0]:
        return f"{SPLITS_FILE} has {rows} rows for {expected[0]} clips"
    if len(meta.get("mean", [])) != config.n_mels or len(meta.get("std", [])) != config.n_mels:
        return "normalisation statistics missing"
    return None


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
        return [cache_dir] if _validate(cache_dir) is None else []
    if not cache_dir.is_dir():
        return []
    found = [
        p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and _validate(p) is None
    ]
    return sorted(found, key=lambda p: (p / META_FILE).stat().st_mtime, reverse=True)


# ----------------------------------------------------------------------------------------- building
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
    if _validate(target) is None:
        log.info("reusing feature cache %s", target)
        return FeatureCache.open(target)
    if target.exists():
        log.warning(
            "feature cache %s is incomplete or damaged (%s); rebuilding it", target, _validate(target)
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(cache_dir)
    tmp = cache_dir / f"{TMP_PREFIX}{key}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _build(
            tmp,
            source,
            key,
            config,
            seed,
            val_fraction,
            test_fraction,
            workers,
            device,
            batch_size,
            show_progress,
        )
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
        if _validate(target) is None:
            log.info("another run finished %s first; using it", target)
            return
        trash = target.with_name(f"{TMP_PREFIX}old-{target.name}-{secrets.token_hex(4)}")
        os.rename(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if _validate(target) is None:  # lost a race to a concurrent prepare with the same key
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


def _build(
    out: Path,
    source: AudioSource,
    key: str,
    config: FeatureConfig,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    workers: int | None,
    device,
    batch_size: int,
    show_progress: bool,
) -> None:
    started = time.perf_counter()
    files = source.files
    writer = _IncrementalNpy(out / FEATURES_FILE, (config.n_mels, config.frames), FEATURE_DTYPE)
    clip_file: list[int] = []  # per clip: index into files
    clip_offsets: list[float] = []
    file_seconds: dict[int, float] = {}
    file_clips: Counter = Counter()
    skipped: list[dict] = []
    try:
        for item in extract_features(
            [f.path for f in files], config, workers, device, batch_size, show_progress, desc="prepare"
        ):
            if item.skip_reason:
                log.warning("skipping %s: %s", item.path, item.skip_reason)
                skipped.append(
                    {"path": item.path, "label": files[item.index].label, "reason": item.skip_reason}
                )
                continue
            writer.append(item.features)
            clip_file.extend([item.index] * len(item.offsets))
            clip_offsets.extend(o / config.sample_rate for o in item.offsets)
            file_seconds[item.index] = item.seconds
            file_clips[item.index] = len(item.offsets)
        writer.finish()
    except BaseException:
        writer.abort()
        raise

    _check_classes(source, file_clips, skipped)
    classes = source.classes
    group_files: dict[str, list[int]] = defaultdict(list)
    for i in file_clips:
        group_files[files[i].group].append(i)
    group_labels = {
        g: majority_label(files[i].label for i in idx for _ in range(file_clips[i]))
        for g, idx in group_files.items()
    }
    explicit = _explicit_splits(files, group_files)
    group_split = assign_splits(group_labels, explicit, val_fraction, test_fraction, seed)
    rows = [
        ClipRow(files[fi].path, files[fi].group, files[fi].label, group_split[files[fi].group], off)
        for fi, off in zip(clip_file, clip_offsets, strict=True)
    ]
    check_splits_nonempty(rows, classes)
    _warn_missing_classes(rows, classes)

    features = np.load(out / FEATURES_FILE, mmap_mode="r")
    train = np.array([r.split == "train" for r in rows])
    mean, std = _band_statistics(features, np.flatnonzero(train))
    del features

    atomic_write_text(out / SPLITS_FILE, write_splits_csv(rows))
    atomic_write_text(out / FILES_FILE, _files_csv(files, file_clips, file_seconds, group_split))
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key,
        "musicnas": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {
            "path": str(source.root),
            "kind": source.kind,
            "files": len(files),
            "fingerprint": source.fingerprint(),
        },
        "config": config.to_dict(),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "classes": classes,
        "num_clips": len(rows),
        "shape": [len(rows), config.n_mels, config.frames],
        "dtype": "float16",
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "skipped": skipped,
        "build": {
            "seconds": round(time.perf_counter() - started, 2),
            "workers": workers,
            "device": str(device or "auto"),
        },
        "complete": True,
    }
    # meta.json last: its presence (with complete=true) marks a finished build.
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    log.info(
        "prepared %d clips from %d files (%d skipped) in %.1f s",
        len(rows),
        len(file_clips),
        len(skipped),
        meta["build"]["seconds"],
    )


def _check_classes(source: AudioSource, file_clips: Counter, skipped: list[dict]) -> None:
    used = Counter(source.files[i].label for i in file_clips)
    for label in source.classes:
        if used[label] == 0:
            reasons = Counter(_reason_kind(s["reason"]) for s in skipped if s["label"] == label)
            detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "no files"
            raise MusicnasError(
                f"class {label!r} has no usable audio: all its files were skipped ({detail}); "
                "fix or replace those files, or remove the class"
            )


def _explicit_splits(files, group_files: dict[str, list[int]]) -> dict[str, str]:
    explicit: dict[str, str] = {}
    for group, idx in group_files.items():
        given = {files[i].split for i in idx if files[i].split}
        if len(given) > 1:
            raise MusicnasError(
                f"group {group!r} has files in several splits ({', '.join(sorted(given))}) in the manifest; a "
                "group must stay in one split: fix the split or group column"
            )
        if given:
            explicit[group] = given.pop()
    return explicit


def _warn_missing_classes(rows: list[ClipRow], classes: list[str]) -> None:
    present = defaultdict(set)
    for r in rows:
        present[r.split].add(r.label)
    for split in SPLITS:
        missing = [c for c in classes if c not in present[split]]
        if missing:
            log.warning(
                "split %s has no clips of class(es) %s (fewer than 3 files/groups in them); its metrics will "
                "not cover them",
                split,
                ", ".join(missing),
            )


def _band_statistics(
    features: np.ndarray, rows: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and std over all frames of the given clips, streamed in chunks (float64)."""
    n_mels = features.shape[1]
    total = np.zeros(n_mels)
    total_sq = np.zeros(n_mels)
    count = 0
    for start in range(0, len(rows), chunk):
        block = np.asarray(features[rows[start : start + chunk]], dtype=np.float64)
        total += block.sum(axis=(0, 2))
        total_sq += np.square(block).sum(axis=(0, 2))
        count += block.shape[0] * block.shape[2]
    mean = total / max(count, 1)
    var = np.maximum(total_sq / max(count, 1) - mean**2, 0.0)
    return mean.astype(np.float32), np.maximum(np.sqrt(var), MIN_STD_DB).astype(np.float32)


def _files_csv(files, file_clips: Counter, file_seconds: dict, group_split: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "group", "split", "seconds", "clips"])
    for i in sorted(file_clips):
        f = files[i]
        w.writerow([f.path, f.label, f.group, group_split[f.group], f"{file_seconds[i]:.3f}", file_clips[i]])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ entry
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
    complete = [c for c in subcaches if _validate(c) is None]
    if len(complete) == 1:
        return complete[0]
    names = ", ".join(sorted(c.name for c in subcaches))
    raise MusicnasError(
        f"{p} holds {len(complete)} complete feature caches ({names}); pass one of them as --data, or the audio folder"
    )
