"""Writes the demo dataset: one folder per genre, one WAV per track, and ``synth.json``."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from musicnas.data.synth.genres import GENRES
from musicnas.data.synth.render import render_track
from musicnas.runtime import MusicnasError, default_threads
from musicnas.utils.io import atomic_path, atomic_write_json, read_json
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)

MANIFEST = "synth.json"
FORMAT = "musicnas-synth"
VERSION = 1


def track_path(out_dir: Path, genre: str, index: int) -> Path:
    return out_dir / genre / f"{genre}_{index:03d}.wav"


def _write_track(job: tuple) -> dict:
    """Renders one track and writes it atomically (temp file + rename). Runs in a worker process."""
    out_dir, genre, index, seed, seconds, sr = job
    audio, info = render_track(genre, seconds, sr, seed=seed, track_index=index, return_info=True)
    target = track_path(Path(out_dir), genre, index)
    with atomic_path(target) as tmp:
        sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")
    info["file"] = str(target.relative_to(out_dir))
    info["peak"] = round(float(np.max(np.abs(audio))), 4)
    return info


def _check_out_dir(out_dir: Path) -> None:
    """Refuses to write into a non-empty folder that is not an earlier synth output (so a typo cannot
    mix demo tracks into someone's music collection)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise MusicnasError(f"--out {out_dir} is a file; give a folder for the demo dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise MusicnasError(
            f"--out {out_dir} is not empty and holds no {MANIFEST}; choose an empty or new folder for the demo music"
        )


def _remove_stale(out_dir: Path, keep: set[Path]) -> None:
    """Deletes WAVs an earlier synth run wrote that this run does not (fewer classes or tracks). Only
    called on a folder holding synth.json, and only touches ``<genre>/<genre>_*.wav``."""
    for genre in GENRES:
        folder = out_dir / genre
        if not folder.is_dir():
            continue
        for wav in folder.glob(f"{genre}_*.wav"):
            if wav not in keep:
                wav.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def generate_dataset(
    out_dir,
    seed: int = 0,
    num_classes: int = 8,
    tracks_per_class: int = 24,
    seconds: float = 15.0,
    workers: int | None = None,
    sample_rate: int = 22050,
) -> dict:
    """Composes and writes the demo dataset to ``out_dir/<class>/<class>_<NNN>.wav`` (16-bit PCM mono)
    plus ``out_dir/synth.json``; returns a summary. Deterministic for a seed: every track's randomness
    comes from (seed, class, track index), so files are identical for any worker count."""
    if not 2 <= num_classes <= len(GENRES):
        raise MusicnasError(
            f"--classes must be between 2 and {len(GENRES)} (the demo genres: {', '.join(GENRES)}), got {num_classes}"
        )
    if tracks_per_class < 1:
        raise MusicnasError(f"--tracks-per-class must be at least 1, got {tracks_per_class}")
    if not 0 < seconds <= 600:
        raise MusicnasError(f"--seconds must be in (0, 600], got {seconds}")
    if sample_rate < 8000:
        raise MusicnasError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    classes = list(GENRES[:num_classes])
    jobs = [
        (str(out_dir), g, i, int(seed), float(seconds), int(sample_rate))
        for g in classes
        for i in range(tracks_per_class)
    ]
    workers = default_threads() if not workers or workers < 1 else int(workers)
    workers = min(workers, len(jobs))
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST).is_file():
        _remove_stale(out_dir, {track_path(out_dir, j[1], j[2]) for j in jobs})
    # A provisional manifest marks the folder as ours while tracks are written, so an interrupted run can
    # be re-run into it. It deliberately holds none of the run's settings: code that checks whether a
    # folder already has the demo it wants (e.g. musicnas.demo) must not mistake it for a finished one.
    atomic_write_json(out_dir / MANIFEST, {"format": FORMAT, "version": VERSION, "complete": False})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "complete": True,
        "seed": int(seed),
        "classes": classes,
        "tracks_per_class": int(tracks_per_class),
        "seconds": float(seconds),
        "sample_rate": int(sample_rate),
    }
    bar = progress(total=len(jobs), desc="composing demo music", unit="track")
    infos = []
    try:
        if workers == 1:
            for job in jobs:
                infos.append(_write_track(job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for info in pool.map(_write_track, jobs, chunksize=2):
                    infos.append(info)
                    bar.update()
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    # drawn parameters per track, in (class, index) order; no timings, so reruns give identical bytes
    manifest["tracks"] = infos
    atomic_write_json(out_dir / MANIFEST, manifest)
    log.info("wrote %d demo tracks (%d classes) to %s in %.1f s", len(jobs), len(classes), out_dir, elapsed)
    return {
        "classes": classes,
        "tracks": len(jobs),
        "seconds": float(seconds) * len(jobs),
        "out_dir": str(out_dir),
        "elapsed_s": round(elapsed, 3),
    }


def load_manifest(out_dir) -> dict:
    """Reads ``synth.json`` of a generated demo folder."""
    data = read_json(Path(out_dir) / MANIFEST, "synth manifest")
    if data.get("format") != FORMAT:
        raise MusicnasError(f"{Path(out_dir) / MANIFEST} is not a musicnas synth manifest")
    if not data.get("complete", False):
        raise MusicnasError(
            f"the demo music in {out_dir} is incomplete (generation was interrupted); run `musicnas data synth` again"
        )
    return data


__all__ = ["generate_dataset", "load_manifest", "track_path"]
