"""Does one latency-targeted search land within ±10% of its target? And is it better than random?

For targets at the 25th, 50th and 75th percentile of the space's latency (predicted by this machine's
latency table for a pool of uniformly drawn architectures), side by side in one run:

* **ENAS**: one search per target (``reward`` tunas by default, ``cost_metric`` latency), the derived
  architecture's latency **measured** (onnxruntime by default, batch 1, 1 thread) against the target,
  then retrained from scratch for ``retrain_epochs``;
* **random**: uniformly drawn architectures whose *measured* latency is within ±10% of the target (the
  table pre-selects, a measurement confirms), ``random_k`` of them each trained from scratch for
  ``search_epochs / random_k`` epochs (the search's child-step budget, as in ``musicnas benchmark``), the
  best by validation accuracy retrained like ENAS's.

Prints the table (markdown) and writes ``OUT/latency_targets.json``. CPU-heavy at real budgets: the
docs/latency.md figures come from ``--budget reduced`` on the demo data. A tiny smoke run::

    python benchmarks/latency_targets.py --data demo_audio --budget tiny --out /tmp/lt --pool 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from musicnas import runtime
from musicnas.baselines.budget import parse_budget
from musicnas.baselines.harness import Bench, make_space, search_config, train_config
from musicnas.latency.measure import deployed_from_arch
from musicnas.latency.table import measure_against_table, model_for_search, random_archs
from musicnas.utils.io import atomic_write_json

WITHIN = 0.10


def measure_ms(arch, data, model) -> dict:
    """Raw and drift-corrected latency of ``arch``, measured interleaved with the table's references."""
    net = deployed_from_arch(arch, data.num_classes, data.config, int(data.input_shape[0]))
    found = measure_against_table(model, net)
    return {"measured_ms": found.measured.latency_ms, "drift_factor": found.drift_factor,
            "corrected_ms": found.corrected_ms}  # fmt: skip


def retrain(bench: Bench, arch, seed: int, out: Path, epochs: int) -> dict:
    from musicnas.retrain import train_arch

    return train_arch(
        arch, bench.data, out, train_config(bench, epochs), bench.rt, seed=seed, show_progress=False
    )


def child_steps(run_dir: Path) -> int:
    rows = (
        json.loads(line)
        for line in (run_dir / "metrics_steps.jsonl").read_text().splitlines()
        if line.strip()
    )
    return sum(1 for r in rows if r.get("phase") == "child")


def run_enas(bench: Bench, target: float, args, table_path: Path, out: Path) -> dict:
    from musicnas.search.enas import run_search
    from musicnas.spaces import load_arch

    config = search_config(bench, args.seed)
    config.reward, config.cost_metric, config.cost_target = args.reward, "latency", float(target)
    config.latency_backend, config.latency_threads, config.latency_table = (
        args.backend,
        args.threads,
        str(table_path),
    )
    t0 = time.perf_counter()
    result = run_search(config.validate(), bench.data, out / "search", bench.rt)
    seconds = time.perf_counter() - t0
    arch = load_arch(result["arch"])
    summary = retrain(bench, arch, args.seed, out / "model", bench.budget.retrain_epochs)
    lat = result["latency"]
    return {
        "measured_ms": lat["measured_ms"], "predicted_ms": lat["predicted_ms"], "error": lat["measured_error"],
        "within": abs(lat["measured_error"]) <= WITHIN, "drift_factor": lat["drift_factor"],
        "corrected_ms": lat["corrected_ms"], "corrected_error": lat["corrected_error"],
        "corrected_within": abs(lat["corrected_error"]) <= WITHIN, "sessions": lat["drift"]["sessions"],
        "val_acc": summary["val"]["clip_accuracy"],
        "test_acc": (summary.get("test") or {}).get("clip_accuracy"), "search_steps": child_steps(out / "search"),
        "search_seconds": seconds, "arch": arch.to_json(),
    }  # fmt: skip


def run_random(bench: Bench, target: float, pool: list, model, args, out: Path) -> dict:
    b = bench.budget
    near = [a for a in pool if abs(model.predict(a) / target - 1.0) <= WITHIN]
    # a seeded order, so which near-target architectures are tried does not follow the pool's order
    near = [near[i] for i in np.random.default_rng([args.seed, 41]).permutation(len(near))]
    chosen, measured = [], []
    for arch in near:  # the table pre-selects; a measurement (drift-corrected, as ENAS's) confirms
        ms = measure_ms(arch, bench.data, model)
        if abs(ms["corrected_ms"] / target - 1.0) <= WITHIN:
            chosen.append(arch)
            measured.append(ms)
        if len(chosen) == b.random_k:
            break
    if not chosen:
        return {"found": 0, "pool_near": len(near)}
    candidates, steps = [], 0
    for i, arch in enumerate(chosen):
        summary = retrain(bench, arch, args.seed, out / "candidates" / f"{i:02d}", b.random_epochs)
        steps += summary["epochs_run"] * bench.steps_per_epoch()
        candidates.append(summary["val"]["clip_accuracy"])
    best = max(range(len(chosen)), key=lambda i: (candidates[i], -i))
    summary = retrain(bench, chosen[best], args.seed, out / "model", b.retrain_epochs)
    return {
        "found": len(chosen), "pool_near": len(near), **measured[best], "val_acc": summary["val"]["clip_accuracy"],
        "test_acc": (summary.get("test") or {}).get("clip_accuracy"), "search_steps": steps,
        "arch": chosen[best].to_json(),
    }  # fmt: skip


def fmt(value, spec=".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="audio folder, CSV manifest or prepared cache")
    parser.add_argument(
        "--budget", default="reduced", help="budget preset[,KEY=VALUE...] (musicnas benchmark's)"
    )
    parser.add_argument("--out", default="runs/latency_targets", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reward", default="tunas", choices=["tunas", "mnas-soft", "mnas-hard"])
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the measured backend")
    parser.add_argument("--percentiles", default="25,50,75", help="target percentiles of the space's latency")
    parser.add_argument("--pool", type=int, default=2000, help="random architectures giving the percentiles")
    parser.add_argument("--table", default=None, help="latency table file [this machine's in the user cache]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="threads of training and search [all usable cores]"
    )
    args = parser.parse_args()

    from musicnas.data.cache import open_data

    out = Path(args.out)
    rt = runtime.setup(args.device, args.torch_threads)
    data = open_data(args.data)
    bench = Bench(data, parse_budget(args.budget), rt, out, args.data)
    space = make_space(bench.budget)
    config = search_config(bench, args.seed)
    config.latency_backend, config.latency_threads, config.latency_table = (
        args.backend,
        args.threads,
        args.table,
    )
    model = model_for_search(config, space, data.input_shape, data.num_classes, data.config)
    pool = random_archs(space, args.pool, args.seed)
    predicted = np.array([model.predict(a) for a in pool])
    percentiles = [float(p) for p in args.percentiles.split(",")]
    targets = [float(np.percentile(predicted, p)) for p in percentiles]
    rows = []
    for p, target in zip(percentiles, targets, strict=True):
        where = out / f"p{int(p)}"
        enas = run_enas(bench, target, args, model.path, where / "enas")
        rand = run_random(bench, target, pool, model, args, where / "random")
        rows.append({"percentile": p, "target_ms": target, "enas": enas, "random": rand})
        atomic_write_json(out / "latency_targets.json", {"budget": bench.budget.to_dict(), "args": vars(args),
                                                         "table": model.describe(), "rows": rows})  # fmt: skip
    print(
        f"\nlatency targets ({args.backend}, {args.threads} thread(s), batch 1; budget {args.budget}, seed {args.seed})\n"
    )
    print(
        "| pct | target ms | ENAS predicted ms | ENAS measured ms (raw) | raw vs target | drift | corrected ms "
        "| corrected vs target | within ±10% (raw / corrected) | load at measuring | ENAS test acc | random best "
        "corrected ms | random test acc | random found | child steps ENAS / random |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e, q = r["enas"], r["random"]
        loads = ", ".join(f"{s['load_average'][0]:.1f}" for s in e["sessions"] if s.get("load_average"))
        print(f"| {r['percentile']:g} | {r['target_ms']:.3f} | {e['predicted_ms']:.3f} | {e['measured_ms']:.3f} | "
              f"{e['error']:+.1%} | {e['drift_factor']:.3f} | {e['corrected_ms']:.3f} | {e['corrected_error']:+.1%} | "
              f"{'yes' if e['within'] else 'no'} / {'yes' if e['corrected_within'] else 'no'} | {loads or 'n/a'} | "
              f"{fmt(e['test_acc'])} | {fmt(q.get('corrected_ms'))} | {fmt(q.get('test_acc'))} | "
              f"{q['found']} of {q['pool_near']} | {e['search_steps']} / {q.get('search_steps', 0)} |")  # fmt: skip
    print(f"\nwrote {out / 'latency_targets.json'}")


if __name__ == "__main__":
    main()
