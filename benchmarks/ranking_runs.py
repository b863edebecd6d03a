"""Does weight sharing rank architectures like training does, on finished runs?

Scores the architecture of every given training run (``musicnas train`` output folders: ``arch.json``
and ``summary.json``) with the shared weights of every given search run (``musicnas search`` output
folders), on the whole validation split, in each batch-norm scoring mode, and prints Kendall's tau-b
and Spearman's rho between the shared-weight accuracy and the trained networks' validation clip
accuracy (the quantity the search scores) and test file accuracy (the one users get), for the shared-weight accuracy and for minus the shared-weight
mean cross-entropy. Trainings of the
same architecture (several seeds) are averaged into one point; when every architecture has at least two
trainings, the ground truth's own Kendall tau (first training against second) is printed too: the ceiling
any shared-weight score can be shown to reach against it. A training's architecture is scored with
the same decisions in the search network, so a network trained wider than the search is allowed.

    python benchmarks/ranking_runs.py --search runs/rm12-search-s0 runs/rm12-search-s1 \
        --trained runs/gt/* runs/rm12-train-s* --modes eval,recalibrate --out runs/ranking_runs.json

Costs forward passes only (the trainings already exist): about a second per architecture and mode.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from musicnas import runtime
from musicnas.baselines.ranking import kendall_tau
from musicnas.baselines.shared_scoring import shared_weight_scores
from musicnas.baselines.table import mean_std
from musicnas.data.cache import open_data
from musicnas.runtime import MusicnasError
from musicnas.search.enas import load_run_config, search_space
from musicnas.search.scoring import BN_MODES
from musicnas.spaces import get_space_module, load_arch
from musicnas.utils.io import atomic_write_json, read_json


def last_epoch_accuracies(run: Path, rt) -> tuple[float, float]:
    """(val clip, test file) accuracy of a training's last-epoch weights (``checkpoints/last.pt``),
    whichever epoch its bundle kept: the ground truth ``musicnas train --select last`` gives."""
    import musicnas
    from musicnas.training.evaluate import evaluate_split
    from musicnas.utils.io import load_checkpoint

    clf = musicnas.load(run, device="cpu")
    clf.model.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    clf.model.eval()
    summary = read_json(run / "summary.json", "training summary")
    data = open_data(summary["data"]["root"])
    val = evaluate_split(clf.model, data, "val", rt)["clip_accuracy"]
    return float(val), float(evaluate_split(clf.model, data, "test", rt)["file_accuracy"])


def trained_points(run_dirs: list[Path], weights: str = "kept", rt=None) -> list[dict]:
    """One point per distinct architecture: its decisions and its trainings' mean accuracies, of the
    weights each bundle kept (``kept``, from ``summary.json``) or of the last epoch's (``last``)."""
    points: dict[str, dict] = {}
    for run in run_dirs:
        if not (run / "summary.json").is_file() or not (run / "arch.json").is_file():
            print(f"skipping {run}: not a finished training run (no summary.json / arch.json)")
            continue
        arch = load_arch(run / "arch.json")
        summary = read_json(run / "summary.json", "training summary")
        if weights == "last":
            val_clip, test_file = last_epoch_accuracies(run, rt)
        else:
            val_clip, test_file = summary["val"]["clip_accuracy"], summary["test"]["file_accuracy"]
        key = json.dumps(arch.to_flat())
        point = points.setdefault(key, {"arch": arch, "runs": [], "val_clip": [], "test_file": []})
        point["runs"].append(str(run))
        point["val_clip"].append(float(val_clip))
        point["test_file"].append(float(test_file))
    return list(points.values())


def correlations(shared: list[float], truth: list[float]) -> dict:
    tau, p = kendall_tau(shared, truth)
    rho = stats.spearmanr(shared, truth).statistic if len(shared) > 2 else float("nan")
    return {"tau": tau, "p": p, "rho": None if np.isnan(rho) else float(rho)}


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:+.2f}" + ("" if std is None else f" ± {std:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", nargs="+", required=True, help="search run folders (shared weights)")
    parser.add_argument("--trained", nargs="+", required=True, help="training run folders (ground truth)")
    parser.add_argument(
        "--modes", default="eval,recalibrate", help=f"BN scoring modes, of {', '.join(BN_MODES)}"
    )
    parser.add_argument(
        "--weights",
        choices=("kept", "last"),
        default="kept",
        help="ground truth from the weights each training kept (summary.json) or from its last epoch's",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=None, help="write every score and correlation to this JSON file")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in BN_MODES]
    if bad:
        raise SystemExit(f"unknown BN mode(s) {bad}: choose from {', '.join(BN_MODES)}")

    rt = runtime.setup("cpu", threads=args.threads)
    points = trained_points([Path(p) for p in args.trained], args.weights, rt)
    if len(points) < 3:
        raise SystemExit(f"need at least 3 distinct trained architectures, got {len(points)}")
    val_truth = [float(np.mean(p["val_clip"])) for p in points]
    test_truth = [float(np.mean(p["test_file"])) for p in points]
    result = {"points": [{"runs": p["runs"], "val_clip": v, "test_file": t}
                         for p, v, t in zip(points, val_truth, test_truth, strict=True)],  # fmt: skip
              "searches": {}}  # fmt: skip
    print(f"{len(points)} trained architectures; truth: val clip accuracy and test file accuracy "
          f"({args.weights} weights)")  # fmt: skip
    print(f"{'search run':32s} {'score':18s} {'tau(val)':>9s} {'p':>6s} {'rho(val)':>9s} {'tau(test)':>10s}")
    for run in args.search:
        config = load_run_config(run)
        space = search_space(config)
        module = get_space_module(config.space)
        try:
            archs = [module.Arch.from_flat(p["arch"].to_flat(), space) for p in points]
        except Exception as exc:  # decisions that do not fit this search space
            raise MusicnasError(f"a trained architecture does not fit the space of {run}: {exc}") from exc
        data = open_data(config.data, config.cache_dir)
        result["searches"][run] = {}
        for mode in modes:
            scores = shared_weight_scores(run, archs, data, rt, bn=mode)
            # the shared-weight score as accuracy, and as minus the mean cross-entropy (finer grained)
            for metric, shared in (("acc", [a for a, _ in scores]), ("-loss", [-loss for _, loss in scores])):
                val, test = correlations(shared, val_truth), correlations(shared, test_truth)
                result["searches"][run][f"{mode} {metric}"] = {
                    "shared": shared,
                    "val_clip": val,
                    "test_file": test,
                }
                p = "n/a" if val["p"] is None else f"{val['p']:.2f}"
                print(f"{run:32s} {mode + ' ' + metric:18s} {_pm(val['tau'], None):>9s} {p:>6s} "
                      f"{_pm(val['rho'], None):>9s} {_pm(test['tau'], None):>10s}")  # fmt: skip
    for score in next(iter(result["searches"].values())):
        line = []
        for truth in ("val_clip", "test_file"):
            taus = [s[score][truth]["tau"] for s in result["searches"].values()]
            m, sd = mean_std(taus)
            line.append(f"tau({truth}) {_pm(m, sd)}")
        print(f"mean ± std over {len(result['searches'])} search runs, {score}: " + ", ".join(line))
    if all(len(p["test_file"]) >= 2 for p in points):
        # how well the ground truth ranks itself: the first training of each architecture against its second
        # (in --trained order); a shared-weight score cannot be shown to rank better than this
        first, second = [p["test_file"][0] for p in points], [p["test_file"][1] for p in points]
        self_tau = correlations(first, second)
        spread = [float(np.std(p["test_file"], ddof=1)) for p in points]
        print(f"ground truth against itself (1st vs 2nd training of each architecture, test files): "
              f"tau {_pm(self_tau['tau'], None)}, rho {_pm(self_tau['rho'], None)}; "
              f"per-architecture std over trainings {np.mean(spread):.3f} on average, "
              f"between-architecture std of the means {np.std(test_truth, ddof=1):.3f}")  # fmt: skip
        result["truth_self"] = {**self_tau, "mean_within_std": float(np.mean(spread)),
                                "between_std": float(np.std(test_truth, ddof=1))}  # fmt: skip
    if len(points) > 2:
        gt = correlations(val_truth, test_truth)
        print(f"val clips vs test files over the trained networks: tau {_pm(gt['tau'], None)}")
        result["val_vs_test"] = gt
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
