"""LogMel and the mel filterbank against librosa (a test-only dependency), and FeatureConfig."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.data.features import FeatureConfig, LogMel, mel_filterbank
from musicnas.runtime import MusicnasError

librosa = pytest.importorskip("librosa")


def music_like(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Chords, a noise burst and a decaying envelope: energy across the spectrum, with quiet parts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = np.zeros_like(t)
    for f in rng.uniform(80, 3000, size=6):
        wave += np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * rng.uniform(0.05, 0.3)
    wave *= np.exp(-((t % 0.5) * 4))
    wave += 0.02 * rng.standard_normal(t.size)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def librosa_logmel(y: np.ndarray, c: FeatureConfig) -> np.ndarray:
    S = librosa.feature.melspectrogram(
        y=y,
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        n_mels=c.n_mels,
        fmin=c.fmin,
        fmax=c.fmax,
        htk=c.mel_scale == "htk",
        norm=c.norm,
        center=True,
        pad_mode="constant",
        power=2.0,
    )
    return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)


CONFIGS = [
    FeatureConfig(),
    FeatureConfig(norm=None),
    FeatureConfig(mel_scale="htk"),
    FeatureConfig(mel_scale="htk", norm=None),
    FeatureConfig(
        sample_rate=22050,
        n_fft=2048,
        hop_length=256,
        n_mels=128,
        fmin=30.0,
        fmax=8000.0,
        clip_seconds=2.0,
        min_seconds=0.5,
    ),
    FeatureConfig(
        n_fft=512, hop_length=160, n_mels=40, fmin=50.0, mel_scale="htk", norm=None, clip_seconds=1.5
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.mel_scale}-{c.norm}-{c.n_fft}-{c.n_mels}")
def test_filterbank_equals_librosa(config):
    ours = mel_filterbank(
        config.sample_rate,
        config.n_fft,
        config.n_mels,
        config.fmin,
        config.fmax,
        config.mel_scale == "htk",
        config.norm,
    )
    ref = librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
        htk=config.mel_scale == "htk",
        norm=config.norm,
        dtype=np.float64,
    )
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9 * ref.max())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.mel_scale}-{c.norm}-{c.n_fft}-{c.n_mels}")
def test_logmel_matches_librosa(config):
    waves = np.stack([music_like(config.clip_seconds, config.sample_rate, seed) for seed in range(3)])
    ours = LogMel(config)(torch.from_numpy(waves)).numpy()
    assert ours.shape == (3, config.n_mels, config.frames)
    for y, got in zip(waves, ours, strict=True):
        ref = librosa_logmel(y, config)
        assert ref.shape == got.shape
        # dB differences: float32 STFT rounding only (stack.md measured ~3e-4 dB)
        assert np.abs(got - ref).max() < 1e-3


def test_logmel_single_wave_and_batch_agree():
    c = FeatureConfig()
    y = torch.from_numpy(music_like(3.0, c.sample_rate, 7))
    m = LogMel(c)
    single = m(y)
    batch = m(torch.stack([y, torch.zeros_like(y)]))
    assert single.shape == (c.n_mels, c.frames)
    torch.testing.assert_close(single, batch[0], atol=1e-4, rtol=0)
    # digital silence hits the 1e-10 power floor exactly: -100 dB, no -inf
    assert torch.all(batch[1] == -100.0)


def test_logmel_buffers_are_not_weights():
    """The filterbank and window follow from the config, so they stay out of saved state dicts."""
    assert LogMel(FeatureConfig()).state_dict() == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_logmel_cuda_matches_cpu():
    c = FeatureConfig()
    y = torch.from_numpy(np.stack([music_like(3.0, c.sample_rate, s) for s in range(4)]))
    cpu = LogMel(c)(y)
    gpu = LogMel(c).cuda()(y.cuda()).cpu()
    assert (gpu - cpu).abs().max().item() < 1e-2


def test_frames_and_shapes():
    c = FeatureConfig()
    assert c.clip_samples == 48000 and c.frames == 1 + 48000 // 512 == 94
    assert c.input_shape == (1, 64, 94)


@settings(max_examples=25, deadline=None)
@given(
    field=st.sampled_from(
        [
            "sample_rate",
            "clip_seconds",
            "clip_hop_seconds",
            "min_seconds",
            "n_fft",
            "hop_length",
            "n_mels",
            "fmin",
            "fmax",
            "mel_scale",
            "norm",
        ]
    )
)
def test_key_changes_with_every_option_and_round_trips(field):
    base = FeatureConfig()
    changed = {
        "sample_rate": 22050,
        "clip_seconds": 4.0,
        "clip_hop_seconds": 1.5,
        "min_seconds": 0.5,
        "n_fft": 2048,
        "hop_length": 256,
        "n_mels": 96,
        "fmin": 20.0,
        "fmax": 7000.0,
        "mel_scale": "htk",
        "norm": None,
    }[field]
    other = dataclasses.replace(base, **{field: changed})
    assert other.key() != base.key()
    assert FeatureConfig.from_dict(other.to_dict()) == other
    assert FeatureConfig.from_dict(other.to_dict()).key() == other.key()


@pytest.mark.parametrize(
    "bad",
    [
        {"mel_scale": "bark"},
        {"norm": "l2"},
        {"fmax": 9000.0},
        {"fmin": 500.0, "fmax": 400.0},
        {"n_mels": 0},
        {"min_seconds": 5.0},
        {"hop_length": 0},
    ],
)
def test_invalid_config_is_a_user_error(bad):
    with pytest.raises(MusicnasError):
        FeatureConfig(**bad)


def test_number_types_do_not_change_the_key():
    assert (
        FeatureConfig(clip_seconds=3, fmax=8000).key() == FeatureConfig(clip_seconds=3.0, fmax=8000.0).key()
    )


def test_from_dict_rejects_unknown_options():
    with pytest.raises(MusicnasError, match="unknown feature options"):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), "n_bins": 3})
