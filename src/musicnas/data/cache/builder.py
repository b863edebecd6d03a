"""Building a feature cache into a temporary folder: features streamed to ``features.npy``, then the
clips' splits (``splits.py`` decides them per group), the train split's band statistics and
``meta.json`` last. ``lifecycle.py`` publishes the finished folder."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from musicnas import __version__
from musicnas.data.cache.reader import (
    CACHE_FORMAT,
    CACHE_VERSION,
    FEATURE_DTYPE,
    FEATURES_FILE,
    FILES_FILE,
    META_FILE,
    MIN_STD_DB,
    SPLITS_FILE,
    reason_kind,
)
from musicnas.data.extract import extract_features
from musicnas.data.features import FeatureConfig
from musicnas.data.sources import AudioSource
from musicnas.data.splits import (
    ClipRow,
    check_splits_nonempty,
    group_splits,
    missing_class_notes,
    write_splits_csv,
)
from musicnas.runtime import MusicnasError
from musicnas.utils.io import atomic_write_text, disk_full_guard

log = logging.getLogger(__name__)

_NPY_HEADER_BYTES = 128  # fixed so the final shape can be written after the data (multiple of 64)


@dataclass(frozen=True)
class BuildOptions:
    """How a cache is split and extracted (the split options are part of its key)."""

    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    workers: int | None = None
    device: str | torch.device | None = None
    batch_size: int = 64
    show_progress: bool = True


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
        with disk_full_guard(self.path, needed=block.nbytes):  # the build folder is removed on error
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
        with disk_full_guard(self.path):  # buffered rows reach the disk here
            self.fh.flush()
            os.fsync(self.fh.fileno())
        self.fh.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()


@dataclass
class _Extracted:
    """What extraction found: per clip its file and offset; per used file its seconds and clip count."""

    clip_file: list[int] = field(default_factory=list)  # per clip: index into source.files
    clip_offsets: list[float] = field(default_factory=list)  # seconds
    file_seconds: dict[int, float] = field(default_factory=dict)
    file_clips: Counter = field(default_factory=Counter)
    skipped: list[dict] = field(default_factory=list)


def build_cache(
    out: Path, source: AudioSource, key: str, config: FeatureConfig, options: BuildOptions
) -> None:
    """Extracts ``source`` into the (temporary) folder ``out``: features, splits, files, meta.json last."""
    started = time.perf_counter()
    found = _extract(out, source, config, options)
    _check_classes(source, found.file_clips, found.skipped)
    files = source.files
    group_split = group_splits(
        files, found.file_clips, options.val_fraction, options.test_fraction, options.seed
    )
    rows = [
        ClipRow(files[fi].path, files[fi].group, files[fi].label, group_split[files[fi].group], off)
        for fi, off in zip(found.clip_file, found.clip_offsets, strict=True)
    ]
    check_splits_nonempty(rows, source.classes)
    notes = missing_class_notes(rows, source.classes, {f.group: f.split for f in files if f.split})
    for note in notes:
        log.warning("%s; its metrics will not cover it", note)
    features = np.load(out / FEATURES_FILE, mmap_mode="r")
    mean, std = _band_statistics(features, np.flatnonzero([r.split == "train" for r in rows]))
    del features
    atomic_write_text(out / SPLITS_FILE, write_splits_csv(rows))
    atomic_write_text(out / FILES_FILE, _files_csv(files, found.file_clips, found.file_seconds, group_split))
    meta = _meta(source, key, config, options, rows, mean, std, found.skipped, time.perf_counter() - started)
    meta["warnings"] = notes
    # meta.json last: its presence (with complete=true) marks a finished build.
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    log.info("prepared %d clips from %d files (%d skipped) in %.1f s",
             len(rows), len(found.file_clips), len(found.skipped), meta["build"]["seconds"])  # fmt: skip


def _extract(out: Path, source: AudioSource, config: FeatureConfig, options: BuildOptions) -> _Extracted:
    """Streams every file's clips' features into ``out/features.npy``; unusable files are skipped."""
    files = source.files
    found = _Extracted(skipped=[s.to_dict() for s in source.skipped])  # found but unusable (links)
    writer = _IncrementalNpy(out / FEATURES_FILE, (config.n_mels, config.frames), FEATURE_DTYPE)
    try:
        for item in extract_features(
            [f.path for f in files], config, options.workers, options.device, options.batch_size,
            options.show_progress, desc="prepare",
        ):  # fmt: skip
            if item.skip_reason:
                log.warning("skipping %s: %s", item.path, item.skip_reason)
                found.skipped.append(
                    {"path": item.path, "label": files[item.index].label, "reason": item.skip_reason}
                )
                continue
            writer.append(item.features)
            found.clip_file.extend([item.index] * len(item.offsets))
            found.clip_offsets.extend(o / config.sample_rate for o in item.offsets)
            found.file_seconds[item.index] = item.seconds
            found.file_clips[item.index] = len(item.offsets)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return found


def _meta(source, key, config, options: BuildOptions, rows, mean, std, skipped, seconds: float) -> dict:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key,
        "musicnas": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {
            "path": str(source.root),
            "kind": source.kind,
            "files": len(source.files),
            "fingerprint": source.fingerprint(),
        },
        "config": config.to_dict(),
        "seed": int(options.seed),
        "val_fraction": float(options.val_fraction),
        "test_fraction": float(options.test_fraction),
        "classes": source.classes,
        "num_clips": len(rows),
        "shape": [len(rows), config.n_mels, config.frames],
        "dtype": "float16",
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "skipped": skipped,
        "build": {
            "seconds": round(seconds, 2),
            "workers": options.workers,
            "device": str(options.device or "auto"),
        },
        "complete": True,
    }


def _check_classes(source: AudioSource, file_clips: Counter, skipped: list[dict]) -> None:
    used = Counter(source.files[i].label for i in file_clips)
    for label in source.classes:
        if used[label] == 0:
            reasons = Counter(reason_kind(s["reason"]) for s in skipped if s["label"] == label)
            detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "no files"
            fix = "fix or replace those files, or remove the class"
            if set(reasons) == {"too short"}:  # the files are fine: the options ask for longer ones
                fix = "the files are shorter than --min-seconds asks: lower --min-seconds (or --clip-seconds)"
            raise MusicnasError(
                f"class {label!r} has no usable audio: all its files were skipped ({detail}); {fix}"
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
