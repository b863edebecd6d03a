"""Feature-extraction throughput: musicnas's pipeline against a straightforward librosa loop.

Both turn the same generated 22.05 kHz wav files into 3 s log-mel clips at 16 kHz with the same settings:

* musicnas: threads decode (soundfile) and resample (soxr) while the main thread runs the torch LogMel
  on batches of clips (``musicnas.data.extract.extract_features``, what ``prepare`` uses), and the full
  ``prepare()`` including splits, statistics and writing the float16 cache;
* librosa: ``librosa.load(sr=16000)`` then ``melspectrogram`` + ``power_to_db`` clip by clip.

Run:  MUSICNAS_NO_REEXEC=1 .venv/bin/python benchmarks/features.py [--files 36] [--seconds 15]
(librosa is a test dependency: ``pip install -e .[test]``.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from musicnas.data.cache import prepare
from musicnas.data.extract import extract_features
from musicnas.data.features import FeatureConfig
from musicnas.runtime import default_threads


def write_files(folder: Path, count: int, seconds: float, sr: int) -> list[str]:
    """Two-class folder of music-like noise + chords (content does not matter for speed)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(count):
        wave = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 2000, 4)) * np.exp(-(t % 0.5) * 3)
        wave = 0.2 * wave / np.abs(wave).max() + 0.02 * rng.standard_normal(t.size)
        path = folder / f"class{i % 2}" / f"track{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave.astype(np.float32), sr, subtype="PCM_16")
        paths.append(str(path))
    return paths


def run_musicnas(paths, config, workers, batch_size) -> tuple[int, float, np.ndarray]:
    start = time.perf_counter()
    clips, first = 0, None
    for item in extract_features(
        paths, config, workers, device="cpu", batch_size=batch_size, show_progress=False
    ):
        clips += len(item.offsets)
        if first is None:
            first = item.features[0].astype(np.float32)
    return clips, time.perf_counter() - start, first


def run_librosa(paths, config) -> tuple[int, float, np.ndarray]:
    import librosa

    start = time.perf_counter()
    clips, first = 0, None
    for path in paths:
        y, _ = librosa.load(path, sr=config.sample_rate, mono=True)
        for offset in range(0, len(y) - config.clip_samples + 1, config.hop_samples):
            S = librosa.feature.melspectrogram(
                y=y[offset : offset + config.clip_samples],
                sr=config.sample_rate,
                n_fft=config.n_fft,
                hop_length=config.hop_length,
                n_mels=config.n_mels,
                fmin=config.fmin,
                fmax=config.fmax,
                htk=config.mel_scale == "htk",
                norm=config.norm,
                center=True,
                pad_mode="constant",
            )
            db = librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)
            clips += 1
            if first is None:
                first = db
    return clips, time.perf_counter() - start, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=36, help="number of wav files to generate")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each file")
    parser.add_argument("--source-rate", type=int, default=22050, help="sample rate of the generated files")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads [all usable cores]")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [all usable cores]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="best of N timed runs per pipeline")
    args = parser.parse_args()
    threads = args.threads or default_threads()
    workers = args.workers or default_threads()
    torch.set_num_threads(threads)
    config = FeatureConfig()

    with tempfile.TemporaryDirectory(prefix="musicnas-bench-") as tmp:
        tmp = Path(tmp)
        paths = write_files(tmp / "audio", args.files, args.seconds, args.source_rate)
        # warm-up: librosa's lazy imports and numba, torch's first STFT, page cache for the files
        run_librosa(paths[:2], config)
        run_musicnas(paths[:2], config, workers, args.batch_size)

        ours = min(
            (run_musicnas(paths, config, workers, args.batch_size) for _ in range(args.repeats)),
            key=lambda r: r[1],
        )
        ref = min((run_librosa(paths, config) for _ in range(args.repeats)), key=lambda r: r[1])
        full = []
        for i in range(args.repeats):
            start = time.perf_counter()
            prepare(
                tmp / "audio", tmp / f"cache{i}", config, workers=workers, device="cpu", show_progress=False
            )
            full.append(time.perf_counter() - start)
        full_s = min(full)

    assert ours[0] == ref[0], (ours[0], ref[0])
    diff = float(np.abs(ours[2] - ref[2]).max())
    clips = ours[0]
    print(
        f"{args.files} files x {args.seconds:g} s at {args.source_rate} Hz -> {clips} clips of "
        f"{config.clip_seconds:g} s at {config.sample_rate} Hz, {config.n_mels} mels, n_fft {config.n_fft}, hop {config.hop_length}"
    )
    print(
        f"cores {default_threads()}, torch threads {threads}, decode workers {workers}, best of {args.repeats}"
    )
    print(f"{'pipeline':<44}{'seconds':>9}{'clips/s':>10}")
    print(f"{'librosa load + melspectrogram + power_to_db':<44}{ref[1]:>9.3f}{clips / ref[1]:>10.1f}")
    print(f"{'musicnas extract (threads + batched LogMel)':<44}{ours[1]:>9.3f}{clips / ours[1]:>10.1f}")
    print(f"{'musicnas prepare() incl. splits + cache write':<44}{full_s:>9.3f}{clips / full_s:>10.1f}")
    print(f"speed-up over librosa: extract {ref[1] / ours[1]:.2f}x, prepare {ref[1] / full_s:.2f}x")
    print(f"max |musicnas - librosa| on the first clip: {diff:.4f} dB (musicnas stores float16)")


if __name__ == "__main__":
    sys.exit(main())
