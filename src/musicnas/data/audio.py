"""Decoding (soundfile), downmixing to mono and band-limited resampling (soxr).

Two ways in: :func:`load_audio` returns a whole file, :func:`iter_audio_blocks` streams it in blocks
(``soundfile`` reads a frame range, ``soxr.ResampleStream`` keeps the filter state across blocks), so a
long recording is never held whole. Files that cannot be used raise :class:`AudioSkip`, whose message is
the reason shown in warnings and in the cache summary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

# Formats libsndfile 1.2 decodes without FFmpeg (GTZAN ships .au, Kaggle's copy .wav).
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".au",
        ".snd",
        ".aif",
        ".aiff",
        ".aifc",
        ".caf",
        ".w64",
        ".rf64",
    }
)
# A file whose loudest sample is below -80 dBFS carries no music to learn from.
SILENCE_PEAK = 1e-4
RESAMPLE_QUALITY = "HQ"
_STREAMING_PLACEHOLDER = 0xFFFFF000
_SNIFF_BYTES = 1024
# Limits on what a file's header may claim: a corrupt header must not make us allocate gigabytes.
MAX_SOURCE_RATE = 768_000
MAX_CHANNELS = 256
_MAX_BLOCK_VALUES = 2**23  # samples x channels read at once (32 MB of float32)
_DECLARED_LENGTH = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


class AudioSkip(Exception):
    """A file that cannot be used (unreadable, truncated, empty, silent, too short); message = reason."""


def is_audio_file(path: str | os.PathLike) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _open(path: Path) -> sf.SoundFile:
    if path.exists() and not os.access(path, os.R_OK):
        raise AudioSkip("cannot read file (permission denied)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise AudioSkip(f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise AudioSkip("empty file (0 bytes)")
    if _looks_like_text(head):
        # Checked before the decoder sees it: libsndfile's mp3 reader calls any non-audio file "not a
        # regular file (possibly a pipe?)" and mpg123 prints resync notes to stderr.
        raise AudioSkip(
            f"not audio: the file holds text, not {path.suffix or 'audio'} data (renamed or mislabelled?)"
        )
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioSkip(f"not readable audio ({_open_error(exc, path)})") from exc
    if handle.frames <= 0 or handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioSkip("no audio frames (empty file)")
    if handle.samplerate > MAX_SOURCE_RATE or handle.channels > MAX_CHANNELS:
        rate, channels = handle.samplerate, handle.channels
        handle.close()
        raise AudioSkip(f"implausible header ({rate} Hz, {channels} channels): corrupt file")
    # libsndfile quietly shortens a WAV whose header promises more data than the file has; its log
    # says so as "data : <declared> (should be <present>)". Such a file was cut off mid-copy.
    # (0xFFFFFFFF is the placeholder streaming writers use when the length is unknown: not truncation.)
    match = _DECLARED_LENGTH.search(handle.extra_info or "")
    if match and int(match.group(2)) < int(match.group(1)) < _STREAMING_PLACEHOLDER:
        handle.close()
        raise AudioSkip(
            f"truncated (header declares {match.group(1)} data bytes, file holds {match.group(2)})"
        )
    return handle


def _downmix(data: np.ndarray) -> np.ndarray:
    if data.shape[1] == 1:
        return data[:, 0]
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN samples are rejected right after
        return data.mean(axis=1, dtype=np.float32)


def _block_frames(handle: sf.SoundFile, seconds: float) -> int:
    return max(1, min(int(seconds * handle.samplerate), _MAX_BLOCK_VALUES // handle.channels))


def _looks_like_text(head: bytes) -> bool:
    """True for bytes that are plain UTF-8 text (audio headers and samples hold NULs and binary bytes)."""
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte character cut at the end of the sample
            return False
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return printable >= 0.95 * max(len(text), 1)


def _open_error(exc: BaseException, path: Path) -> str:
    text = _short(exc)
    if "possibly a pipe" in text or "Format not recognised" in text:
        return f"its content is not {path.suffix or 'audio'} data libsndfile can decode (a damaged file, or a wrong extension?)"
    return text


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace("Error opening", "error opening")[:200]


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the header (no decoding); raises :class:`AudioSkip`."""
    with _open(Path(path)) as handle:
        return handle.frames / handle.samplerate


def iter_audio_blocks(
    path: str | os.PathLike, sample_rate: int, block_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """Yields the file as mono float32 blocks at ``sample_rate`` (about ``block_seconds`` each).

    Only one block of the source is in memory at a time. Raises :class:`AudioSkip` when the file cannot
    be opened or decoding fails part-way (a truncated or corrupt file); blocks already yielded stand.
    """
    path = Path(path)
    with _open(path) as handle:
        declared = handle.frames
        src_rate = handle.samplerate
        block = _block_frames(handle, block_seconds)
        stream = (
            None
            if src_rate == sample_rate
            else soxr.ResampleStream(src_rate, sample_rate, 1, "float32", RESAMPLE_QUALITY)
        )
        read = 0
        while True:
            try:
                data = handle.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioSkip(
                    f"decoding failed after {read / src_rate:.1f} s, truncated or corrupt ({_short(exc)})"
                ) from exc
            last = len(data) < block
            read += len(data)
            mono = _downmix(data)
            if not np.all(np.isfinite(mono)):
                raise AudioSkip("decoded samples contain NaN or infinity (corrupt file)")
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                break
    # Compressed formats (mp3) report a length from their header; decoding far less means a cut file.
    if declared > 0 and read < declared * 0.99 - src_rate * 0.05:
        raise AudioSkip(
            f"truncated (decoded {read / src_rate:.2f} s of the {declared / src_rate:.2f} s its header declares)"
        )


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The whole file as mono float32 at ``sample_rate``; raises :class:`AudioSkip` for unusable files."""
    path = Path(path)
    with _open(path) as handle:
        src_rate, declared = handle.samplerate, handle.frames
        # read in blocks: memory follows what the file holds, not what a (corrupt) header claims
        blocks, block = [], _block_frames(handle, 30.0)
        try:
            while True:
                blocks.append(handle.read(block, dtype="float32", always_2d=True))
                if len(blocks[-1]) < block:
                    break
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioSkip(f"decoding failed, truncated or corrupt ({_short(exc)})") from exc
        data = np.concatenate(blocks)
    if declared > 0 and len(data) < declared * 0.99 - src_rate * 0.05:
        raise AudioSkip(
            f"truncated (decoded {len(data) / src_rate:.2f} s of the {declared / src_rate:.2f} s its header declares)"
        )
    mono = _downmix(data)
    if not np.all(np.isfinite(mono)):
        raise AudioSkip("decoded samples contain NaN or infinity (corrupt file)")
    return resample(mono, src_rate, sample_rate)


def resample(wave: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono float32 signal (soxr, high quality)."""
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if src_rate == dst_rate:
        return wave
    return soxr.resample(wave, src_rate, dst_rate, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


def iter_clips(
    path: str | os.PathLike, clip_samples: int, hop_samples: int, min_samples: int, sample_rate: int
) -> Generator[tuple[int, np.ndarray], None, int]:
    """Streams fixed-length clips ``(offset_samples, clip)`` from a file, decoded block by block.

    Every clip is ``clip_samples`` long; a file shorter than one clip but at least ``min_samples`` long
    gives one zero-padded clip. Raises :class:`AudioSkip` for a file that is silent, shorter than
    ``min_samples`` or unreadable (after any clips already yielded: callers drop the whole file).
    The generator's return value is the decoded length in samples.
    """
    buffer = np.zeros(0, dtype=np.float32)
    start = 0  # offset of buffer[0] in the file, in samples
    total = 0
    peak = 0.0
    emitted = 0
    block_seconds = max(10.0, 4 * clip_samples / sample_rate)
    skip = 0  # samples still to drop when the hop is longer than a clip
    for block in iter_audio_blocks(path, sample_rate, block_seconds):
        total += block.size
        peak = max(peak, float(np.max(np.abs(block))) if block.size else 0.0)
        if skip:
            dropped = min(skip, block.size)
            block, skip = block[dropped:], skip - dropped
        buffer = np.concatenate([buffer, block]) if buffer.size else block
        while buffer.size >= clip_samples:
            yield start, buffer[:clip_samples].copy()
            emitted += 1
            start += hop_samples
            if hop_samples <= buffer.size:
                buffer = buffer[hop_samples:]
            else:
                skip, buffer = hop_samples - buffer.size, buffer[:0]
    if peak < SILENCE_PEAK:
        raise AudioSkip(f"silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)")
    if emitted == 0:
        if total < max(min_samples, 1):
            raise AudioSkip(
                f"too short ({total / sample_rate:.2f} s < minimum {min_samples / sample_rate:.2f} s)"
            )
        clip = np.zeros(clip_samples, dtype=np.float32)
        clip[: buffer.size] = buffer
        yield 0, clip
    return total
