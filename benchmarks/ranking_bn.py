"""Ranking study of the scoring batch-norm modes: Kendall tau between shared-weight and stand-alone
accuracy of n random architectures, with controller_bn = eval, batch and recalibrate side by side.

Per seed: one random search with weight sharing (uniform architectures, so the shared weights do not
depend on the scoring mode), n distinct random architectures trained from scratch (the ground truth),
then the same n scored with the same shared weights in each mode on the whole validation split. With
``--repeat`` every architecture is trained a second time with another training seed, which gives the
ground truth's own seed-to-seed tau (how far the stand-alone ranking itself can be trusted).

    python benchmarks/ranking_bn.py --data demo_audio --seeds 0,1 --n 10 --out runs/ranking_bn

Prints one row per seed and mode and the mean ± sample std over seeds; writes ``OUT/ranking_bn.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from musicnas import runtime
from musicnas.baselines.budget import parse_budget
from musicnas.baselines.harness import Bench, _retrain, make_space, search_config
from musicnas.baselines.ranking import kendall_tau
from musicnas.baselines.shared_scoring import shared_weight_accuracies
from musicnas.baselines.table import mean_std
from musicnas.data.cache import open_data
from musicnas.runtime import derive_seed, make_generator
from musicnas.search.random_search import run_uniform_search, sample_distinct_archs
from musicnas.search.scoring import BN_MODES
from musicnas.spaces import load_arch
from musicnas.utils.io import atomic_write_json

REPEAT_SEED_OFFSET = 1000  # training seed of the ground truth's second training


def standalone(bench, archs, seed, out: Path, epochs: int) -> list[float]:
    """Validation clip accuracy of each architecture trained from scratch; a finished training of the
    same architecture and epochs (a stopped study run again) is read back instead of redone."""
    accs = []
    for i, arch in enumerate(archs):
        done = out / f"{i:02d}" / "summary.json"
        if done.is_file():
            summary = json.loads(done.read_text(encoding="utf-8"))
            if (
                load_arch(done.parent / "arch.json").key() == arch.key()
                and summary.get("epochs_run") == epochs
            ):
                accs.append(float(summary["val"]["clip_accuracy"]))
                continue
        summary, _ = _retrain(bench, arch, seed, out / f"{i:02d}", epochs)
        accs.append(float(summary["val"]["clip_accuracy"]))
    return accs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="audio folder, manifest or prepared cache")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--n", type=int, default=10, help="random architectures per seed")
    parser.add_argument("--budget", default="reduced", help="benchmark budget (search epochs, space size)")
    parser.add_argument("--epochs-each", type=int, default=2, help="stand-alone epochs per architecture")
    parser.add_argument(
        "--repeat", action="store_true", help="train each architecture twice (ground-truth tau)"
    )
    parser.add_argument("--out", default="runs/ranking_bn", help="output folder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()

    rt = runtime.setup("cpu", threads=args.threads)
    data = open_data(args.data)
    out = Path(args.out)
    bench = Bench(data=data, budget=parse_budget(args.budget), rt=rt, out=out, data_path=str(args.data))
    rows, per_seed = [], []
    t0 = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        seed_dir = out / f"seed_{seed}"
        ws_run = seed_dir / "random_ws"
        if not (ws_run / "arch.json").is_file():
            run_uniform_search(search_config(bench, seed), data, ws_run, rt)
        archs = sample_distinct_archs(
            make_space(bench.budget), args.n, make_generator(derive_seed(seed, "benchmark.random_archs"))
        )
        truth = standalone(bench, archs, seed, seed_dir / "standalone", args.epochs_each)
        record = {"seed": seed, "n": len(archs), "standalone": truth, "modes": {}}
        if args.repeat:
            again = standalone(
                bench, archs, seed + REPEAT_SEED_OFFSET, seed_dir / "standalone_b", args.epochs_each
            )
            record["standalone_repeat"] = again
            record["ground_truth_tau"], _ = kendall_tau(truth, again)
        for mode in BN_MODES:
            shared = shared_weight_accuracies(ws_run, archs, data, rt, bn=mode)
            tau, p = kendall_tau(shared, truth)
            record["modes"][mode] = {"shared": shared, "kendall_tau": tau, "p_value": p}
            rows.append((seed, mode, tau, p, float(np.mean(shared))))
        per_seed.append(record)
    summary = {mode: mean_std([r["modes"][mode]["kendall_tau"] for r in per_seed]) for mode in BN_MODES}
    report = {
        "args": vars(args),
        "per_seed": per_seed,
        "summary": summary,
        "wall_time": time.perf_counter() - t0,
    }
    if args.repeat:
        report["ground_truth_tau"] = mean_std([r["ground_truth_tau"] for r in per_seed])
    atomic_write_json(out / "ranking_bn.json", report)
    print("seed  mode         tau     p      mean shared acc")
    for seed, mode, tau, p, mean_acc in rows:
        print(f"{seed:<5d} {mode:<12s} {tau if tau is not None else float('nan'):+.3f}  "
              f"{p if p is not None else float('nan'):.3f}  {mean_acc:.3f}")  # fmt: skip
    for mode, (m, s) in summary.items():
        print(f"mean over seeds, {mode}: tau {m:+.3f} ± {s if s is not None else float('nan'):.3f}")
    if args.repeat:
        print("ground truth seed-to-seed tau:", json.dumps(report["ground_truth_tau"]))
    print(f"wall time {report['wall_time']:.0f} s")


if __name__ == "__main__":
    main()
