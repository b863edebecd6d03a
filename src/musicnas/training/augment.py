"""Augmentation for log-mel batches ``[B, C, n_mels, frames]``: time crop and shift, SpecAugment masks, mixup.

ENAS trained on CIFAR with random crop and horizontal flip; neither means anything on a spectrogram
(flipping time reverses the music, shifting frequency changes pitch and timbre). In their place (see
shared/docs/enas-reference.md section 6): a random time crop placed at a random offset, a circular time
shift, and SpecAugment-style time and frequency masks. A random gain and spectral tilt, and mixup, are
optional.

Every function takes an explicit ``torch.Generator`` (on the CPU): the random parameters are drawn there
and then moved to the batch's device, so the same generator state gives the same batch on any device and
a resumed run continues exactly where it stopped. Masked or padded cells are set to 0, which is the
train-split mean after normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run during training and how strong they are (0 disables one)."""

    crop_min_fraction: float = 0.8  # keep a random window of at least this share of the frames
    max_shift_fraction: float = 0.25  # circular time shift of up to this share of the frames
    freq_masks: int = 2
    freq_mask_width: int = 8  # mel bins, upper bound per mask
    time_masks: int = 2
    time_mask_width: int = 12  # frames, upper bound per mask
    # Beta(alpha, alpha) mixing weight; 0 turns mixup off. On by default: small real-music sets overfit
    # (train clip accuracy 0.9 against 0.4 on val without it, docs/realmusic.md).
    mixup_alpha: float = 0.3
    # A recording's level and EQ differ from another's without changing what it is: a random gain (the
    # same offset on every band) and a random spectral tilt (a linear ramp over the bands, low end down
    # and high end up or the reverse), in units of the normalised features (about one band std). On by
    # default: on real music 0.5 / 0.5 gave 52.8 ± 2.9 vs 51.0 ± 3.8% of test files and 48.4 ± 4.1 vs
    # 41.9 ± 2.4% of val files, 3 seeds (docs/realmusic.md).
    gain: float = 0.5  # offset uniform in [-gain, gain]
    tilt: float = 0.5  # ramp from -t at the lowest band to +t at the highest, t uniform in [-tilt, tilt]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _uniform_int(
    low: torch.Tensor | int, high: torch.Tensor | int, n: int, g: torch.Generator
) -> torch.Tensor:
    """``n`` integers, element i uniform in ``[low_i, high_i]`` (inclusive), drawn on the CPU."""
    low = torch.as_tensor(low, dtype=torch.float64).expand(n)
    high = torch.as_tensor(high, dtype=torch.float64).expand(n)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return (low + torch.floor(u * (high - low + 1))).to(torch.int64).clamp(max=high.to(torch.int64))


def time_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Rolls each example along time by its own shift in ``[-max_shift, max_shift]`` (circular)."""
    if max_shift <= 0:
        return x
    b, frames = x.shape[0], x.shape[-1]
    shifts = _uniform_int(-max_shift, max_shift, b, generator).to(x.device)
    idx = (torch.arange(frames, device=x.device).unsqueeze(0) - shifts.unsqueeze(1)) % frames  # [B, T]
    idx = idx.view(b, *([1] * (x.dim() - 2)), frames).expand_as(x)
    return torch.gather(x, -1, idx)


def random_time_crop(x: torch.Tensor, min_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Keeps a random window of each example (length between ``min_fraction`` of the frames and all of
    them) and places it at a random offset in an otherwise zero clip of the same length.

    The cache holds clips of a fixed length, so cropping shorter windows and zero-padding them back
    keeps the batch shape while teaching the net that content can start and stop anywhere."""
    if min_fraction >= 1.0:
        return x
    b, frames = x.shape[0], x.shape[-1]
    min_len = max(1, int(round(min_fraction * frames)))
    lengths = _uniform_int(min_len, frames, b, generator)
    starts = _uniform_int(0, frames - lengths, b, generator)  # where the window begins in the input
    offsets = _uniform_int(0, frames - lengths, b, generator)  # where it lands in the output
    t = torch.arange(frames).unsqueeze(0)  # output frame index
    src = t - offsets.unsqueeze(1) + starts.unsqueeze(1)
    keep = (t >= offsets.unsqueeze(1)) & (t < (offsets + lengths).unsqueeze(1))
    src = src.clamp(0, frames - 1).to(x.device)
    keep = keep.to(x.device)
    shape = (b, *([1] * (x.dim() - 2)), frames)
    out = torch.gather(x, -1, src.view(shape).expand_as(x))
    return out * keep.view(shape).to(x.dtype)


def _band_masks(b: int, size: int, count: int, max_width: int, g: torch.Generator) -> torch.Tensor:
    """``[B, size]`` bool, True inside any of ``count`` random bands of width ``0..max_width``."""
    mask = torch.zeros(b, size, dtype=torch.bool)
    max_width = min(max_width, size)
    if count <= 0 or max_width <= 0:
        return mask
    pos = torch.arange(size).unsqueeze(0)
    for _ in range(count):
        width = _uniform_int(0, max_width, b, g)
        start = _uniform_int(0, size - width, b, g)
        mask |= (pos >= start.unsqueeze(1)) & (pos < (start + width).unsqueeze(1))
    return mask


def spec_augment(
    x: torch.Tensor,
    generator: torch.Generator,
    freq_masks: int = 2,
    freq_mask_width: int = 8,
    time_masks: int = 2,
    time_mask_width: int = 12,
) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) frequency and time masks, per example, set to 0 (the mean)."""
    b, n_mels, frames = x.shape[0], x.shape[-2], x.shape[-1]
    fmask = _band_masks(b, n_mels, freq_masks, freq_mask_width, generator)  # [B, F]
    tmask = _band_masks(b, frames, time_masks, time_mask_width, generator)  # [B, T]
    masked = fmask.unsqueeze(2) | tmask.unsqueeze(1)  # [B, F, T]
    masked = masked.view(b, *([1] * (x.dim() - 3)), n_mels, frames).to(x.device)
    return x.masked_fill(masked, 0.0)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): ``lam * x + (1 - lam) * x[perm]``; returns (mixed, y, y[perm], lam).

    torch's Beta sampler takes no generator, so lam comes from a numpy generator seeded by a draw from
    ``generator``: still a pure function of the generator's state."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam


def gain_and_tilt(x: torch.Tensor, gain: float, tilt: float, generator: torch.Generator) -> torch.Tensor:
    """Adds a per-example level offset in ``[-gain, gain]`` and a per-example linear tilt over the mel
    bands (``-t`` at the lowest band to ``+t`` at the highest, ``t`` in ``[-tilt, tilt]``): a recording
    played louder or through another EQ, on log-mel features."""
    if gain <= 0 and tilt <= 0:
        return x
    b, n_mels = x.shape[0], x.shape[-2]
    offset = (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * gain  # [B]
    slope = (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * tilt  # [B]
    ramp = torch.linspace(-1.0, 1.0, n_mels, dtype=torch.float64) if n_mels > 1 else torch.zeros(1)
    shift = offset[:, None] + slope[:, None] * ramp[None, :]  # [B, F]
    shift = shift.view(b, *([1] * (x.dim() - 3)), n_mels, 1).to(device=x.device, dtype=x.dtype)
    return x + shift


class SpectrogramAugment:
    """Applies the configured crop, shift and masks to a training batch (not mixup: that changes the
    targets, so the trainer calls :func:`mixup` itself)."""

    def __init__(self, config: AugmentConfig):
        self.config = config

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.config
        frames = x.shape[-1]
        x = random_time_crop(x, c.crop_min_fraction, generator)
        x = time_shift(x, int(round(c.max_shift_fraction * frames)), generator)
        x = gain_and_tilt(x, c.gain, c.tilt, generator)
        return spec_augment(x, generator, c.freq_masks, c.freq_mask_width, c.time_masks, c.time_mask_width)
