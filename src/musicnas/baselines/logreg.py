"""The floor every searched network must beat: logistic regression on per-clip log-mel statistics.

Each clip becomes the mean and the standard deviation over time of every mel band (2 * n_mels numbers,
no temporal structure at all); features are standardised on the train split and a multinomial
logistic regression is fitted there. Track accuracy averages a track's clip probabilities.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from musicnas.runtime import MusicnasError

SPLITS = ("train", "val", "test")


def clip_statistics(cache, indices: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """[len(indices), 2 * n_mels]: per-band mean and std over frames of the unnormalised log-mel (dB)."""
    n_mels = cache.config.n_mels
    out = np.empty((len(indices), 2 * n_mels), dtype=np.float64)
    for start in range(0, len(indices), batch_size):
        x, _ = cache.get_batch(indices[start : start + batch_size], normalize=False)
        x = x[:, 0].double().numpy()  # [B, n_mels, frames]
        out[start : start + len(x), :n_mels] = x.mean(axis=2)
        out[start : start + len(x), n_mels:] = x.std(axis=2)
    return out


def track_accuracy(probs: np.ndarray, labels: np.ndarray, track_ids: np.ndarray) -> float:
    """Accuracy of the arg-max of each track's mean clip probability."""
    tracks = np.unique(track_ids)
    correct = 0
    for t in tracks:
        mask = track_ids == t
        correct += int(np.argmax(probs[mask].mean(axis=0)) == labels[mask][0])
    return correct / len(tracks)


def logmel_stats_logreg(cache, seed: int = 0, C: float = 1.0, max_iter: int = 2000) -> dict:
    """Fits the baseline on ``cache``'s train split and scores it on train, val and test.

    Returns ``{"method", "features", "classes", "chance", "train"/"val"/"test": {"clips", "tracks",
    "clip_acc", "track_acc"} (None for an empty split), "seconds"}``."""
    start = time.perf_counter()
    idx = {s: cache.split_indices(s) for s in SPLITS}
    if len(idx["train"]) == 0:
        raise MusicnasError(
            "the feature cache has no train clips; prepare it with a larger dataset or smaller val/test fractions"
        )
    y_train = cache.labels[idx["train"]]
    if len(np.unique(y_train)) < 2:
        raise MusicnasError("the train split holds only one class; logistic regression needs at least two")
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=max_iter, random_state=seed),
    )
    model.fit(clip_statistics(cache, idx["train"]), y_train)
    result: dict = {
        "method": "logmel_stats_logreg",
        "features": 2 * cache.config.n_mels,
        "classes": list(cache.classes),
        "chance": 1.0 / cache.num_classes,
        "C": C,
    }
    for split in SPLITS:
        indices = idx[split]
        if len(indices) == 0:
            result[split] = None
            continue
        # columns of predict_proba follow model.classes_, which may miss a class absent from train
        probs = np.zeros((len(indices), cache.num_classes))
        probs[:, model.classes_] = model.predict_proba(clip_statistics(cache, indices))
        labels = cache.labels[indices]
        tracks = cache.track_ids[indices]
        result[split] = {
            "clips": int(len(indices)),
            "tracks": int(len(np.unique(tracks))),
            "clip_acc": float(np.mean(np.argmax(probs, axis=1) == labels)),
            "track_acc": float(track_accuracy(probs, labels, tracks)),
        }
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result
