"""``Classifier``: a loaded bundle that labels audio files or waveforms.

A file is decoded in blocks and cut into clips by the data pipeline itself
(:func:`musicnas.data.audio.iter_clips`: same decoding, downmix, resampling, clip length and hop as the
training cache), and the clips go through LogMel, the bundle's normalisation and the model in batches. Only the running sum of clip logits is kept, so memory does not grow with the file's length.

A file's label is the softmax of the **mean of its clip logits**: the same rule as track accuracy in
``musicnas evaluate`` (enas-reference.md section 6).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from musicnas.runtime import MusicnasError, select_device

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Top-k labels of one file or waveform (probabilities of the mean clip logits)."""

    source: str
    top: list[tuple[str, float]]
    probabilities: dict[str, float]
    num_clips: int
    span_seconds: float  # audio the clips cover (the tail after the last full clip is not used)
    aggregation: str = "mean of clip logits, then softmax"
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.top[0][0]

    def to_hf(self) -> list[dict]:
        """The Hugging Face audio-classification pipeline's form: ``[{"label", "score"}, ...]``, top-k,
        best first."""
        return [{"label": name, "score": p} for name, p in self.top]

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "label": self.label,
            "predictions": self.to_hf(),
            "top": [{"label": name, "probability": p} for name, p in self.top],
            "probabilities": self.probabilities,
            "clips": self.num_clips,
            "span_seconds": self.span_seconds,
            "aggregation": self.aggregation,
        }


def iter_waveform_clips(
    wave: np.ndarray, clip_samples: int, hop_samples: int, min_samples: int
) -> Iterator[np.ndarray]:
    """Cuts an in-memory mono waveform into clips exactly as the data pipeline cuts files
    (:func:`musicnas.data.audio.iter_clips`): full clips every ``hop_samples``; the tail is dropped
    unless there is no full clip, then one zero-padded clip if at least ``min_samples`` long."""
    emitted = 0
    for start in range(0, max(wave.size - clip_samples + 1, 0), hop_samples):
        yield wave[start : start + clip_samples]
        emitted += 1
    if emitted == 0:
        if wave.size < max(min_samples, 1):
            raise MusicnasError(
                f"audio too short to classify ({wave.size} samples < minimum {min_samples}, "
                "the bundle's min_seconds)"
            )
        clip = np.zeros(clip_samples, dtype=np.float32)
        clip[: wave.size] = wave
        yield clip


def _batched(clips: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Packs clips into one reused ``[batch_size, samples]`` buffer; each yielded batch is only valid
    until the next one is asked for (the caller runs it through the model first)."""
    buf: np.ndarray | None = None
    n = 0
    for clip in clips:
        if buf is None:
            buf = np.empty((batch_size, clip.shape[0]), dtype=np.float32)
        buf[n] = clip
        n += 1
        if n == batch_size:
            yield buf
            n = 0
    if n:
        yield buf[:n]


def waveform_to_mono(waveform, sample_rate: int | None, target_rate: int) -> np.ndarray:
    """A 1-D or ``[channels, samples]`` numpy/torch waveform as mono float32 at ``target_rate``."""
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    wave = np.asarray(waveform, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=0)  # channels first, as torch audio code and soundfile.T give
    elif wave.ndim != 1:
        raise MusicnasError(f"waveform must be 1-D or [channels, samples], got shape {tuple(wave.shape)}")
    if not np.all(np.isfinite(wave)):
        raise MusicnasError("waveform holds NaN or infinite samples")
    if sample_rate is not None and int(sample_rate) != target_rate:
        import soxr

        wave = soxr.resample(wave, int(sample_rate), target_rate).astype(np.float32)
    return wave


class Classifier:
    """A trained model with its feature pipeline. Use :func:`musicnas.load` to get one.

    ``classes``: label names (index = model output); ``model``: the torch module (eval mode);
    ``feature_config``, ``mean``, ``std``: the front end the model was trained with."""

    def __init__(self, contents, device: str = "auto", batch_size: int = 32):
        from musicnas.data.features import LogMel

        self.path: Path = contents.path
        self.device = select_device(device)
        self.spec = contents.spec
        self.arch = contents.arch
        self.summary = contents.summary
        self.classes: list[str] = contents.classes
        self.feature_config = contents.feature_config
        self.mean = contents.mean
        self.std = contents.std
        self.model: torch.nn.Module = contents.model.to(self.device).eval()
        self.frontend = LogMel(self.feature_config).to(self.device).eval()
        self.batch_size = batch_size
        self._mean = self.mean.to(self.device).view(1, 1, -1, 1)
        self._std = self.std.to(self.device).view(1, 1, -1, 1)

    def __repr__(self) -> str:
        return f"Classifier({self.path}, {self.spec.type}, classes={self.classes})"

    @property
    def sample_rate(self) -> int:
        return self.feature_config.sample_rate

    @torch.no_grad()
    def clip_logits(self, clips: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits [B, K] of a batch of clips ``[B, clip_samples]`` at the bundle's sample rate."""
        wave = torch.as_tensor(clips, dtype=torch.float32, device=self.device)
        feats = self.frontend(wave).unsqueeze(1)  # [B, 1, n_mels, frames]
        feats = (feats - self._mean) / self._std
        return self.model(feats).float()

    def _mean_logits(self, clips: Iterable[np.ndarray]) -> tuple[torch.Tensor, int]:
        total = torch.zeros(len(self.classes), dtype=torch.float64)
        n_clips = 0
        for batch in _batched(clips, self.batch_size):
            total += self.clip_logits(batch).sum(dim=0).double().cpu()
            n_clips += batch.shape[0]
        if n_clips == 0:
            raise MusicnasError("the audio is empty: nothing to classify")
        return total / n_clips, n_clips

    def _file_clips(self, path: Path) -> Iterator[np.ndarray]:
        from musicnas.data.audio import AudioSkip, iter_clips

        c = self.feature_config
        if not path.is_file():
            raise MusicnasError(f"audio file not found: {path}")
        try:
            for _offset, clip in iter_clips(
                path, c.clip_samples, c.hop_samples, c.min_samples, c.sample_rate
            ):
                yield clip
        except AudioSkip as exc:
            raise MusicnasError(f"cannot classify {path}: {exc}") from exc

    def predict(self, source, sample_rate: int | None = None, top_k: int = 3) -> Prediction:
        """Labels an audio file (path) or a waveform (numpy/torch, 1-D or ``[channels, samples]``).

        ``sample_rate`` is the waveform's rate (resampled to the bundle's when it differs; None means it
        already is at the bundle's rate). Files are decoded block by block (memory does not grow with
        their length). Returns the ``top_k`` labels by the softmax of the mean clip logits."""
        c = self.feature_config
        if isinstance(source, (str, Path)):
            name = str(source)
            clips = self._file_clips(Path(source))
        else:
            name = "<waveform>"
            wave = waveform_to_mono(source, sample_rate, self.sample_rate)
            clips = iter_waveform_clips(wave, c.clip_samples, c.hop_samples, c.min_samples)
        mean_logits, n_clips = self._mean_logits(clips)
        probs = torch.softmax(mean_logits, dim=0)
        k = max(1, min(int(top_k), len(self.classes)))
        values, order = torch.topk(probs, k)
        return Prediction(
            source=name,
            top=[(self.classes[i], float(p)) for p, i in zip(values.tolist(), order.tolist(), strict=True)],
            probabilities={name_: float(p) for name_, p in zip(self.classes, probs.tolist(), strict=True)},
            num_clips=n_clips,
            # clips start every hop; this is the span the clips cover, not the file's exact length
            span_seconds=((n_clips - 1) * c.hop_samples + c.clip_samples) / self.sample_rate,
        )
