"""Spectrogram augmentations: shapes kept, seeded, and each one does what it says."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.training.augment import (
    AugmentConfig,
    SpectrogramAugment,
    gain_and_tilt,
    mixup,
    random_time_crop,
    spec_augment,
    time_shift,
)


def _batch(b=4, c=1, f=16, t=20, seed=0):
    return torch.randn(b, c, f, t, generator=torch.Generator().manual_seed(seed)) + 5.0  # no zeros inside


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 5),
    f=st.integers(1, 20),
    t=st.integers(1, 30),
    seed=st.integers(0, 2**31),
    cfg=st.builds(
        AugmentConfig,
        crop_min_fraction=st.floats(0.1, 1.0),
        max_shift_fraction=st.floats(0.0, 1.0),
        freq_masks=st.integers(0, 3),
        freq_mask_width=st.integers(0, 30),
        time_masks=st.integers(0, 3),
        time_mask_width=st.integers(0, 40),
        # values stay those of the band only without the level/tilt offsets (tested on their own below)
        gain=st.just(0.0),
        tilt=st.just(0.0),
    ),
)
def test_augment_keeps_shape_and_is_a_function_of_the_generator(b, f, t, seed, cfg):
    x = _batch(b, 1, f, t, seed=seed % 1000)
    aug = SpectrogramAugment(cfg)
    a = aug(x, _gen(seed))
    again = aug(x, _gen(seed))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, again)
    # every output cell is either 0 (masked or padded) or a value from the same example's mel band
    for i in range(b):
        for band in range(f):
            allowed = set(x[i, 0, band].tolist()) | {0.0}
            assert set(a[i, 0, band].tolist()) <= allowed


def test_different_generator_states_give_different_batches():
    x = _batch(8, 1, 32, 50)
    aug = SpectrogramAugment(AugmentConfig())
    assert not torch.equal(aug(x, _gen(1)), aug(x, _gen(2)))
    g = _gen(3)
    assert not torch.equal(aug(x, g), aug(x, g))  # the generator advances between batches


def test_time_shift_rolls_each_example_circularly():
    x = _batch(6, 2, 5, 17)
    y = time_shift(x, 8, _gen(0))
    shifts_seen = set()
    for i in range(x.shape[0]):
        matches = [s for s in range(-8, 9) if torch.equal(y[i], torch.roll(x[i], s, dims=-1))]
        assert matches, "each example must be a roll of itself (same roll for all channels and bands)"
        shifts_seen.add(matches[0])
    assert len(shifts_seen) > 1  # per-example shifts, not one for the whole batch
    assert torch.equal(time_shift(x, 0, _gen(0)), x)


def test_time_crop_keeps_one_contiguous_window_of_at_least_min_fraction():
    x = _batch(16, 1, 4, 40)
    y = random_time_crop(x, 0.5, _gen(0))
    for i in range(x.shape[0]):
        kept = (y[i, 0, 0] != 0).nonzero().flatten()
        n = kept.numel()
        assert 20 <= n <= 40
        assert torch.equal(kept, torch.arange(kept[0], kept[0] + n))  # contiguous in the output
        row = x[i, 0, 0]
        window = y[i, 0, 0, kept]
        # the window is a contiguous piece of the input
        assert any(torch.equal(row[s : s + n], window) for s in range(0, 40 - n + 1))
    assert torch.equal(random_time_crop(x, 1.0, _gen(0)), x)


def test_spec_augment_masks_bands_within_the_width_limits():
    x = _batch(32, 1, 24, 60)
    y = spec_augment(x, _gen(0), freq_masks=1, freq_mask_width=5, time_masks=1, time_mask_width=7)
    for i in range(x.shape[0]):
        zero = y[i, 0] == 0
        full_rows = zero.all(dim=1).sum().item()
        full_cols = zero.all(dim=0).sum().item()
        assert full_rows <= 5 and full_cols <= 7
        # every zero lies in a fully masked row or column (masks are bands, not speckles)
        assert torch.equal(zero, zero.all(dim=1, keepdim=True) | zero.all(dim=0, keepdim=True))
    assert (y == 0).any()
    none = spec_augment(x, _gen(0), freq_masks=0, time_masks=0)
    assert torch.equal(none, x)


def test_mixup_is_a_convex_combination_with_a_seeded_permutation():
    x = _batch(8, 1, 3, 4)
    y = torch.arange(8)
    mixed, ya, yb, lam = mixup(x, y, 0.4, _gen(5))
    assert 0.0 <= lam <= 1.0 and torch.equal(ya, y)
    assert sorted(yb.tolist()) == list(range(8))  # a permutation of the batch
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[yb])
    mixed2, _, yb2, lam2 = mixup(x, y, 0.4, _gen(5))
    assert lam2 == lam and torch.equal(yb2, yb) and torch.equal(mixed2, mixed)


@pytest.mark.parametrize("device", ["cpu"])
def test_augment_runs_on_the_batch_device(device):
    x = _batch().to(device)
    assert SpectrogramAugment(AugmentConfig())(x, _gen(0)).device == x.device


def test_gain_and_tilt_add_an_offset_linear_over_bands_and_constant_over_time():
    x = torch.randn(5, 1, 16, 20)
    out = gain_and_tilt(x, 0.5, 0.3, torch.Generator().manual_seed(3))
    shift = (out - x).double()
    assert torch.allclose(shift, shift[..., :1].expand_as(shift), atol=1e-6)  # same at every frame
    per_band = shift[:, 0, :, 0]  # [B, F]
    second_diff = per_band[:, 2:] - 2 * per_band[:, 1:-1] + per_band[:, :-2]
    assert torch.allclose(second_diff, torch.zeros_like(second_diff), atol=1e-5)  # linear over bands
    offset = per_band.mean(1)  # the ramp is centred, so the mean is the gain
    slope_end = per_band[:, -1] - offset  # the ramp's value at the highest band is the tilt
    assert offset.abs().max() <= 0.5 + 1e-6 and slope_end.abs().max() <= 0.3 + 1e-6
    assert len(set(offset.round(decimals=4).tolist())) == 5  # each example its own draw
    assert slope_end.abs().max() > 0.01  # a tilt, not only a level change


def test_gain_and_tilt_off_leaves_batch_and_generator_untouched():
    x = torch.randn(3, 1, 8, 10)
    g = torch.Generator().manual_seed(1)
    before = g.get_state()
    assert gain_and_tilt(x, 0.0, 0.0, g) is x
    assert torch.equal(g.get_state(), before)  # default runs draw exactly what they drew before
