"""The floor every searched network must beat: logistic regression on log-mel statistics.

Two fits, both without any temporal structure:
- per clip: each clip becomes the mean and the standard deviation over time of every mel band
  (2 * n_mels numbers); track accuracy averages a track's clip probabilities;
- per file (the figure that counts for a user, who predicts files): each audio file becomes the mean,
  the standard deviation and the mean absolute frame-to-frame difference of every band over all of its
  frames (3 * n_mels numbers); the regularisation strength is chosen on the val files.
Features are standardised on the train split and a multinomial logistic regression is fitted there.
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


def file_statistics(cache, indices: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-file features of the clips ``indices``: ``(stats [F, 3 * n_mels], labels [F])``, files in
    order of first appearance. Each band's mean and std are taken over every frame of the file's
    clips, and mean |delta| over consecutive frames within each clip (clip edges are not frames apart)."""
    n_mels = cache.config.n_mels
    indices = np.asarray(indices)
    paths = [cache.paths[i] for i in indices]
    order = {p: k for k, p in enumerate(dict.fromkeys(paths))}
    file_of = np.array([order[p] for p in paths], dtype=np.int64)
    n_files = len(order)
    s1 = np.zeros((n_files, n_mels))
    s2 = np.zeros((n_files, n_mels))
    sd = np.zeros((n_files, n_mels))
    frames = np.zeros(n_files)
    deltas = np.zeros(n_files)
    labels = np.full(n_files, -1, dtype=np.int64)
    for start in range(0, len(indices), batch_size):
        x, y = cache.get_batch(indices[start : start + batch_size], normalize=False)
        x = x[:, 0].double().numpy()  # [B, n_mels, frames]
        f = file_of[start : start + len(x)]
        np.add.at(s1, f, x.sum(axis=2))
        np.add.at(s2, f, (x**2).sum(axis=2))
        np.add.at(sd, f, np.abs(np.diff(x, axis=2)).sum(axis=2))
        np.add.at(frames, f, x.shape[2])
        np.add.at(deltas, f, x.shape[2] - 1)
        labels[f] = np.asarray(y)
    mean = s1 / frames[:, None]
    std = np.sqrt(np.maximum(s2 / frames[:, None] - mean**2, 0.0))
    mad = sd / np.maximum(deltas, 1)[:, None]
    return np.concatenate([mean, std, mad], axis=1), labels


# regularisation strengths tried for the per-file floor, chosen on val file accuracy (ties: stronger)
FILE_C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _fit(features: np.ndarray, labels: np.ndarray, C: float, seed: int, max_iter: int):
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    return model.fit(features, labels)


def _probs(model, features: np.ndarray, num_classes: int) -> np.ndarray:
    # columns of predict_proba follow model.classes_, which may miss a class absent from train
    probs = np.zeros((len(features), num_classes))
    probs[:, model.classes_] = model.predict_proba(features)
    return probs


def file_floor(cache, seed: int = 0, max_iter: int = 2000) -> dict:
    """The per-file floor: ``{"C", "features", "train"/"val"/"test": {"files", "file_acc"} | None}``."""
    idx = {s: cache.split_indices(s) for s in SPLITS}
    feats = {s: file_statistics(cache, idx[s]) if len(idx[s]) else None for s in SPLITS}
    x_train, y_train = feats["train"]
    best_acc, C, model = -1.0, 1.0, None
    for candidate in FILE_C_GRID if feats["val"] is not None else (1.0,):
        fitted = _fit(x_train, y_train, candidate, seed, max_iter)
        acc = 0.0
        if feats["val"] is not None:
            x_val, y_val = feats["val"]
            acc = float(np.mean(_probs(fitted, x_val, cache.num_classes).argmax(1) == y_val))
        if acc > best_acc:
            best_acc, C, model = acc, candidate, fitted
    out: dict = {"C": C, "features": 3 * cache.config.n_mels}
    for split in SPLITS:
        if feats[split] is None:
            out[split] = None
            continue
        x, y = feats[split]
        pred = _probs(model, x, cache.num_classes).argmax(1)
        out[split] = {"files": int(len(y)), "file_acc": float(np.mean(pred == y))}
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
    "clip_acc", "track_acc", "files", "file_acc"} (None for an empty split), "file_floor", "seconds"}``;
    ``file_acc`` comes from the per-file fit (:func:`file_floor`), the others from the per-clip one."""
    start = time.perf_counter()
    idx = {s: cache.split_indices(s) for s in SPLITS}
    if len(idx["train"]) == 0:
        raise MusicnasError(
            "the feature cache has no train clips; prepare it with a larger dataset or smaller val/test fractions"
        )
    y_train = cache.labels[idx["train"]]
    if len(np.unique(y_train)) < 2:
        raise MusicnasError("the train split holds only one class; logistic regression needs at least two")
    model = _fit(clip_statistics(cache, idx["train"]), y_train, C, seed, max_iter)
    per_file = file_floor(cache, seed=seed, max_iter=max_iter)
    result: dict = {
        "method": "logmel_stats_logreg",
        "features": 2 * cache.config.n_mels,
        "classes": list(cache.classes),
        "chance": 1.0 / cache.num_classes,
        "C": C,
        "file_floor": {"C": per_file["C"], "features": per_file["features"]},
    }
    for split in SPLITS:
        indices = idx[split]
        if len(indices) == 0:
            result[split] = None
            continue
        probs = _probs(model, clip_statistics(cache, indices), cache.num_classes)
        labels = cache.labels[indices]
        tracks = cache.track_ids[indices]
        result[split] = {
            "clips": int(len(indices)),
            "tracks": int(len(np.unique(tracks))),
            "clip_acc": float(np.mean(np.argmax(probs, axis=1) == labels)),
            "track_acc": float(track_accuracy(probs, labels, tracks)),
            **per_file[split],
        }
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result
