"""The feature cache's reader: :class:`FeatureCache` memory-maps a finished cache, and
:func:`cache_problem` says why a folder is not one. Building is ``builder.py``; where caches live and
when they are (re)built is ``lifecycle.py``."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicnas.data.features import FeatureConfig
from musicnas.data.sources import SPLITS
from musicnas.data.splits import ClipRow, read_splits_csv
from musicnas.runtime import MusicnasError

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
        problem = cache_problem(root)
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
                "by_reason": dict(Counter(reason_kind(s["reason"]) for s in skipped)),
                "files": skipped,
            },
            "created": self.meta.get("created"),
            "build_seconds": self.meta.get("build", {}).get("seconds"),
            "size_mb": round(sum(p.stat().st_size for p in self.root.iterdir() if p.is_file()) / 2**20, 2),
        }

    def __repr__(self) -> str:
        return f"FeatureCache({self.root}, clips={len(self)}, classes={self.num_classes}, shape={self.input_shape})"


def reason_kind(reason: str) -> str:
    """The reason's leading words ("too short", "silent", ...) for counting."""
    return re.split(r"[(:]", reason, maxsplit=1)[0].strip()


def _read_files_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{**r, "seconds": float(r["seconds"]), "clips": int(r["clips"])} for r in csv.DictReader(fh)]


def cache_problem(root: Path) -> str | None:
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
