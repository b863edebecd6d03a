"""Builds the real-music development benchmark from Debian game-soundtrack packages.

Each class is one soundtrack collection (a game's music: one composer team or production style). The
script ``apt-get download``s the packages into a cache folder (nothing is installed), unpacks them with
``dpkg-deb -x``, unzips music kept inside game archives, screens every candidate track (too short,
low-bandwidth, duplicated), groups variants of one composition, cuts a fixed number of clips per class
spread evenly over tracks and over each track's length (skipping near-silent windows), and writes
folder-per-class FLAC clips plus ``manifest.csv`` (path,label,split,group), ``tracks.csv``,
``dropped.csv`` and ``LICENSES``. ``musicnas data prepare --data OUT/manifest.csv`` reads it unchanged.

Run:  python benchmarks/realmusic/build.py --out /path/realmusic --cache /path/debcache
(needs ``apt-get update`` done once, ``dpkg-deb`` on PATH, and the registry reachable the first time;
a rebuild from the same cache downloads nothing). See benchmarks/realmusic/README.md.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from musicnas.data.splits import assign_splits
from musicnas.runtime import MusicnasError
from musicnas.utils.io import atomic_path, atomic_write_json, atomic_write_text, read_json
from musicnas.utils.logging import progress

log = logging.getLogger("realmusic")

# Analysis frames: the unit of silence detection and of window positions.
FRAME_SECONDS = 0.5
# A window is near-silent when its RMS is below this, or this far below its track's RMS ...
SILENCE_DB = -45.0
RELATIVE_SILENCE_DB = 25.0
# ... or when more than this share of its frames is below SILENCE_DB (a fade-out, a pause).
MAX_SILENT_FRACTION = 0.25
# Clips are scaled to this RMS; a peak over PEAK_LIMIT lowers the gain instead of clipping.
TARGET_RMS_DB = -20.0
PEAK_LIMIT = 0.99
# A source whose measured bandwidth is below this share of the output Nyquist frequency would carry a
# "this class sounds duller" cue that has nothing to do with the music, so it is dropped.
MIN_BANDWIDTH_SHARE = 0.9
# Bandwidth = highest frequency whose mean level is within this many dB of the spectrum's peak.
BANDWIDTH_FLOOR_DB = 75.0
# Two tracks of one class whose loudness envelopes correlate this well over the same length are one
# recording (a re-encode or a renamed copy).
NEAR_DUPLICATE_CORRELATION = 0.98
# Suffixes that mark another version of the same composition (remaster, remix, faster lap, old take).
VARIANT_SUFFIXES = (
    "old",
    "remix",
    "enhanced",
    "remake",
    "remaster",
    "remastered",
    "fast",
    "f",
    "alt",
    "orig",
)
SPLIT_FRACTIONS = {"val": 0.2, "test": 0.2}


@dataclass(frozen=True)
class ClassSpec:
    """One class: which package holds it and where its music sits inside the unpacked package.

    ``patterns`` are globs relative to the unpacked tree; ``archive`` (if set) is a zip inside the tree
    whose members matching ``patterns`` are the music. ``exclude`` drops names that match (effects).
    """

    name: str
    package: str
    patterns: tuple[str, ...]
    archive: str | None = None
    exclude: tuple[str, ...] = ()
    licence_note: str = ""  # for packages whose debian/copyright is not machine-readable
    copyright_path: str = ""  # inside the unpacked tree; default usr/share/doc/<package>/copyright


CLASS_SPECS: dict[str, ClassSpec] = {
    s.name: s
    for s in (
        ClassSpec(
            "0ad", "0ad-data", ("audio/music/*.ogg",), archive="usr/share/games/0ad/mods/public/public.zip"
        ),
        ClassSpec("naev", "naev-data", ("usr/share/naev/dat/snd/music/*.ogg",)),
        ClassSpec("widelands", "widelands-data", ("usr/share/games/widelands/data/music/*.ogg",)),
        ClassSpec(
            "supertuxkart",
            "supertuxkart-data",
            (
                "usr/share/games/supertuxkart/data/music/*.ogg",
                # music that ships beside a track instead of in data/music (the rest there is effects)
                "usr/share/games/supertuxkart/data/tracks/battleisland/Gran_Paradiso_*.ogg",
                "usr/share/games/supertuxkart/data/tracks/ancient_colosseum_labyrinth/Battle_Theme_1.ogg",
                "usr/share/games/supertuxkart/data/tracks/cave/beneath_the_rabbit_hole.ogg",
                "usr/share/games/supertuxkart/data/tracks/introcutscene2/intro2.ogg",
            ),
        ),
        ClassSpec("hyperrogue", "hyperrogue-music", ("usr/share/hyperrogue/music/*.ogg",)),
        # the language folders beside audio/ hold symlinks to these same files
        ClassSpec("drascula", "drascula-music", ("usr/share/scummvm/drascula/audio/*.ogg",)),
        # Ogg Vorbis files without an extension, each with a .tags text file beside it
        ClassSpec("blobwars", "blobwars-data", ("usr/share/games/blobwars/music/*",), exclude=("*.tags",)),
        ClassSpec(
            "wesnoth",
            "wesnoth-1.16-music",
            ("usr/share/games/wesnoth/1.16/data/core/music/*.ogg",),
            licence_note="GPL-2+ (Wesnoth's debian/copyright is not machine-readable; see licenses/)",
        ),
        # Not in the default set: shares a track (and composers) with supertuxkart.
        ClassSpec("supertux", "supertux-data", ("usr/share/games/supertux2/music/*/*.ogg",)),
    )
}
DEFAULT_CLASSES = (
    "0ad",
    "naev",
    "widelands",
    "supertuxkart",
    "hyperrogue",
    "drascula",
    "blobwars",
    "wesnoth",
)


# ---------------------------------------------------------------------------------------------------
# Pure logic (unit-tested in tests/test_realmusic_builder.py)
# ---------------------------------------------------------------------------------------------------


def frame_rms_db(mono: np.ndarray, sr: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """RMS level in dBFS of each whole frame of ``frame_seconds`` (a trailing partial frame is dropped)."""
    hop = int(round(frame_seconds * sr))
    n = len(mono) // hop
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    frames = mono[: n * hop].astype(np.float64).reshape(n, hop)
    power = np.mean(frames * frames, axis=1)
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def usable_starts(
    frame_db: np.ndarray,
    window_frames: int,
    silence_db: float = SILENCE_DB,
    relative_silence_db: float = RELATIVE_SILENCE_DB,
    max_silent_fraction: float = MAX_SILENT_FRACTION,
) -> np.ndarray:
    """Frame indices where a window of ``window_frames`` frames may start: neither quiet overall (absolute
    or relative to the whole track) nor holding too many silent frames."""
    n = len(frame_db) - window_frames + 1
    if n <= 0 or window_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    power = 10.0 ** (frame_db / 10.0)
    track_db = 10.0 * np.log10(max(float(np.mean(power)), 1e-12))
    csum = np.concatenate([[0.0], np.cumsum(power)])
    window_db = 10.0 * np.log10(
        np.maximum((csum[window_frames:] - csum[:-window_frames]) / window_frames, 1e-12)
    )
    silent = np.concatenate([[0], np.cumsum(frame_db < silence_db)])
    silent_share = (silent[window_frames:] - silent[:-window_frames]) / window_frames
    ok = (window_db >= silence_db) & (window_db >= track_db - relative_silence_db)
    ok &= silent_share <= max_silent_fraction
    return np.flatnonzero(ok[:n])


def window_slots(usable: np.ndarray, window_frames: int, phase: int = 0) -> list[int]:
    """Non-overlapping window starts packed left to right over the usable starts, the first at least
    ``phase`` frames after the first usable one (a seeded phase moves every slot a little)."""
    slots: list[int] = []
    if len(usable) == 0:
        return slots
    next_free = int(usable[0]) + phase
    for start in usable:
        if start >= next_free:
            slots.append(int(start))
            next_free = int(start) + window_frames
    if not slots:  # the phase skipped past the only usable region
        slots.append(int(usable[0]))
    return slots


def spread_pick(slots: list[int], k: int) -> list[int]:
    """``k`` of ``slots`` spread evenly over them (all of them if ``k >= len(slots)``)."""
    if k >= len(slots):
        return list(slots)
    if k <= 0:
        return []
    idx = [int((i + 0.5) * len(slots) / k) for i in range(k)]
    return [slots[i] for i in idx]


def allocate_clips(capacity: dict[str, int], total: int) -> dict[str, int]:
    """Splits ``total`` clips over tracks as evenly as their capacities (usable slots) allow.

    Every track gets the same share; the remainder and any share a short track cannot take go, one at
    a time, to the tracks with the most spare slots (ties by name). Deterministic.
    """
    alloc = {t: 0 for t in capacity}
    left = min(total, sum(capacity.values()))
    while left > 0:
        open_tracks = sorted(t for t in capacity if alloc[t] < capacity[t])
        share = left // len(open_tracks)
        if share == 0:
            order = sorted(open_tracks, key=lambda t: (-(capacity[t] - alloc[t]), t))
            for t in order[:left]:
                alloc[t] += 1
            break
        for t in open_tracks:
            give = min(share, capacity[t] - alloc[t])
            alloc[t] += give
            left -= give
    return alloc


_SEPARATORS = re.compile(r"[\s_\-.]+")
_TRAILING_NUMBER = re.compile(r"[\s_\-.]*\d+$")


def variant_key(name: str) -> str:
    """A track name without its extension, case and version suffixes (``_old``, ``_remix``, ``_fast`` ...)."""
    stem = name.rsplit("/", 1)[-1]
    stem = re.sub(r"\.(ogg|oga|wav|flac|mp3)$", "", stem, flags=re.IGNORECASE).lower()
    words = [w for w in _SEPARATORS.split(stem) if w]
    while len(words) > 1 and words[-1] in VARIANT_SUFFIXES:
        words.pop()
    return "_".join(words)


def composition_groups(names: list[str]) -> dict[str, str]:
    """Maps each track name to the name of its composition group.

    Versions of a composition share a group: names equal once version suffixes are stripped
    (``farm``/``farm_f``, ``frantic``/``frantic-old``), and a numbered name whose un-numbered stem is
    another track's (``forest2`` joins ``forest``, ``ambient2_5`` joins ``ambient2``,
    ``airship_2`` joins ``airship_remix``). Numbered names with no such stem (``combat1``,
    ``ingame_07``) stay apart: they are separate pieces.
    """
    keys = {n: variant_key(n) for n in names}
    known = set(keys.values())
    groups = {}
    for n, k in keys.items():
        stem = _TRAILING_NUMBER.sub("", k)
        groups[n] = stem if stem and stem != k and stem in known else k
    return groups


def envelopes_match(a: np.ndarray, b: np.ndarray, threshold: float = NEAR_DUPLICATE_CORRELATION) -> bool:
    """Two loudness envelopes (dB per frame) are one recording: same length within 2 frames and
    correlated above ``threshold`` over the common part."""
    if abs(len(a) - len(b)) > 2 or min(len(a), len(b)) < 8:
        return False
    n = min(len(a), len(b))
    x, y = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return denom > 0 and float((x * y).sum()) / denom >= threshold


def split_by_group(group_labels: dict[str, str], seed: int) -> dict[str, str]:
    """60/20/20 train/val/test by group, stratified per class, seeded (musicnas's own splitter, so the
    same rules hold as for ``data prepare``: a class with >= 3 groups has groups in every split)."""
    return assign_splits(
        group_labels, val_fraction=SPLIT_FRACTIONS["val"], test_fraction=SPLIT_FRACTIONS["test"], seed=seed
    )


def measured_bandwidth(mono: np.ndarray, sr: int, floor_db: float = BANDWIDTH_FLOOR_DB) -> float:
    """Highest frequency (Hz) whose mean power is within ``floor_db`` of the spectrum's peak: where a
    low-pass master or an encoder's cut-off ends the spectrum."""
    n_fft = 4096
    if len(mono) < n_fft:
        return sr / 2.0
    starts = np.linspace(0, len(mono) - n_fft, num=min(400, max(1, len(mono) // n_fft))).astype(np.int64)
    window = np.hanning(n_fft)
    frames = np.stack([mono[s : s + n_fft] for s in starts]).astype(np.float64)
    frames = frames[np.sqrt(np.mean(frames * frames, axis=1)) > 1e-3]  # skip silent frames
    if len(frames) == 0:
        return 0.0
    spectrum = np.mean(np.abs(np.fft.rfft(frames * window, axis=1)) ** 2, axis=0)
    # smooth over ~100 Hz so single empty bins do not decide
    width = max(1, int(100 / (sr / n_fft)))
    smooth = np.convolve(spectrum, np.ones(width) / width, mode="same")
    level = 10 * np.log10(np.maximum(smooth, 1e-20))
    above = np.flatnonzero(level >= level.max() - floor_db)
    return float(above[-1] * sr / n_fft)


def rms_normalise(
    clip: np.ndarray, target_db: float = TARGET_RMS_DB, peak_limit: float = PEAK_LIMIT
) -> np.ndarray:
    rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
    if rms <= 0:
        return clip
    gain = 10 ** (target_db / 20) / rms
    peak = float(np.max(np.abs(clip))) * gain
    if peak > peak_limit:
        gain *= peak_limit / peak
    return (clip * gain).astype(np.float32)


def seed_for(seed: int, *parts: str) -> int:
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little")


# ---------------------------------------------------------------------------------------------------
# Debian copyright (DEP-5) licences
# ---------------------------------------------------------------------------------------------------


def parse_dep5(text: str) -> list[tuple[list[str], str, str]]:
    """(file patterns, licence short name, copyright) of each Files paragraph; [] if not DEP-5."""
    if "Format:" not in text.split("\n\n", 1)[0]:
        return []
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current] += "\n" + line.strip()
            elif ":" in line:
                current, _, value = line.partition(":")
                current = current.strip().lower()
                fields[current] = value.strip()
        if "files" in fields and "license" in fields:
            patterns = [p.removeprefix("./") for p in fields["files"].split()]
            licence = next(
                (line.strip() for line in fields["license"].splitlines() if line.strip()), "unstated"
            )
            holder = " ".join(fields.get("copyright", "").split())
            out.append((patterns, licence, holder))
    return out


def licence_for(track_path: str, paragraphs: list[tuple[list[str], str, str]]) -> tuple[str, str]:
    """The last matching paragraph wins (DEP-5). Patterns are relative to the source tree, the track
    path to the installed tree, so a pattern matches any tail of the path."""
    parts = track_path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    found = ("unknown (no matching Files paragraph)", "")
    for patterns, licence, holder in paragraphs:
        if any(fnmatch.fnmatchcase(t, p) for p in patterns for t in tails):
            found = (licence, holder)
    return found


# ---------------------------------------------------------------------------------------------------
# Packages: download, unpack
# ---------------------------------------------------------------------------------------------------


def cached_deb(cache: Path, package: str) -> Path | None:
    found = sorted(cache.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def download(cache: Path, package: str) -> Path:
    deb = cached_deb(cache, package)
    if deb is not None:
        return deb
    if shutil.which("apt-get") is None:
        raise MusicnasError(f"{package}: no .deb in {cache} and no apt-get on this machine to download it")
    log.info("downloading %s with apt-get download", package)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        result = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MusicnasError(
                f"apt-get download {package} failed ({detail[0]}); run `apt-get update` once, check that the "
                f"Debian registry is reachable, or put {package}_*.deb into {cache}"
            )
        os.replace(debs[0], cache / debs[0].name)
    return cache / debs[0].name


def unpack(cache: Path, deb: Path) -> Path:
    """``dpkg-deb -x`` into cache/unpacked/<deb name>; done once (a marker says it completed)."""
    target = cache / "unpacked" / deb.stem
    if (target / ".unpacked").exists():
        return target
    if shutil.which("dpkg-deb") is None:
        raise MusicnasError("dpkg-deb is not on PATH (it ships with dpkg on Debian and Ubuntu)")
    log.info("unpacking %s", deb.name)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        raise MusicnasError(
            f"dpkg-deb -x {deb} failed: {result.stderr.strip()}; delete the file to re-download it"
        )
    (target / ".unpacked").write_text("ok\n")
    return target


def unzip_members(tree: Path, archive: str, patterns: tuple[str, ...]) -> Path:
    """Extracts the members of ``tree/archive`` matching ``patterns`` next to it (once)."""
    source = tree / archive
    target = tree / (archive + ".members")
    if (target / ".unzipped").exists():
        return target
    if not source.is_file():
        raise MusicnasError(f"{source} is missing from the unpacked package")
    log.info("unzipping music from %s", source.name)
    try:
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if not info.is_dir() and any(fnmatch.fnmatchcase(info.filename, p) for p in patterns):
                    zf.extract(info, target)
    except zipfile.BadZipFile as exc:
        raise MusicnasError(f"{source} is not a readable zip archive ({exc})") from exc
    (target / ".unzipped").write_text("ok\n")
    return target


# ---------------------------------------------------------------------------------------------------
# Tracks
# ---------------------------------------------------------------------------------------------------


@dataclass
class Track:
    label: str
    name: str  # relative to the class's music root, e.g. "Taiko_1.ogg"
    path: str  # absolute
    package_path: str  # path inside the package (for the licence), e.g. usr/share/.../x.ogg
    sha256: str = ""
    samplerate: int = 0
    channels: int = 0
    seconds: float = 0.0
    bandwidth_hz: float = 0.0
    frame_db: list[float] = field(default_factory=list)
    group: str = ""
    licence: str = ""
    holder: str = ""


def find_tracks(spec: ClassSpec, tree: Path) -> tuple[list[Track], list[tuple[str, str, str]]]:
    """Candidate files of a class, and (class, file, reason) for those skipped right away (symlinks)."""
    roots = [(tree, "")]
    if spec.archive:
        roots = [(unzip_members(tree, spec.archive, spec.patterns), spec.archive + "!")]
    tracks, dropped = [], []
    for root, prefix in roots:
        for pattern in spec.patterns:
            for path in sorted(root.glob(pattern)):
                rel = path.relative_to(root).as_posix()
                if not path.is_file() or any(fnmatch.fnmatchcase(path.name, e) for e in spec.exclude):
                    continue
                if path.is_symlink():
                    dropped.append((spec.name, rel, "symlink to another file of the package"))
                    continue
                tracks.append(Track(spec.name, path.name, str(path), prefix + rel))
    # names must be unique within the class for grouping; fall back to the relative path
    counts = defaultdict(int)
    for t in tracks:
        counts[t.name] += 1
    for t in tracks:
        if counts[t.name] > 1:
            t.name = t.package_path.split("!")[-1]
    return tracks, dropped


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def analyse(track: Track, cache: Path) -> None:
    """Fills in format, duration, bandwidth and the loudness envelope; cached by content hash."""
    track.sha256 = file_sha256(track.path)
    record = cache / "analysis" / f"{track.sha256[:24]}.json"
    if record.exists():
        data = read_json(record, "track analysis")
    else:
        try:
            audio, sr = sf.read(track.path, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise MusicnasError(
                f"{track.path} is not readable audio ({exc}); the package may be corrupt"
            ) from exc
        mono = audio.mean(axis=1)
        data = {
            "samplerate": int(sr),
            "channels": int(audio.shape[1]),
            "seconds": len(mono) / sr,
            "bandwidth_hz": measured_bandwidth(mono, sr),
            "frame_db": [round(float(v), 2) for v in frame_rms_db(mono, sr)],
        }
        atomic_write_json(record, data)
    track.samplerate, track.channels = data["samplerate"], data["channels"]
    track.seconds, track.bandwidth_hz, track.frame_db = (
        data["seconds"],
        data["bandwidth_hz"],
        data["frame_db"],
    )


def screen(tracks: list[Track], args) -> tuple[list[Track], list[tuple[str, str, str]]]:
    """Drops jingles, low-bandwidth masters and duplicates (exact bytes across all classes; one recording
    under two names within a class). Returns kept tracks and (class, track, reason) rows."""
    dropped = []
    by_hash = defaultdict(list)
    for t in tracks:
        by_hash[t.sha256].append(t)
    keep: list[Track] = []
    for t in tracks:
        same = by_hash[t.sha256]
        labels = {s.label for s in same}
        if len(labels) > 1:
            others = ", ".join(f"{s.label}/{s.name}" for s in same if s is not t)
            dropped.append((t.label, t.name, f"same file as {others} in another class: ambiguous label"))
            continue
        if same[0] is not t:
            dropped.append((t.label, t.name, f"byte-identical duplicate of {same[0].name}"))
            continue
        if t.seconds < args.min_track_seconds:
            dropped.append(
                (t.label, t.name, f"jingle/effect: {t.seconds:.1f} s < {args.min_track_seconds:g} s")
            )
            continue
        if t.samplerate < args.sample_rate:
            dropped.append(
                (t.label, t.name, f"sampled at {t.samplerate} Hz, below the output {args.sample_rate} Hz")
            )
            continue
        need = MIN_BANDWIDTH_SHARE * args.sample_rate / 2
        if t.bandwidth_hz < need:
            dropped.append(
                (
                    t.label,
                    t.name,
                    f"low-bandwidth master: content ends at {t.bandwidth_hz:.0f} Hz "
                    f"(< {need:.0f} Hz), a shortcut cue",
                )
            )
            continue
        keep.append(t)
    # one recording under two names (re-encode, copy): loudness envelopes match
    final: list[Track] = []
    by_label = defaultdict(list)
    for t in keep:
        by_label[t.label].append(t)
    for label in sorted(by_label):
        kept_here: list[Track] = []
        for t in sorted(by_label[label], key=lambda x: x.name):
            env = np.asarray(t.frame_db)
            twin = next((k for k in kept_here if envelopes_match(np.asarray(k.frame_db), env)), None)
            if twin is not None:
                dropped.append(
                    (label, t.name, f"same recording as {twin.name} (loudness envelopes correlate)")
                )
                continue
            kept_here.append(t)
        final.extend(kept_here)
    return final, dropped


# ---------------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------------


def read_window(path: str, start_s: float, seconds: float, sr_out: int) -> np.ndarray:
    """Mono, resampled (soxr) window of exactly ``seconds * sr_out`` samples. A little margin is read on
    both sides so the resampler's edges fall outside the clip."""
    with sf.SoundFile(path) as fh:
        sr = fh.samplerate
        margin = int(0.1 * sr)
        first = max(0, int(round(start_s * sr)) - margin)
        lead = int(round(start_s * sr)) - first
        fh.seek(first)
        audio = fh.read(lead + int(round(seconds * sr)) + margin, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    out = soxr.resample(mono, sr, sr_out, quality="HQ") if sr != sr_out else mono
    skip = int(round(lead * sr_out / sr))
    n = int(round(seconds * sr_out))
    clip = out[skip : skip + n]
    if len(clip) < n:
        clip = np.pad(clip, (0, n - len(clip)))
    return clip


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text.rsplit(".", 1)[0] if text.endswith(".ogg") else text).strip("_")


def plan_clips(tracks: list[Track], args) -> list[tuple[Track, float]]:
    """(track, start second) of every clip of one class, spread over tracks and within each track."""
    window_frames = int(round(args.seconds / FRAME_SECONDS))
    slots = {}
    for t in tracks:
        usable = usable_starts(np.asarray(t.frame_db), window_frames)
        rng = np.random.default_rng(seed_for(args.seed, t.label, t.name))
        # the seeded phase only uses the slack the usable span leaves, so it never costs a slot there
        slack = int(usable[-1] - usable[0]) % window_frames if len(usable) else 0
        slots[t.name] = window_slots(usable, window_frames, phase=int(rng.integers(0, slack + 1)))
    capacity = {name: len(s) for name, s in slots.items()}
    alloc = allocate_clips(capacity, args.clips_per_class)
    plan = []
    for t in sorted(tracks, key=lambda x: x.name):
        for start in spread_pick(slots[t.name], alloc[t.name]):
            plan.append((t, start * FRAME_SECONDS))
    return plan


# ---------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------


def build(args) -> None:
    t0 = time.time()
    out, cache = Path(args.out).expanduser().resolve(), Path(args.cache).expanduser().resolve()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in classes if c not in CLASS_SPECS]
    if unknown:
        raise MusicnasError(f"unknown class(es) {', '.join(unknown)}; known: {', '.join(CLASS_SPECS)}")
    if len(classes) < 2:
        raise MusicnasError("--classes needs at least 2 classes")
    if args.seconds <= 0 or args.clips_per_class <= 0 or args.sample_rate < 8000:
        raise MusicnasError(
            "--seconds and --clips-per-class must be positive and --sample-rate at least 8000"
        )
    config = {
        "classes": classes,
        "clips_per_class": args.clips_per_class,
        "seconds": args.seconds,
        "sample_rate": args.sample_rate,
        "seed": args.seed,
        "min_track_seconds": args.min_track_seconds,
        "min_tracks": args.min_tracks,
        "target_rms_db": TARGET_RMS_DB,
        "format": "flac/PCM_16",
    }
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    state = out / "build.json"
    if state.exists():
        previous = read_json(state, "build record")
        if previous.get("config") != config:
            raise MusicnasError(
                f"{out} was built with other options ({previous.get('config')}); pass another --out or delete it"
            )
    atomic_write_json(state, {"config": config, "finished": False})

    specs = [CLASS_SPECS[c] for c in classes]
    trees = {}
    for spec in progress(specs, desc="packages", unit="pkg"):
        log.info("[%s] package %s", spec.name, spec.package)
        trees[spec.name] = unpack(cache, download(cache, spec.package))

    candidates, dropped = [], []
    for spec in specs:
        found, skipped = find_tracks(spec, trees[spec.name])
        if not found:
            raise MusicnasError(f"class {spec.name}: no files match {spec.patterns} in {trees[spec.name]}")
        candidates.extend(found)
        dropped.extend(skipped)
    log.info("analysing %d candidate files", len(candidates))
    for t in progress(candidates, desc="analyse", unit="file"):
        analyse(t, cache)
    tracks, screened_out = screen(candidates, args)
    dropped.extend(screened_out)

    # groups, licences
    by_label: dict[str, list[Track]] = defaultdict(list)
    for t in tracks:
        by_label[t.label].append(t)
    for spec in specs:
        mine = by_label[spec.name]
        keys = composition_groups([t.name for t in mine])
        for t in mine:
            t.group = f"{spec.name}/{keys[t.name]}"
        copyright_file = trees[spec.name] / (spec.copyright_path or f"usr/share/doc/{spec.package}/copyright")
        text = copyright_file.read_text(errors="replace") if copyright_file.exists() else ""
        paragraphs = parse_dep5(text)
        for t in mine:
            if paragraphs:
                t.licence, t.holder = licence_for(t.package_path.split("!")[-1], paragraphs)
            else:
                t.licence = spec.licence_note or "see the package's debian/copyright (not machine-readable)"
        if text:
            atomic_write_text(out / "licenses" / f"{spec.package}.copyright", text)
        n_groups = len({t.group for t in mine})
        if len(mine) < args.min_tracks or n_groups < 3:
            raise MusicnasError(
                f"class {spec.name} keeps {len(mine)} track(s) in {n_groups} group(s) after screening; it needs "
                f"at least {args.min_tracks} tracks (--min-tracks) and 3 groups. See the reasons in "
                f"{out / 'dropped.csv'} or leave the class out with --classes"
            )
    write_rows(out / "dropped.csv", ["label", "track", "reason"], sorted(dropped))

    splits = split_by_group({t.group: t.label for t in tracks}, args.seed)
    manifest_rows, track_rows = [], []
    for spec in specs:
        plan = plan_clips(by_label[spec.name], args)
        if len(plan) < args.clips_per_class:
            log.warning(
                "class %s: only %d usable windows for %d clips", spec.name, len(plan), args.clips_per_class
            )
        per_track = defaultdict(int)
        by_file: dict[str, list[tuple[Track, float]]] = defaultdict(list)
        for t, start in plan:
            by_file[t.path].append((t, start))
        for items in progress(list(by_file.values()), desc=f"clips {spec.name}", unit="track"):
            for t, start in items:
                rel = f"{spec.name}/{slug(t.name)}__{int(round(start * 1000)):07d}.flac"
                target = out / rel
                if not target.exists():
                    clip = rms_normalise(read_window(t.path, start, args.seconds, args.sample_rate))
                    with atomic_path(target) as tmp:
                        sf.write(str(tmp), clip, args.sample_rate, format="FLAC", subtype="PCM_16")
                manifest_rows.append([rel, spec.name, splits[t.group], t.group])
                per_track[t.name] += 1
        for t in sorted(by_label[spec.name], key=lambda x: x.name):
            track_rows.append(
                [
                    t.label,
                    t.name,
                    t.group,
                    splits[t.group],
                    f"{t.seconds:.1f}",
                    t.samplerate,
                    t.channels,
                    f"{t.bandwidth_hz:.0f}",
                    per_track[t.name],
                    t.licence,
                    t.sha256[:16],
                ]
            )
        log.info(
            "[%s] %d tracks, %d groups, %d clips",
            spec.name,
            len(by_label[spec.name]),
            len({t.group for t in by_label[spec.name]}),
            len(plan),
        )
    write_rows(
        out / "tracks.csv",
        [
            "label",
            "track",
            "group",
            "split",
            "seconds",
            "samplerate",
            "channels",
            "bandwidth_hz",
            "clips",
            "licence",
            "sha256",
        ],
        track_rows,
    )
    write_licences(out / "LICENSES", tracks, specs)
    write_rows(out / "manifest.csv", ["path", "label", "split", "group"], manifest_rows)
    atomic_write_json(
        state,
        {
            "config": config,
            "finished": True,
            "clips": len(manifest_rows),
            "tracks": len(tracks),
            "seconds_taken": round(time.time() - t0, 1),
        },
    )
    log.info(
        "wrote %d clips of %d tracks to %s in %.0f s", len(manifest_rows), len(tracks), out, time.time() - t0
    )


def write_rows(path: Path, header: list[str], rows: list) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_licences(path: Path, tracks: list[Track], specs: list[ClassSpec]) -> None:
    lines = [
        "Licences of the source tracks of this benchmark, from each Debian package's debian/copyright",
        "(full texts in licenses/<package>.copyright). The clips are excerpts of these tracks.",
        "",
    ]
    for spec in specs:
        lines.append(f"== {spec.name} (Debian package {spec.package})")
        for t in sorted((t for t in tracks if t.label == spec.name), key=lambda x: x.name):
            holder = f"  ({t.holder})" if t.holder else ""
            lines.append(f"{t.name}: {t.licence}{holder}")
        lines.append("")
    atomic_write_text(path, "\n".join(lines))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Build the real-music benchmark (game soundtracks from Debian packages): folder-per-class "
        "FLAC clips plus manifest.csv (path,label,split,group) for `musicnas data prepare`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder (clips, manifest.csv, tracks.csv, LICENSES)")
    p.add_argument(
        "--cache",
        required=True,
        help="folder for the downloaded .debs, their unpacked trees and "
        "per-track analyses; a rebuild from it downloads nothing",
    )
    p.add_argument(
        "--classes",
        default=",".join(DEFAULT_CLASSES),
        help=f"comma-separated classes; known: {', '.join(CLASS_SPECS)}",
    )
    p.add_argument("--clips-per-class", type=int, default=80, help="clips cut from each class")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each clip in seconds")
    p.add_argument(
        "--sample-rate", type=int, default=22050, help="output sample rate in Hz (soxr resampling)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the window phases and of the group split")
    p.add_argument(
        "--min-track-seconds",
        type=float,
        default=30.0,
        help="shorter files are jingles or effects and are dropped",
    )
    p.add_argument("--min-tracks", type=int, default=15, help="a class keeping fewer tracks is an error")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        build(args)
    except MusicnasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
