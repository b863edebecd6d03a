"""The extraction pipeline: files -> clips (decoded in a thread pool) -> batched log-mel on the device.

soundfile and soxr release the GIL while they decode and resample, so threads decode in parallel without
the cost of shipping audio between processes, while the main thread runs :class:`LogMel` on whole
batches of clips. At most ``2 * workers`` decoded files wait in memory at any time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from musicnas.data.audio import AudioSkip, iter_clips
from musicnas.data.features import FeatureConfig, LogMel
from musicnas.data.splits import clip_offsets
from musicnas.runtime import default_threads, select_device
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)


@dataclass
class FileClips:
    """One decoded file: its clips (or why it was skipped)."""

    index: int
    path: str
    offsets: list[int] = field(default_factory=list)  # clip starts, in samples at the target rate
    clips: np.ndarray | None = None  # float32 [n, clip_samples]
    seconds: float = 0.0  # decoded length at the target rate
    skip_reason: str | None = None


@dataclass
class FileFeatures:
    index: int
    path: str
    offsets: list[int]
    features: np.ndarray | None  # float16 [n, n_mels, frames]
    seconds: float
    skip_reason: str | None = None


def decode_clips(index: int, path: str, config: FeatureConfig) -> FileClips:
    """Decodes one file into clips; never raises for a bad file (the reason is returned instead)."""
    result = FileClips(index=index, path=path)
    offsets, clips = [], []
    cutter = iter_clips(path, config.clip_samples, config.hop_samples, config.min_samples, config.sample_rate)
    try:
        while True:
            try:
                offset, clip = next(cutter)
            except StopIteration as stop:
                result.seconds = (stop.value or 0) / config.sample_rate
                break
            offsets.append(offset)
            clips.append(clip)
    except AudioSkip as exc:
        result.skip_reason = str(exc)
        return result
    except Exception as exc:  # a decoder bug on one odd file must not stop a long run
        log.debug("unexpected error decoding %s", path, exc_info=True)
        result.skip_reason = f"could not decode ({type(exc).__name__}: {str(exc)[:200]})"
        return result
    result.offsets = offsets
    result.clips = np.stack(clips) if clips else np.zeros((0, config.clip_samples), np.float32)
    return result


def clips_from_waveform(wave: np.ndarray, config: FeatureConfig) -> tuple[list[int], np.ndarray]:
    """Cuts a mono waveform (already at ``config.sample_rate``) into clips by the same rule as prepare:
    whole clips every hop; a signal shorter than one clip (and at least ``min_seconds``) zero-padded.
    Returns (offsets in samples, clips float32 [n, clip_samples]); n is 0 for a too-short signal."""
    wave = np.ascontiguousarray(np.asarray(wave, dtype=np.float32).reshape(-1))
    offsets = clip_offsets(wave.size, config.clip_samples, config.hop_samples, config.min_samples)
    clips = np.zeros((len(offsets), config.clip_samples), dtype=np.float32)
    for row, start in enumerate(offsets):
        piece = wave[start : start + config.clip_samples]
        clips[row, : piece.size] = piece
    return offsets, clips


def iter_file_clips(path: str, config: FeatureConfig) -> Iterator[tuple[float, np.ndarray]]:
    """Streams ``(offset_seconds, clip)`` from an audio file without holding it whole (for prediction
    on long recordings). Raises :class:`musicnas.data.audio.AudioSkip` for an unusable file."""
    for offset, clip in iter_clips(
        path, config.clip_samples, config.hop_samples, config.min_samples, config.sample_rate
    ):
        yield offset / config.sample_rate, clip


def iter_decoded(
    paths: Sequence[str], config: FeatureConfig, workers: int | None = None
) -> Iterator[FileClips]:
    """Decoded files in input order, decoded by ``workers`` threads with a bounded look-ahead."""
    workers = max(1, workers or default_threads())
    if workers == 1:
        for i, path in enumerate(paths):
            yield decode_clips(i, path, config)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="musicnas-decode") as pool:
        pending: deque = deque()
        next_index = 0
        while next_index < len(paths) or pending:
            while next_index < len(paths) and len(pending) < 2 * workers:
                pending.append(pool.submit(decode_clips, next_index, paths[next_index], config))
                next_index += 1
            yield pending.popleft().result()


class BatchedLogMel:
    """Runs :class:`LogMel` on batches of clips on one device and returns float16 numpy arrays."""

    def __init__(self, config: FeatureConfig, device: str | torch.device | None = None, batch_size: int = 64):
        self.device = select_device("auto") if device is None else torch.device(device)
        self.module = LogMel(config).to(self.device).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, clips: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(clips), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(clips[start : start + self.batch_size])).to(
                self.device
            )
            out.append(self.module(batch).to(torch.float16).cpu().numpy())
        if not out:
            c = self.module.config
            return np.zeros((0, c.n_mels, c.frames), np.float16)
        return np.concatenate(out)


def extract_features(
    paths: Sequence[str],
    config: FeatureConfig,
    workers: int | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
    desc: str = "features",
) -> Iterator[FileFeatures]:
    """Yields each file's log-mel features (float16) in input order; skipped files carry a reason.

    Clips of consecutive files are pooled so the device always sees full batches.
    """
    logmel = BatchedLogMel(config, device, batch_size)
    waiting: list[FileClips] = []
    waiting_clips = 0

    def flush() -> Iterator[FileFeatures]:
        nonlocal waiting, waiting_clips
        stacked = [f.clips for f in waiting if f.clips is not None and len(f.clips)]
        feats = logmel(np.concatenate(stacked)) if stacked else None
        start = 0
        for f in waiting:
            n = len(f.offsets)
            yield FileFeatures(
                f.index,
                f.path,
                f.offsets,
                None if f.skip_reason else feats[start : start + n],
                f.seconds,
                f.skip_reason,
            )
            start += n
        waiting, waiting_clips = [], 0

    bar = progress(total=len(paths), desc=desc, unit="file", disable=not show_progress or None)
    try:
        for decoded in iter_decoded(paths, config, workers):
            waiting.append(decoded)
            waiting_clips += len(decoded.offsets)
            bar.update(1)
            if waiting_clips >= batch_size:
                yield from flush()
        if waiting:
            yield from flush()
    finally:
        bar.close()
