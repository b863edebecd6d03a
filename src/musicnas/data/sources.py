"""Where the audio is: a folder with one subfolder per class, or a CSV manifest.

Both give an :class:`AudioSource`: the list of files with their class label, group (the unit that never
straddles two splits; by default the file itself) and an optional explicit split.

Folders are walked link-safely (:func:`walk_class_folder`): a directory link is followed at most once (by
its resolved path), only into its own class folder or, when asked, outside the data root, and one file is
never counted twice; a dangling link or a link loop is one skipped file with its reason.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
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
class SkippedFile:
    """A file found but not usable before decoding (a dangling link, a link loop, a duplicate)."""

    path: str
    label: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AudioSource:
    root: Path  # the audio folder, or the manifest file
    kind: str  # "folder" | "manifest"
    files: tuple[SourceFile, ...]
    skipped: tuple[SkippedFile, ...] = ()

    @property
    def classes(self) -> list[str]:
        return sorted({f.label for f in self.files})

    def fingerprint(self) -> str:
        """Hash of every file's path, label, group, split, size and modification time: any edit to the
        inputs changes it (and so the cache key)."""
        digest = hashlib.sha256()
        for f in self.files:
            try:
                st = os.stat(f.path)
                stamp = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError:  # removed since it was found: the decoder will skip it with its reason
                stamp = "missing"
            digest.update(f"{f.path}\0{f.label}\0{f.group}\0{f.split or ''}\0{stamp}\n".encode())
        return digest.hexdigest()[:16]


def find_audio(path: str | os.PathLike, follow_links_outside: bool = False) -> AudioSource:
    """Reads an audio folder or a CSV manifest; raises :class:`MusicnasError` for unusable input.

    ``follow_links_outside``: follow directory links that lead outside the data folder (off by default)."""
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
        source = scan_folder(path, follow_links_outside)
    classes = source.classes
    if len(classes) < 2:
        raise MusicnasError(
            f"{path} has {len(classes)} class{'es' if len(classes) != 1 else ''} ({', '.join(classes) or 'none'}); "
            "classification needs at least 2. In a folder, each class is a subfolder holding its audio files: "
            "point --data at the folder whose subfolders are the classes."
        )
    return source


def scan_folder(root: Path, follow_links_outside: bool = False) -> AudioSource:
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
    walked = {c: walk_class_folder(c, root, follow_links_outside) for c in class_dirs}
    # One file is counted once: a real file wins over a link to it (the link may sit in another class).
    owner: dict[tuple[int, int], str] = {}
    for by_link in (False, True):
        for found, _ in walked.values():
            for entry in found:
                if entry.is_link == by_link:
                    owner.setdefault(entry.identity, entry.path)
    files: list[SourceFile] = []
    skipped: list[SkippedFile] = []
    for class_dir in class_dirs:
        candidates, class_skipped = walked[class_dir]
        found = []
        for entry in candidates:
            if owner[entry.identity] == entry.path:
                found.append(entry.path)
            else:
                reason = f"the same file as {owner[entry.identity]} (counted once)"
                log.warning("skipping %s: %s", entry.path, reason)
                class_skipped.append(SkippedFile(entry.path, class_dir.name, reason))
        skipped.extend(class_skipped)
        if not found:
            detail = (
                f"usable audio files ({len(class_skipped)} skipped: {class_skipped[0].reason})"
                if class_skipped
                else f"audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})"
            )
            raise MusicnasError(
                f"class folder {class_dir} holds no {detail}; add audio to it, remove it, or point --data at "
                "the folder whose subfolders are the classes"
            )
        for full in found:
            # The group is the file itself, named relative to the root so splits survive moving the data.
            files.append(SourceFile(path=full, label=class_dir.name, group=os.path.relpath(full, root)))
    return AudioSource(root=root, kind="folder", files=tuple(files), skipped=tuple(skipped))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _link_problem(path: str) -> str | None:
    """Why the link at ``path`` leads nowhere usable (dangling, a loop), or None."""
    try:
        Path(path).resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "symbolic link loop"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"dangling symbolic link (its target {os.readlink(path)!r} does not exist)"
    return None


@dataclass(frozen=True)
class FoundFile:
    path: str
    identity: tuple[int, int]  # (device, inode): the same for every link to one file
    is_link: bool


def walk_class_folder(
    class_dir: Path, root: Path, follow_links_outside: bool = False
) -> tuple[list[FoundFile], list[SkippedFile]]:
    """The audio files under ``class_dir`` (sorted, hidden entries ignored) and the ones skipped.

    Directory links are followed at most once by resolved path, and only when they lead inside their own
    class folder (anything else in the data root would get this class's label) or, with
    ``follow_links_outside``, out of the data root. A file reached twice within the folder is listed once."""
    label = class_dir.name
    real_class = class_dir.resolve()
    visited = {real_class}
    seen: dict[tuple[int, int], str] = {}  # (device, inode) -> where it was found first
    found: list[FoundFile] = []
    skipped: list[SkippedFile] = []
    pending = [str(class_dir)]
    while pending:
        folder = pending.pop(0)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s (%s); its files are not used", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            is_link = entry.is_symlink()
            problem = _link_problem(entry.path) if is_link else None
            if problem is not None:
                if is_audio_file(entry.name) or problem == "symbolic link loop":
                    log.warning("skipping %s: %s", entry.path, problem)
                    skipped.append(SkippedFile(entry.path, label, problem))
                continue
            if entry.is_dir():
                target = Path(entry.path).resolve()
                why = _unfollowed_folder(target, visited, real_class, root, follow_links_outside)
                if why is not None:
                    if is_link:
                        log.warning("not following link %s -> %s: %s", entry.path, target, why)
                    continue
                visited.add(target)
                subfolders.append(entry.path)
            elif is_audio_file(entry.name):
                try:
                    st = os.stat(entry.path)
                except OSError as exc:
                    reason = f"cannot read file ({exc.strerror or exc})"
                    log.warning("skipping %s: %s", entry.path, reason)
                    skipped.append(SkippedFile(entry.path, label, reason))
                    continue
                identity = (st.st_dev, st.st_ino)
                if identity in seen:
                    reason = f"the same file as {seen[identity]} (counted once)"
                    log.warning("skipping %s: %s", entry.path, reason)
                    skipped.append(SkippedFile(entry.path, label, reason))
                    continue
                seen[identity] = entry.path
                found.append(FoundFile(entry.path, identity, is_link))
        pending[:0] = subfolders  # depth first, in name order (as os.walk gave before)
    return found, skipped


def _unfollowed_folder(
    target: Path, visited: set[Path], real_class: Path, root: Path, follow_links_outside: bool
) -> str | None:
    """Why the folder resolving to ``target`` is not walked, or None to walk it."""
    if target in visited or _inside(real_class, target):
        return "it leads back to a folder already scanned (a link loop)"
    if _inside(target, real_class):
        return None
    if _inside(target, root):
        return f"it leads out of its class folder {real_class.name}, whose label its files would get"
    if not follow_links_outside:
        return f"it leads outside the data folder {root}"
    return None


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
