"""Feature options and the log-mel front end.

:class:`LogMel` is a torch module (STFT + mel filterbank + dB) so the same code runs on CPU or GPU, at
prepare time and inside an exported model. It reproduces ``librosa.feature.melspectrogram`` followed by
``10 * log10(max(S, 1e-10))`` (librosa's ``power_to_db`` without ``top_db``); librosa itself is only a test
dependency, so the filterbank is computed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from musicnas.runtime import MusicnasError

MEL_SCALES = ("slaney", "htk")
NORMS = ("slaney", None)
AMIN = 1e-10  # power floor before the log, as librosa.power_to_db

# Bump when the meaning of a feature option changes, so caches built by older code are not reused.
FEATURE_VERSION = 1
# Upper bounds: beyond them a clip no longer fits in memory (a 1e9 s clip is 16e12 samples), and no
# music model needs more (GTZAN tracks are 30 s long).
MAX_SAMPLE_RATE = 384_000
MAX_CLIP_SECONDS = 600.0
MAX_HOP_SECONDS = 3600.0
MAX_N_FFT = 65_536
MAX_N_MELS = 512


@dataclass(frozen=True)
class FeatureConfig:
    """Every option that decides what a clip's features are."""

    sample_rate: int = 16000
    clip_seconds: float = 3.0
    # Clips start every second: overlapping windows triple the clips of a file (on real music, 48.8 vs
    # 45.x% of test files with the same recipe, docs/realmusic.md) and predict from more of each file.
    clip_hop_seconds: float = 1.0
    min_seconds: float = 1.0
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    mel_scale: str = "slaney"
    norm: str | None = "slaney"

    def __post_init__(self) -> None:
        # Normalise number types so FeatureConfig(clip_seconds=3) and (clip_seconds=3.0) hash alike.
        try:
            for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
                object.__setattr__(self, name, int(getattr(self, name)))
            for name in ("clip_seconds", "clip_hop_seconds", "min_seconds", "fmin"):
                object.__setattr__(self, name, float(getattr(self, name)))
            if self.fmax is not None:
                object.__setattr__(self, "fmax", float(self.fmax))
        except (TypeError, ValueError, OverflowError) as exc:
            raise MusicnasError(f"invalid feature options: {exc}") from exc
        problems = []
        if not 1000 <= self.sample_rate <= MAX_SAMPLE_RATE:
            problems.append(
                f"sample_rate={self.sample_rate} (use e.g. 16000 or 22050; at most {MAX_SAMPLE_RATE})"
            )
        if not 0 < self.clip_seconds <= MAX_CLIP_SECONDS:
            problems.append(f"clip_seconds={self.clip_seconds} must be > 0 and at most {MAX_CLIP_SECONDS:g}")
        if not 0 < self.clip_hop_seconds <= MAX_HOP_SECONDS:
            problems.append(
                f"clip_hop_seconds={self.clip_hop_seconds} must be > 0 and at most {MAX_HOP_SECONDS:g}"
            )
        if not 0 <= self.min_seconds <= self.clip_seconds:
            problems.append(
                f"min_seconds={self.min_seconds} must be between 0 and clip_seconds={self.clip_seconds}"
            )
        if not 16 <= self.n_fft <= MAX_N_FFT or not 1 <= self.hop_length <= MAX_N_FFT:
            problems.append(
                f"n_fft={self.n_fft} and hop_length={self.hop_length} must be in [16, {MAX_N_FFT}] and "
                f"[1, {MAX_N_FFT}]"
            )
        if not 1 <= self.n_mels <= MAX_N_MELS:
            problems.append(f"n_mels={self.n_mels} must be between 1 and {MAX_N_MELS}")
        nyquist = self.sample_rate / 2
        if not (0 <= self.fmin < (self.fmax if self.fmax is not None else nyquist) <= nyquist):
            problems.append(
                f"need 0 <= fmin < fmax <= sample_rate/2 = {nyquist:g} (got fmin={self.fmin}, fmax={self.fmax})"
            )
        if self.mel_scale not in MEL_SCALES:
            problems.append(f"mel_scale={self.mel_scale!r} (use one of {', '.join(MEL_SCALES)})")
        if self.norm not in NORMS:
            problems.append(f"norm={self.norm!r} (use 'slaney' or None)")
        if problems:
            raise MusicnasError("invalid feature options: " + "; ".join(problems))

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return max(1, int(round(self.clip_hop_seconds * self.sample_rate)))

    @property
    def min_samples(self) -> int:
        return int(round(self.min_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Frames per clip with a centred STFT."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.n_mels, self.frames)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        if not isinstance(d, dict):
            raise MusicnasError(f"feature options must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MusicnasError(
                f"unknown feature options {unknown}; known ones are {sorted(known)} "
                "(was the file written by a newer musicnas?)"
            )
        return cls(**d)

    def key(self) -> str:
        """A short hash of every option (and the feature code version) that affects the features."""
        payload = json.dumps({"v": FEATURE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def hz_to_mel(hz: np.ndarray, htk: bool = False) -> np.ndarray:
    """Hz to mel: HTK's 2595*log10(1+f/700), or Slaney's (linear below 1 kHz, logarithmic above)."""
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp = 200.0 / 3  # Slaney: 3 mels per 200 Hz in the linear part
    break_hz, break_mel = 1000.0, 1000.0 / f_sp
    log_step = math.log(6.4) / 27.0
    return np.where(
        hz >= break_hz, break_mel + np.log(np.maximum(hz, 1e-12) / break_hz) / log_step, hz / f_sp
    )


def mel_to_hz(mel: np.ndarray, htk: bool = False) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    break_hz, break_mel = 1000.0, 1000.0 / f_sp
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= break_mel, break_hz * np.exp(log_step * (mel - break_mel)), f_sp * mel)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters, float64 [n_mels, 1 + n_fft // 2], defined as in Slaney's Auditory Toolbox
    (the definition librosa uses): triangles between consecutive mel-spaced edge frequencies, and with
    ``norm="slaney"`` each scaled to constant energy per Hz (2 / bandwidth)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, bins]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights


class LogMel(nn.Module):
    """Waveform [B, samples] (or [samples]) -> log-mel power spectrogram [B, n_mels, frames] in dB.

    Centred STFT with zero padding (librosa >= 0.10's default), periodic Hann window, power spectrum,
    mel filterbank, then ``10 * log10(max(S, 1e-10))`` with no ``top_db`` clipping.
    """

    def __init__(self, config: FeatureConfig | None = None):
        super().__init__()
        self.config = config or FeatureConfig()
        c = self.config
        basis = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax, c.mel_scale == "htk", c.norm)
        # Not persistent: both are functions of the config, so they stay out of model weight files.
        self.register_buffer("mel_basis", torch.from_numpy(basis).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(c.n_fft, periodic=True), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        squeeze = wave.dim() == 1
        if squeeze:
            wave = wave.unsqueeze(0)
        spec = torch.stft(
            wave.float(),
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, bins, frames]
        mel = torch.matmul(self.mel_basis, power)  # [B, n_mels, frames]
        db = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
        return db.squeeze(0) if squeeze else db

    def extra_repr(self) -> str:
        c = self.config
        return f"sr={c.sample_rate}, n_fft={c.n_fft}, hop={c.hop_length}, n_mels={c.n_mels}, scale={c.mel_scale}, norm={c.norm}"
