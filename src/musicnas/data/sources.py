"""Where the audio is: a folder with one subfolder per class, or a CSV manifest.

Both give an :class:`AudioSource`: the list of files with their class label, group (the unit that never
straddles two splits; by default the file itself) and an optional explicit split.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from musicnas.data.audio import AUDIO_EXTENSIONS, is_audio_file
from musicnas.runtime import MusicnasError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "eval": "test",
}
MANIFEST_SUFFIXES = (".csv",)


@dataclass(frozen=True)
class SourceFile:
    path: str  # absolute
    label: str
    group: str
    split: str | None = None  # explicit split from a manifest, else None


@dataclass(frozen=True)
class AudioSource:
    root: Path  # the audio folder, or the manifest file
    kind: str  # "folder" | "manifest"
    files: tuple[SourceFile, ...]

    @property
    def classes(self) -> list[str]:
        return sorted({f.label for f in self.files})

    def fingerprint(self) -> str:
        """Hash of every file's path, label, group, split, size and modification time: any edit to the
        inputs changes it (and so the cache key)."""
        digest = hashlib.sha256()
        for f in self.files:
            st = os.stat(f.path)
            digest.update(
                f"{f.path}\0{f.label}\0{f.group}\0{f.split or ''}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
        return digest.hexdigest()[:16]


def find_audio(path: str | os.PathLike) -> AudioSource:
    """Reads an audio folder or a CSV manifest; raises :class:`MusicnasError` for unusable input."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MusicnasError(
            f"data path {path} does not exist; pass an audio folder (one subfolder per class), a CSV manifest "
            "(columns path,label[,split,group]) or a prepared cache folder"
        )
    if path.is_file():
        if path.suffix.lower() not in MANIFEST_SUFFIXES:
            raise MusicnasError(
                f"{path} is a file but not a .csv manifest; pass a folder with one subfolder per class or a CSV "
                "manifest with columns path,label"
            )
        source = read_manifest(path)
    else:
        source = scan_folder(path)
    classes = source.classes
    if len(classes) < 2:
        raise MusicnasError(
            f"{path} has {len(classes)} class{'es' if len(classes) != 1 else ''} ({', '.join(classes) or 'none'}); "
            "classification needs at least 2. In a folder, each class is a subfolder holding its audio files: "
            "point --data at the folder whose subfolders are the classes."
        )
    return source


def scan_folder(root: Path) -> AudioSource:
    root = root.resolve()
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p.name for p in root.iterdir() if p.is_file() and is_audio_file(p)]
    if loose:
        log.warning(
            "%d audio file(s) directly in %s are ignored: only files inside a class subfolder are used (e.g. %s)",
            len(loose),
            root,
            loose[0],
        )
    if not class_dirs:
        raise MusicnasError(
            f"{root} has no subfolders; put each class's audio in its own subfolder (e.g. {root}/rock/a.wav) "
            "or pass a CSV manifest with columns path,label"
        )
    files: list[SourceFile] = []
    for class_dir in class_dirs:
        found = []
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if is_audio_file(name))
        if not found:
            raise MusicnasError(
                f"class folder {class_dir} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}); add audio "
                "to it, remove it, or point --data at the folder whose subfolders are the classes"
            )
        for full in found:
            # The group is the file itself, named relative to the root so splits survive moving the data.
            files.append(SourceFile(path=full, label=class_dir.name, group=os.path.relpath(full, root)))
    return AudioSource(root=root, kind="folder", files=tuple(files))


def read_manifest(manifest: Path) -> AudioSource:
    manifest = manifest.resolve()
    base = manifest.parent
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MusicnasError(f"manifest {manifest} is not a readable UTF-8 CSV file ({exc})") from exc
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise MusicnasError(
            f"manifest {manifest} lacks column(s) {', '.join(missing)} (found: {', '.join(header) or 'no header'}); "
            "the first row must be a header with path,label and optionally split,group"
        )
    if not rows:
        raise MusicnasError(f"manifest {manifest} has a header but no rows; add one row per audio file")

    by_path: dict[str, SourceFile] = {}
    missing_paths: list[str] = []
    for line, raw in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        rel, label = row.get("path", ""), row.get("label", "")
        if not rel or not label:
            raise MusicnasError(
                f"manifest {manifest} line {line}: empty {'path' if not rel else 'label'}; every row needs both"
            )
        split_text = row.get("split", "").lower()
        split = SPLIT_ALIASES.get(split_text) if split_text else None
        if split_text and split is None:
            raise MusicnasError(
                f"manifest {manifest} line {line}: split {row.get('split')!r} is not one of train, val, test "
                "(leave it empty to let musicnas choose)"
            )
        full = os.path.normpath(os.path.join(base, os.path.expanduser(rel)))
        if not os.path.isfile(full):
            missing_paths.append(rel)
            continue
        group = row.get("group", "") or os.path.relpath(full, base)
        entry = SourceFile(path=full, label=label, group=group, split=split)
        previous = by_path.get(full)
        if previous is not None:
            # A file listed once per clip (e.g. a splits.csv reused as a manifest) is fine; contradictions are not.
            if previous != entry:
                raise MusicnasError(
                    f"manifest {manifest} line {line}: {rel} is listed again with a different label, group or split; "
                    "list each file once (or with identical values)"
                )
            continue
        by_path[full] = entry
    if missing_paths:
        shown = ", ".join(missing_paths[:5])
        raise MusicnasError(
            f"{len(missing_paths)} path(s) in manifest {manifest} do not exist (e.g. {shown}); relative paths are "
            f"resolved against the manifest's folder {base}. Fix the paths or remove those rows."
        )
    files = tuple(by_path.values())
    counts = Counter(f.label for f in files)
    log.debug("manifest %s: %d files, classes %s", manifest, len(files), dict(counts))
    return AudioSource(root=manifest, kind="manifest", files=files)
