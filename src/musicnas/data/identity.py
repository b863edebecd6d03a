"""Which data a run was trained on, recorded so that resuming on other data is refused.

A run's checkpoint and records hold :func:`data_identity` of its feature cache: the fingerprint of the
input files (paths, labels, sizes, modification times), the feature options, the split options and a
digest of which track went to which split. Resuming compares it with the data given now
(:func:`check_resume_data`): the same audio split with another seed, a different folder or other feature
options would otherwise quietly turn tracks trained on into val/test tracks.
"""

from __future__ import annotations

import hashlib
import logging

from musicnas.runtime import MusicnasError

log = logging.getLogger(__name__)

# key -> what it means, in the order differences are reported
IDENTITY_FIELDS = {
    "fingerprint": "input files (paths, labels, sizes or modification times)",
    "features": "feature options",
    "seed": "split seed",
    "val_fraction": "val fraction",
    "test_fraction": "test fraction",
    "classes": "classes",
    "splits": "split of the tracks into train/val/test",
}


def split_digest(groups, splits) -> str:
    """Digest of the (group, split) assignment, independent of clip order and of where the data lives."""
    digest = hashlib.sha256()
    for group, split in sorted({(str(g), str(s)) for g, s in zip(groups, splits, strict=True)}):
        digest.update(f"{group}\0{split}\n".encode())
    return digest.hexdigest()[:16]


def data_identity(data) -> dict | None:
    """The identity of a prepared feature cache (None for data objects that are not one)."""
    meta = getattr(data, "meta", None)
    if not isinstance(meta, dict) or "source" not in meta:
        return None
    track_ids = getattr(data, "track_ids", None)
    groups = [data.groups[i] for i in track_ids] if track_ids is not None else list(data.paths)
    return {
        "cache": str(data.root),
        "fingerprint": meta["source"].get("fingerprint"),
        "features": data.config.key(),
        "seed": meta.get("seed"),
        "val_fraction": meta.get("val_fraction"),
        "test_fraction": meta.get("test_fraction"),
        "classes": list(data.classes),
        "splits": split_digest(groups, data.splits),
        "clips": {s: int(len(data.split_indices(s))) for s in ("train", "val", "test")},
    }


def identity_differences(recorded: dict, now: dict) -> list[str]:
    """Readable differences between two identities ("split seed: run 0, now 1", ...)."""
    out = []
    for key, meaning in IDENTITY_FIELDS.items():
        if recorded.get(key) != now.get(key):
            out.append(f"{meaning}: run {recorded.get(key)!r}, now {now.get(key)!r}")
    return out


def check_resume_data(recorded: dict | None, data, where) -> None:
    """Refuses to resume ``where`` (a checkpoint or run folder) on data other than the recorded one."""
    now = data_identity(data)
    if now is None:
        return
    if recorded is None:
        log.warning(
            "%s records no data identity (written by an older musicnas): cannot check that the data given is "
            "the data it was trained on",
            where,
        )
        return
    differences = identity_differences(recorded, now)
    if differences:
        raise MusicnasError(
            f"cannot resume {where} on other data than it was trained on: {'; '.join(differences)}. "
            f"Resume with the run's own data ({recorded.get('cache')}) or start a new run"
        )
