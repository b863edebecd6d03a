"""Group-wise, class-stratified, seeded train/val/test splits, and the splits.csv table.

A group (by default one source file, or a manifest's ``group`` such as an album or artist) lands in
exactly one split, so clips cut from the same recording never sit on both sides of an evaluation. Each
class is split on its own with a generator seeded from (seed, class name): adding files to one class
does not reshuffle the others.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from musicnas.data.sources import SPLITS
from musicnas.runtime import MusicnasError

SPLITS_COLUMNS = ("path", "group", "label", "split", "offset")


@dataclass(frozen=True)
class ClipRow:
    path: str
    group: str
    label: str
    split: str
    offset: float  # seconds from the start of the file


def clip_offsets(num_samples: int, clip_samples: int, hop_samples: int, min_samples: int) -> list[int]:
    """Start offsets (samples) of the clips cut from a signal of ``num_samples``: whole clips every
    ``hop_samples``; a signal shorter than one clip but at least ``min_samples`` gives one padded clip at
    0; a shorter one gives none. (The streaming cutter in audio.iter_clips follows the same rule.)"""
    if num_samples >= clip_samples:
        return list(range(0, num_samples - clip_samples + 1, hop_samples))
    return [0] if num_samples >= max(min_samples, 1) else []


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def split_targets(n_groups: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """How many of a class's ``n_groups`` groups go to each split.

    Rounded fractions, but a class with at least 3 groups gets at least one in every split whose fraction
    is positive (so every split sees every class), and train always keeps at least one.
    """
    want = {"val": _round_half_up(n_groups * val_fraction), "test": _round_half_up(n_groups * test_fraction)}
    fractions = {"val": val_fraction, "test": test_fraction}
    if n_groups >= 3:
        for s in want:
            if fractions[s] > 0:
                want[s] = max(want[s], 1)
    elif n_groups == 2:
        # One group to spare: it goes to the split with the larger fraction (val on a tie, as the search
        # needs validation data for its reward).
        want = {"val": 0, "test": 0}
        if max(fractions.values()) > 0:
            want["val" if val_fraction >= test_fraction else "test"] = 1
    else:
        want = {"val": 0, "test": 0}
    while n_groups - want["val"] - want["test"] < 1 and (want["val"] or want["test"]):
        larger = "val" if want["val"] >= want["test"] else "test"
        want[larger] -= 1
    return {"train": n_groups - want["val"] - want["test"], **want}


def _class_generator(seed: int, label: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{int(seed)}\0{label}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def assign_splits(
    group_labels: Mapping[str, str],
    explicit: Mapping[str, str] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, str]:
    """Maps every group to "train", "val" or "test".

    ``group_labels``: group -> its class (the majority label of its clips). ``explicit``: group -> split
    for groups whose split was given (a manifest's ``split`` column); those always win, and count towards
    their class's targets.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise MusicnasError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum to less than 1"
        )
    explicit = dict(explicit or {})
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, label in group_labels.items():
        by_class[label].append(group)
    result: dict[str, str] = {}
    for label in sorted(by_class):
        groups = sorted(by_class[label])
        fixed = Counter(explicit[g] for g in groups if g in explicit)
        free = [g for g in groups if g not in explicit]
        for g in groups:
            if g in explicit:
                result[g] = explicit[g]
        if not free:
            continue
        order = _class_generator(seed, label).permutation(len(free))
        shuffled = [free[i] for i in order]
        targets = split_targets(len(groups), val_fraction, test_fraction)
        n_test = min(max(0, targets["test"] - fixed["test"]), len(shuffled))
        n_val = min(max(0, targets["val"] - fixed["val"]), len(shuffled) - n_test)
        if fixed["train"] == 0 and n_test + n_val == len(shuffled) and len(shuffled) > 0:
            # keep at least one training group for the class whenever there is a free one
            if n_val:
                n_val -= 1
            elif n_test:
                n_test -= 1
        for i, g in enumerate(shuffled):
            result[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return result


def majority_label(labels: Iterable[str]) -> str:
    counts = Counter(labels)
    best = max(counts.values())
    return min(label for label, n in counts.items() if n == best)


def check_splits_nonempty(rows: list[ClipRow], classes: list[str]) -> None:
    """A split with no clips at all is a hard error; a class missing from val or test is only logged
    by the caller (possible with fewer than 3 groups in a class)."""
    present = Counter(r.split for r in rows)
    empty = [s for s in SPLITS if present[s] == 0]
    if empty:
        counts = ", ".join(f"{s}: {present[s]}" for s in SPLITS)
        raise MusicnasError(
            f"split(s) {', '.join(empty)} would hold no clips ({counts}); add more files per class (at least 3 "
            "groups per class), raise --val-fraction/--test-fraction, or fix the manifest's split column"
        )


def missing_class_notes(
    rows: list[ClipRow], classes: list[str], explicit: Mapping[str, str] | None = None
) -> list[str]:
    """One line per (split, class) without clips, saying why: the manifest pinned all the class's groups
    elsewhere, or the class has too few groups to reach every split."""
    explicit = explicit or {}
    groups: dict[str, set[str]] = defaultdict(set)
    present: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        groups[r.label].add(r.group)
        present[r.split].add(r.label)
    notes = []
    for split in SPLITS:
        for label in classes:
            if label in present[split]:
                continue
            class_groups = groups[label]
            pinned = Counter(explicit[g] for g in class_groups if g in explicit)
            if class_groups and sum(pinned.values()) == len(class_groups):
                where = ", ".join(f"{s} ({n})" for s, n in sorted(pinned.items()))
                why = f"the manifest's split column pins all its {len(class_groups)} group(s) to {where}"
            elif len(class_groups) < 3:
                why = f"it has only {len(class_groups)} file(s)/group(s) (3 or more reach every split)"
            else:
                why = f"the {split} fraction leaves it no group"
            notes.append(f"split {split} has no clips of class {label!r}: {why}")
    return notes


def write_splits_csv(rows: Iterable[ClipRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SPLITS_COLUMNS)
    for r in rows:
        writer.writerow([r.path, r.group, r.label, r.split, f"{r.offset:.6f}"])
    return buf.getvalue()


def read_splits_csv(text: str) -> list[ClipRow]:
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != SPLITS_COLUMNS:
        raise ValueError(f"splits.csv header is {reader.fieldnames}, expected {list(SPLITS_COLUMNS)}")
    return [ClipRow(r["path"], r["group"], r["label"], r["split"], float(r["offset"])) for r in reader]


def group_splits(
    files, file_clips: dict[int, int], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """The split of every group (track) among the used files (``file_clips``: file index -> clips).

    A group's label is the majority over its clips; splits a manifest gives are kept (a group in two
    splits is an error); the rest are assigned by :func:`assign_splits`."""
    group_files: dict[str, list[int]] = defaultdict(list)
    for i in file_clips:
        group_files[files[i].group].append(i)
    group_labels = {
        g: majority_label(files[i].label for i in idx for _ in range(file_clips[i]))
        for g, idx in group_files.items()
    }
    explicit = _explicit_splits(files, group_files)
    return assign_splits(group_labels, explicit, val_fraction, test_fraction, seed)


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
