"""How the clips of one file are combined into the file's label: the same trained bundles, four rules.

``musicnas predict`` and the per-file metrics average the clips' logits. This script scores that rule
against averaging log-probabilities, averaging probabilities and a majority vote of the clips, on the
bundles given (e.g. one recipe row's seeds), and prints each rule's per-file accuracy as mean ± std
over the bundles::

    .venv/bin/python benchmarks/aggregation.py --data REALMUSIC/manifest.csv --cache CACHE \\
        runs/recipe/NAME/seed0 runs/recipe/NAME/seed1 runs/recipe/NAME/seed2
"""

from __future__ import annotations

import statistics
from pathlib import Path

import click
import numpy as np


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def file_predictions(logits: np.ndarray, file_ids: np.ndarray, rule: str) -> dict[int, int]:
    """The predicted class of each file under ``rule`` (logits | log_probs | probs | vote)."""
    if rule == "logits":
        scores = logits
    elif rule == "log_probs":
        scores = _log_softmax(logits)
    elif rule == "probs":
        scores = np.exp(_log_softmax(logits))
    elif rule == "vote":
        scores = np.eye(logits.shape[1])[logits.argmax(1)] + 1e-6 * _log_softmax(logits)  # ties: confidence
    else:
        raise ValueError(rule)
    out = {}
    for f in np.unique(file_ids):
        out[int(f)] = int(scores[file_ids == f].mean(0).argmax())
    return out


RULES = ("logits", "log_probs", "probs", "vote")


@click.command()
@click.option("--data", required=True, type=click.Path(path_type=Path))
@click.option("--cache", type=click.Path(path_type=Path), default=Path(".musicnas-cache"), show_default=True)
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def main(data, cache, split, bundles):
    """Per-file accuracy of each clip-aggregation rule, mean ± std over BUNDLES."""
    from musicnas import load
    from musicnas.data.cache import open_data
    from musicnas.runtime import setup
    from musicnas.training.evaluate import file_ids_of, label_map_for, predict_logits

    rt = setup("cpu", 1)
    acc = {r: [] for r in RULES}
    for path in bundles:
        clf = load(path)
        ds = open_data(data, cache, config=clf.feature_config)
        idx = ds.split_indices(split)
        logits = predict_logits(clf.model, ds, idx, rt, 128, clf.mean.numpy(), clf.std.numpy())
        labels = np.asarray(ds.labels)[idx]
        mapping = label_map_for(clf.classes, list(ds.classes))
        if mapping is not None:
            labels = mapping[labels]
        fids = file_ids_of([ds.paths[i] for i in idx])
        truth = {int(f): int(labels[fids == f][0]) for f in np.unique(fids)}
        for rule in RULES:
            pred = file_predictions(logits, fids, rule)
            acc[rule].append(float(np.mean([pred[f] == truth[f] for f in truth])))
        print(f"{path}: " + ", ".join(f"{r} {100 * acc[r][-1]:.1f}" for r in RULES), flush=True)
    print(f"\n| rule | {split} files (mean ± std over {len(bundles)} bundles) |\n|---|---|")
    for rule in RULES:
        v = acc[rule]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {rule} | {100 * statistics.fmean(v):.1f} ± {100 * sd:.1f} |")


if __name__ == "__main__":
    main()
