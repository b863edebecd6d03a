"""The log-mel statistics + logistic regression floor."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from musicnas.baselines.logreg import (
    clip_statistics,
    file_floor,
    file_statistics,
    logmel_stats_logreg,
    track_accuracy,
)
from musicnas.runtime import MusicnasError


class FakeCache:
    """Just the FeatureCache surface the baseline uses, over in-memory features."""

    def __init__(self, features, labels, splits, track_ids, classes):
        self.features = np.asarray(features, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.splits = np.asarray(splits)
        self.track_ids = np.asarray(track_ids, dtype=np.int64)
        self.classes = classes
        self.num_classes = len(classes)
        self.config = SimpleNamespace(n_mels=self.features.shape[1])
        self.paths = [f"track{t}.wav" for t in self.track_ids]  # one file per track

    def split_indices(self, split):
        return np.flatnonzero(self.splits == split)

    def get_batch(self, indices, normalize=True):
        assert not normalize, "statistics must come from unnormalised dB"
        idx = np.asarray(indices)
        return torch.from_numpy(self.features[idx]).unsqueeze(1), torch.from_numpy(self.labels[idx])


def _blobs(n_tracks_per_class=12, clips=3, n_mels=8, frames=10, classes=3, noise=1.0, seed=0):
    """Clips whose band means depend on the class (plus noise): linearly separable-ish."""
    rng = np.random.default_rng(seed)
    feats, labels, splits, tracks = [], [], [], []
    track = 0
    for c in range(classes):
        for t in range(n_tracks_per_class):
            split = (
                "train" if t < n_tracks_per_class - 4 else ("val" if t < n_tracks_per_class - 2 else "test")
            )
            for _ in range(clips):
                base = np.zeros(n_mels)
                base[c * 2] = 6.0
                feats.append(base[:, None] + noise * rng.standard_normal((n_mels, frames)))
                labels.append(c)
                splits.append(split)
                tracks.append(track)
            track += 1
    return FakeCache(feats, labels, splits, tracks, [f"c{i}" for i in range(classes)])


def test_clip_statistics_are_band_mean_and_std():
    cache = _blobs()
    stats = clip_statistics(cache, np.array([0, 5]), batch_size=1)
    x = cache.features[[0, 5]]
    np.testing.assert_allclose(stats[:, :8], x.mean(axis=2), rtol=1e-5)
    np.testing.assert_allclose(stats[:, 8:], x.std(axis=2), rtol=1e-5)


def test_separable_data_scores_well_above_chance():
    result = logmel_stats_logreg(_blobs(), seed=0)
    assert result["chance"] == pytest.approx(1 / 3)
    assert result["features"] == 16
    for split in ("val", "test"):
        assert result[split]["clip_acc"] >= 0.9 and result[split]["track_acc"] >= 0.9
        assert result[split]["tracks"] == 6 and result[split]["clips"] == 18


def test_noise_only_data_stays_near_chance():
    cache = _blobs(n_tracks_per_class=20, noise=1.0)
    cache.features = np.random.default_rng(1).standard_normal(cache.features.shape).astype(np.float32)
    result = logmel_stats_logreg(cache, seed=0)
    assert result["test"]["clip_acc"] < 0.75  # nothing to learn: the floor must not look good by accident


def test_track_accuracy_averages_probabilities_not_votes():
    # two clips lean weakly to class 0, one is sure of class 1: the mean says 1
    probs = np.array([[0.55, 0.45], [0.55, 0.45], [0.0, 1.0]])
    assert track_accuracy(probs, np.array([1, 1, 1]), np.array([7, 7, 7])) == 1.0
    assert track_accuracy(probs, np.array([0, 0, 0]), np.array([7, 7, 7])) == 0.0


def test_empty_split_is_reported_as_none():
    cache = _blobs()
    cache.splits[cache.splits == "val"] = "train"
    result = logmel_stats_logreg(cache)
    assert result["val"] is None and result["test"]["clip_acc"] >= 0.9


def test_single_class_train_split_is_a_user_error():
    cache = _blobs()
    cache.labels[:] = 0
    with pytest.raises(MusicnasError, match="only one class"):
        logmel_stats_logreg(cache)


def test_on_a_prepared_cache(tiny_cache):
    result = logmel_stats_logreg(tiny_cache, seed=0)
    assert result["classes"] == tiny_cache.classes
    assert result["train"]["clip_acc"] >= 0.9
    assert result["test"]["clip_acc"] > 2 * result["chance"]  # tones of three registers are easy


def test_file_statistics_pool_every_frame_of_a_file():
    cache = _blobs(clips=3)
    idx = np.arange(6)  # track 0 (clips 0-2) and track 1 (clips 3-5), one file each
    stats, labels = file_statistics(cache, idx, batch_size=2)
    assert stats.shape == (2, 24) and labels.tolist() == [0, 0]
    x = cache.features[:3]  # [3 clips, n_mels, frames] of the first file
    frames = np.concatenate(list(x), axis=1)
    np.testing.assert_allclose(stats[0, :8], frames.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(stats[0, 8:16], frames.std(axis=1), rtol=1e-4)
    mad = np.abs(np.diff(x, axis=2)).sum(axis=(0, 2)) / (3 * (x.shape[2] - 1))  # no delta across clips
    np.testing.assert_allclose(stats[0, 16:], mad, rtol=1e-5)


def test_file_floor_separates_and_reports_files():
    result = file_floor(_blobs(), seed=0)
    assert result["features"] == 24
    assert result["test"]["files"] == 6 and result["test"]["file_acc"] == 1.0


def test_file_floor_on_noise_stays_near_chance():
    cache = _blobs(n_tracks_per_class=30, noise=1.0)
    cache.features = np.random.default_rng(2).standard_normal(cache.features.shape).astype(np.float32)
    assert file_floor(cache, seed=0)["test"]["file_acc"] < 0.75
