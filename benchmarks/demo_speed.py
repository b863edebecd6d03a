"""Wall time of the default demo's search and retrain with the step optimisations on and off.

Issue 15 asks that the demo itself gets faster by the means that speed up the search step. This runs
``musicnas demo``'s own stages (``musicnas.demo.run_demo``, every default) twice per round, once as
shipped and once with the spaces' step optimisations switched off (``spaces.ops.optimised_ops(False)``:
the plain factorized reduction, no in-place ReLU or skip sums, no rebuilt activations, NCHW dense convs),
each in a fresh child process with the CLI's malloc and OpenMP settings, the two sides alternating their
order from round to round. The demo music and its feature cache are made once and shared, so only
search, retraining, evaluation and the report are timed. Prints per side the search and training seconds,
peak RSS and test accuracy, and the plain/optimised time ratios (medians over rounds).

    python benchmarks/demo_speed.py --rounds 1 --json runs/demo_speed.json

A quick check of the script itself: ``--search-epochs 1 --train-epochs 1 --tracks 6``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from search_step import child_env  # benchmarks/search_step.py: the CLI's malloc and OpenMP settings

SIDES = ("optimised", "plain")


def run_worker(spec: dict) -> dict:
    from musicnas import runtime
    from musicnas.demo import DemoSizes, run_demo
    from musicnas.spaces import ops

    rt = runtime.setup("cpu", threads=spec["threads"])
    sizes = DemoSizes(tracks_per_class=spec["tracks"], search_epochs=spec["search_epochs"],
                      train_epochs=spec["train_epochs"])  # fmt: skip
    with ops.optimised_ops(spec["side"] == "optimised"):
        summary = run_demo(spec["out"], rt, seed=spec["seed"], sizes=sizes)
    return {
        "side": spec["side"],
        "search_s": summary["seconds"]["search"],
        "train_s": summary["seconds"]["train"],
        "total_s": summary["total_seconds"],
        "peak_rss_mib": summary["peak_rss_mib"],
        "test_clip_accuracy": summary["test_clip_accuracy"],
        "arch": summary["arch_flat"],
    }


def run_side(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
    if proc.returncode != 0:
        raise click.ClickException(f"{spec['side']} demo failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@click.command(help=__doc__)
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True, help="Runs per side.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tracks", type=click.IntRange(2), default=24, show_default=True, help="Demo tracks per class."
)
@click.option(
    "--search-epochs", type=click.IntRange(1), default=None, help="Override the cpu preset's epochs."
)
@click.option("--train-epochs", type=click.IntRange(1), default=None, help="Override the training epochs.")
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the runs here."
)
@click.option("--worker", hidden=True, default=None)
def main(rounds, threads, seed, tracks, search_epochs, train_epochs, json_out, worker):
    if worker is not None:
        print(json.dumps(run_worker(json.loads(worker))))
        return
    base = dict(
        threads=threads, seed=seed, tracks=tracks, search_epochs=search_epochs, train_epochs=train_epochs
    )
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="demo_speed_") as tmp:
        shared = Path(tmp) / "shared"
        # the demo music and features once: a 1-epoch demo run of its own, whose audio and cache are reused
        click.echo("making the demo music and its feature cache once ...")
        run_side({**base, "side": "optimised", "out": str(shared), "search_epochs": 1, "train_epochs": 1})
        for r in range(rounds):
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                out = Path(tmp) / f"{side}_{r}"
                out.mkdir()
                shutil.copytree(shared / "audio", out / "audio")
                shutil.copytree(shared / "cache", out / "cache")
                result = run_side({**base, "side": side, "out": str(out)})
                result["round"] = r
                runs.append(result)
                click.echo(f"round {r} {side:9s}: search {result['search_s']:7.1f} s, train {result['train_s']:7.1f} s, "
                           f"peak RSS {result['peak_rss_mib']:6.0f} MiB, test clip acc {result['test_clip_accuracy']:.3f}")  # fmt: skip

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["side"] == side)

    click.echo("\nplain / optimised, medians over rounds (> 1: the optimisations make the demo faster):")
    ratios = {}
    for key in ("search_s", "train_s", "peak_rss_mib"):
        ratios[key] = median("plain", key) / median("optimised", key)
        click.echo(
            f"  {key:13s} {median('plain', key):8.1f} / {median('optimised', key):8.1f} = {ratios[key]:.2f}x"
        )
    if json_out:
        from musicnas.utils.io import atomic_write_json

        atomic_write_json(json_out, {"runs": runs, "ratios": ratios, "options": base})


if __name__ == "__main__":
    main()
