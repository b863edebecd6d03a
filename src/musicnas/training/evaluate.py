"""Clip-, file- and track-level metrics of a classifier on a split of a feature cache.

A file (what a user hands to ``musicnas predict``) and a track group (the unit splits keep together) are
each classified by the mean of their clips' logits (enas-reference.md section 6), as ``predict`` does.
Per-file accuracy is the figure that counts for a user; where every file is its own group, file and
track figures coincide. Clip accuracy, file and track accuracy, macro-F1, per-class precision/recall and
the confusion matrices come from scikit-learn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from musicnas.runtime import MusicnasError, Runtime
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)


def aggregate_tracks(
    logits: np.ndarray, labels: np.ndarray, track_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean clip logits per track. Returns (track_ids [T], track_logits [T, K], track_labels [T]).

    Every clip of a track must carry the same label; a track with mixed labels means the cache is
    inconsistent and is an error rather than a silent majority vote."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    track_ids = np.asarray(track_ids)
    uniq, inverse = np.unique(track_ids, return_inverse=True)
    sums = np.zeros((uniq.size, logits.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, logits)
    counts = np.bincount(inverse, minlength=uniq.size).astype(np.float64)
    track_labels = np.full(uniq.size, -1, dtype=np.int64)
    track_labels[inverse] = labels
    if np.any(track_labels[inverse] != labels):
        raise MusicnasError("clips of one track carry different labels; re-prepare the data cache")
    return uniq, sums / counts[:, None], track_labels


def file_ids_of(paths) -> np.ndarray:
    """One integer id per distinct audio file path (clips of one file share it)."""
    _, ids = np.unique(np.asarray(paths, dtype=object).astype(str), return_inverse=True)
    return ids.astype(np.int64)


def compute_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    track_ids: np.ndarray,
    classes: list[str],
    file_ids: np.ndarray | None = None,
) -> dict:
    """Every metric `musicnas evaluate` reports, as plain JSON-ready Python values.

    ``file_ids`` (one per clip, e.g. :func:`file_ids_of` of the clips' paths) adds the per-file figures
    ``files``, ``file_accuracy``, ``file_macro_f1`` and ``file_confusion_matrix``; without them the files
    are taken to be the tracks."""
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.shape[0] == 0:
        raise MusicnasError("the split holds no clips to evaluate; choose another --split")
    k = len(classes)
    all_labels = list(range(k))
    pred = logits.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=all_labels, zero_division=0
    )
    tids, tlogits, tlabels = aggregate_tracks(logits, labels, track_ids)
    tpred = tlogits.argmax(axis=1)
    if file_ids is None:
        fids, fpred, flabels = tids, tpred, tlabels
    else:
        fids, flogits, flabels = aggregate_tracks(logits, labels, np.asarray(file_ids))
        fpred = flogits.argmax(axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        "clips": int(labels.size),
        "tracks": int(tids.size),
        "clip_accuracy": float(accuracy_score(labels, pred)),
        "files": int(fids.size),
        "file_accuracy": float(accuracy_score(flabels, fpred)),
        "track_accuracy": float(accuracy_score(tlabels, tpred)),
        "macro_f1": float(f1_score(labels, pred, labels=all_labels, average="macro", zero_division=0)),
        "file_macro_f1": float(f1_score(flabels, fpred, labels=all_labels, average="macro", zero_division=0)),
        "track_macro_f1": float(
            f1_score(tlabels, tpred, labels=all_labels, average="macro", zero_division=0)
        ),
        "loss": float(-log_probs[np.arange(labels.size), labels].mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "classes": list(classes),
        # rows: true class, columns: predicted class (scikit-learn's convention)
        "confusion_matrix": confusion_matrix(labels, pred, labels=all_labels).tolist(),
        "file_confusion_matrix": confusion_matrix(flabels, fpred, labels=all_labels).tolist(),
        "track_confusion_matrix": confusion_matrix(tlabels, tpred, labels=all_labels).tolist(),
    }


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    data,
    indices: np.ndarray,
    rt: Runtime,
    batch_size: int = 128,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Logits [N, K] of ``model`` on cache clips ``indices``, in eval mode, without augmentation.

    With ``mean``/``std`` the raw features are normalised with those (a bundle's own statistics, for a
    cache prepared from other data); without them the cache normalises with its train-split statistics."""
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(indices), batch_size)
    if show_progress:
        starts = progress(starts, desc="evaluate", unit="batch")
    m = s = None
    if mean is not None:
        m = torch.as_tensor(np.asarray(mean, dtype=np.float32)).view(1, 1, -1, 1)
        s = torch.as_tensor(np.asarray(std, dtype=np.float32)).view(1, 1, -1, 1)
    for start in starts:
        idx = np.asarray(indices[start : start + batch_size])
        if m is None:
            x, _ = data.get_batch(idx, normalize=True)
        else:
            x, _ = data.get_batch(idx, normalize=False)
            x = (x - m) / s
        with rt.autocast():
            logits = model(rt.to_device(x))  # channels_last is safe without backward
        out.append(logits.float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def evaluate_split(
    model: torch.nn.Module,
    data,
    split: str,
    rt: Runtime,
    classes: list[str] | None = None,
    batch_size: int = 128,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    label_map: np.ndarray | None = None,
    show_progress: bool = False,
) -> dict:
    """Metrics of ``model`` on one split of ``data``.

    ``label_map`` maps the cache's label ids to the model's class ids (a bundle evaluated on a cache
    whose class list is ordered differently)."""
    indices = data.split_indices(split)
    if len(indices) == 0:
        raise MusicnasError(f"split {split!r} of {data.root} holds no clips; choose train, val or test")
    logits = predict_logits(model, data, indices, rt, batch_size, mean, std, show_progress)
    labels = np.asarray(data.labels)[indices]
    if label_map is not None:
        labels = label_map[labels]
    metrics = compute_metrics(
        logits,
        labels,
        np.asarray(data.track_ids)[indices],
        classes or list(data.classes),
        file_ids=file_ids_of([data.paths[i] for i in indices]),
    )
    metrics["split"] = split
    return metrics


def plot_confusion(matrix, classes: list[str], path: str | Path, title: str = "Confusion matrix") -> None:
    """Writes the confusion matrix as a PNG (rows true, columns predicted; counts in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from musicnas.utils.io import atomic_path

    cm = np.asarray(matrix)
    k = len(classes)
    size = max(4.0, 0.5 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > threshold else "black",
            )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def label_map_for(model_classes: list[str], data_classes: list[str]) -> np.ndarray | None:
    """Maps the cache's label ids onto the model's class ids by name (None when they already agree)."""
    if list(model_classes) == list(data_classes):
        return None
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        raise MusicnasError(
            f"the data has classes the model does not know: {', '.join(unknown)} "
            f"(model classes: {', '.join(model_classes)}); evaluate on data with the same classes"
        )
    return np.array([index[c] for c in data_classes], dtype=np.int64)


def evaluate_bundle(
    classifier,
    data,
    split: str = "test",
    rt: Runtime | None = None,
    batch_size: int = 128,
    write: bool = True,
    show_progress: bool = False,
) -> dict:
    """Evaluates a loaded bundle (:func:`musicnas.load`) on ``data`` with the bundle's own feature
    options, normalisation and class names; with ``write`` stores ``evaluation.json`` and
    ``confusion.png`` in the bundle folder."""
    from musicnas.utils.io import atomic_write_json

    if data.config.key() != classifier.feature_config.key():
        raise MusicnasError(
            f"the data at {data.root} was prepared with other feature options than the model was trained on; "
            "pass the audio folder (not a prepared cache) so it is prepared with the model's options"
        )
    rt = rt or Runtime(device=classifier.device, threads=torch.get_num_threads())
    metrics = evaluate_split(
        classifier.model,
        data,
        split,
        rt,
        classes=classifier.classes,
        batch_size=batch_size,
        mean=classifier.mean.numpy(),
        std=classifier.std.numpy(),
        label_map=label_map_for(classifier.classes, list(data.classes)),
        show_progress=show_progress,
    )
    metrics["data"] = str(data.root)
    metrics["model"] = str(classifier.path)
    if write:
        atomic_write_json(Path(classifier.path) / "evaluation.json", metrics)
        plot_confusion(
            metrics["confusion_matrix"],
            classifier.classes,
            Path(classifier.path) / "confusion.png",
            title=f"{split} clips: accuracy {metrics['clip_accuracy']:.3f}",
        )
    return metrics
