"""Is a drift-corrected latency more repeatable than the raw one? Side by side in one run.

Each architecture (ARCH.json files, or random ones of the table's space) is measured ``--repeats`` times,
each time interleaved with the latency table's reference networks (``musicnas latency --drift-correct``'s
protocol: 200 runs in 10 rounds, 5 references nearest its predicted latency), and three figures are kept
per repeat: the raw latency (fastest run), the corrected latency from the fastest runs (raw / median over
references of their fastest run now / when the table was built: the first version of the correction)
and the corrected latency paired by round (median over rounds of the network's fastest run in the round
over that round's drift: what ``--drift-correct`` and the search record). Prints, per architecture and
figure, the spread over repeats (max / min - 1) and the mean against the table's prediction; writes
``OUT`` (JSON). Example::

    python benchmarks/latency_drift.py --table T.json --space A.json --classes 8 --arch A.json --repeats 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from musicnas.latency.measure import deployed_from_arch, load_average, measure_many, paired_rounds
from musicnas.latency.table import (
    DEFAULT_TABLE_ROUNDS,
    DEFAULT_TABLE_RUNS,
    load_model,
    random_archs,
    reference_archs,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="latency table file")
    parser.add_argument(
        "--space", required=True, help="an ARCH.json whose space (and --classes) picks the table"
    )
    parser.add_argument("--classes", type=int, required=True, help="outputs of the classifier head")
    parser.add_argument(
        "--arch", action="append", default=[], help="architecture JSON to measure (repeatable)"
    )
    parser.add_argument("--random", type=int, default=0, help="also this many random architectures (seed 5)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="runs/latency_drift.json")
    args = parser.parse_args()

    from musicnas.data.features import FeatureConfig
    from musicnas.spaces import load_arch

    space = load_arch(Path(args.space)).space
    config = FeatureConfig()
    model = load_model(space, tuple(config.input_shape), args.classes, path=args.table)
    archs = [load_arch(Path(a)) for a in args.arch] + random_archs(space, args.random, 5)
    rows = []
    for i, arch in enumerate(archs):
        net = deployed_from_arch(arch, args.classes, config)
        ref_archs, known = reference_archs(model, model.predict(arch))
        refs = [deployed_from_arch(a, args.classes, config) for a in ref_archs]
        repeats = []
        for r in range(args.repeats):
            load = load_average()
            found, times = measure_many([net, *refs], model.backend, model.threads, runs=DEFAULT_TABLE_RUNS,
                                        rounds=DEFAULT_TABLE_ROUNDS, seed=r)  # fmt: skip
            raw = found[0].latency_ms
            drift = float(np.median([m.latency_ms / k for m, k in zip(found[1:], known, strict=True)]))
            paired = float(np.median(paired_rounds(times, known, DEFAULT_TABLE_ROUNDS)[0]))
            repeats.append({"raw_ms": raw, "drift_factor": drift, "corrected_ms": raw / drift,
                            "paired_ms": paired, "load_average": load})  # fmt: skip
        rows.append({"arch": i, "predicted_ms": model.predict(arch), "repeats": repeats})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"table": model.describe(), "rows": rows}, indent=1))
    print("| arch | predicted ms | figure | per repeat (ms) | spread over repeats | mean vs predicted |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        for key in ("raw_ms", "corrected_ms", "paired_ms"):
            v = np.array([rep[key] for rep in row["repeats"]])
            print(f"| {row['arch']} | {row['predicted_ms']:.3f} | {key} | {', '.join(f'{x:.3f}' for x in v)} | "
                  f"{v.max() / v.min() - 1:.1%} | {v.mean() / row['predicted_ms'] - 1:+.1%} |")  # fmt: skip
    loads = [rep["load_average"][0] for row in rows for rep in row["repeats"] if rep["load_average"]]
    print(f"\n1-minute load average while measuring: {min(loads):.2f}-{max(loads):.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
