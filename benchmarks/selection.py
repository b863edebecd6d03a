"""Which epoch to keep: selection rules compared on the same trainings, test files per rule.

A final training keeps the weights of one epoch, chosen on the val split. This benchmark trains a fixed
network exactly as ``musicnas train`` does (same seeding, same :class:`Training` loop) and after every
epoch scores the current weights, and with ``--train ema_decay=D`` also their moving average, on val
and on test. The test figures are for this study only: no rule sees them. Each rule's pick is then
looked up, so one training per seed gives every row of the table:

- ``val_acc``: best val clip accuracy, ties by val loss (what the trainer does);
- ``val_loss``: lowest val cross-entropy;
- ``val_file``: best val file accuracy, ties by val loss;
- ``last``: the last epoch (with one cosine decay, the lowest learning rate);

each for the raw weights and, when on, the average (``ema/...``).

``--arch`` may hold ``{seed}``, so seed S trains the architecture of a search of seed S (paired with
the pipeline's own figures)::

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295 \\
    .venv/bin/python benchmarks/selection.py --data REALMUSIC/manifest.csv --cache CACHE \\
        --arch 'runs/rm15-train-s{seed}/arch.json' --seeds 0,1,2,3,4 --train ema_decay=0.995 --name ema

Rows go to ``OUT/rows.jsonl`` (with every epoch's figures and the command); ``--table`` prints them.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

from recipe import fmt, pairs, parse_seeds  # benchmarks/recipe.py: the same KEY=VALUE options and table cells

RULES = ("val_acc", "val_loss", "val_file", "last")


def pick(epochs: list[dict], rule: str) -> dict:
    """The epoch record a selection rule keeps (epochs carry ``val_acc``, ``val_loss``, ``val_file``)."""
    if not epochs:
        raise ValueError("no epochs to select from")
    if rule == "last":
        return epochs[-1]
    if rule == "val_loss":
        return min(epochs, key=lambda e: e["val_loss"])
    if rule in ("val_acc", "val_file"):
        # the first epoch of the best (score, -loss): strict improvement, as the trainer keeps it
        best = epochs[0]
        for e in epochs[1:]:
            if (e[rule], -e["val_loss"]) > (best[rule], -best["val_loss"]):
                best = e
        return best
    raise ValueError(f"unknown rule {rule!r}; known: {RULES}")


def _scores(model, data, rt, batch_size) -> dict:
    from musicnas.training.evaluate import evaluate_split

    model.eval()
    out = {}
    for split in ("val", "test"):
        m = evaluate_split(model, data, split, rt, batch_size=batch_size)
        out[split] = {"acc": m["clip_accuracy"], "file": m["file_accuracy"], "loss": m["loss"]}
    return out


def trace_training(arch, data, out_dir, config, rt, seed: int, model_kw: dict) -> list[dict]:
    """Trains as ``musicnas train`` does and returns, per epoch and per weight set, val and test scores."""
    from musicnas.models import ModelSpec, build_model
    from musicnas.training.trainer import Training

    spec = ModelSpec.for_arch(
        arch, in_channels=int(data.input_shape[0]), num_classes=data.num_classes, **model_kw
    )
    torch.manual_seed(seed)  # weight initialisation, as retrain.train_arch seeds it
    model = build_model(spec, arch)
    training = Training(model, data, out_dir, config, rt, seed, show_progress=False)
    training.start()
    epochs = []
    while not training.done:
        training.run_epoch()
        row = {"epoch": training.epoch, "raw": _scores(training.model, data, rt, config.eval_batch_size)}
        if training.average is not None:
            with training.average.swapped_into(training.model):
                row["ema"] = _scores(training.model, data, rt, config.eval_batch_size)
        epochs.append(row)
        print(json.dumps({"seed": seed, **row}), flush=True)
    return epochs


def rule_results(epochs: list[dict]) -> dict[str, dict]:
    """Per ``weights/rule``: the picked epoch and its test file and clip accuracy."""
    out = {}
    for weights in ("raw", "ema"):
        if weights not in epochs[0]:
            continue
        flat = [
            {"epoch": e["epoch"], "val_acc": e[weights]["val"]["acc"], "val_loss": e[weights]["val"]["loss"],
             "val_file": e[weights]["val"]["file"], "test_file": e[weights]["test"]["file"],
             "test_clip": e[weights]["test"]["acc"]}
            for e in epochs
        ]  # fmt: skip
        for rule in RULES:
            p = pick(flat, rule)
            out[f"{weights}/{rule}"] = {"epoch": p["epoch"], "test_file": p["test_file"],
                                        "test_clip": p["test_clip"], "val_file": p["val_file"]}  # fmt: skip
    return out


def print_table(rows_path: Path) -> None:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    print("| row | weights/rule | seeds | test files | test clips | val files | epochs picked |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        runs = r["runs"]
        for key in runs[0]["rules"]:
            res = [x["rules"][key] for x in runs]
            print(
                f"| {r['name']} | {key} | {len(runs)} | {fmt([x['test_file'] for x in res])} "
                f"| {fmt([x['test_clip'] for x in res])} | {fmt([x['val_file'] for x in res])} "
                f"| {', '.join(str(x['epoch']) for x in res)} |"
            )
    print()
    for r in rows:
        print(f"- {r['name']}: `{r['command']}`")


@click.command()
@click.option("--data", type=click.Path(path_type=Path), help="Audio folder, CSV manifest or prepared cache.")
@click.option("--cache", type=click.Path(path_type=Path), default=Path(".musicnas-cache"), show_default=True)
@click.option("--arch", "arch_path", default=None,
              help="Architecture JSON; '{seed}' in the path is replaced by each seed.")  # fmt: skip
@click.option("--name", default=None, help="Row label.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds, comma-separated.")
@click.option("--feature", multiple=True, help="FeatureConfig field=value (repeatable).")
@click.option("--train", "train_opts", multiple=True, help="TrainConfig field=value (repeatable).")
@click.option("--model", "model_opts", multiple=True, help="Fixed-network option=value (channels, dropout).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/selection"), show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--table", is_flag=True, help="Print the rows collected in --out and exit.")
def main(data, cache, arch_path, name, seeds, feature, train_opts, model_opts, out, threads, table):
    """Trains one setting over seeds, scoring every epoch, and appends its row to OUT/rows.jsonl."""
    rows_path = out / "rows.jsonl"
    if table:
        if not rows_path.exists():
            raise click.UsageError(f"{rows_path} does not exist: no rows collected in {out} yet")
        print_table(rows_path)
        return
    if data is None or name is None or arch_path is None:
        raise click.UsageError("--data, --name and --arch are needed")

    from musicnas.data.cache import open_data
    from musicnas.data.features import FeatureConfig
    from musicnas.runtime import setup
    from musicnas.spaces import load_arch
    from musicnas.training.trainer import TrainConfig

    seed_list = parse_seeds(seeds)
    rt = setup("cpu", threads)
    dataset = open_data(data, cache, config=FeatureConfig(**pairs(feature, "--feature")))
    config = TrainConfig().replace(**pairs(train_opts, "--train"))
    model_kw = pairs(model_opts, "--model")
    runs = []
    for seed in seed_list:
        path = Path(arch_path.replace("{seed}", str(seed)))
        t0 = time.perf_counter()
        epochs = trace_training(
            load_arch(path), dataset, out / name / f"seed{seed}", config, rt, seed, model_kw
        )
        run = {"seed": seed, "arch": str(path), "seconds": time.perf_counter() - t0,
               "rules": rule_results(epochs), "epochs": epochs}  # fmt: skip
        runs.append(run)
        print(json.dumps({"name": name, "seed": seed, "rules": run["rules"]}), flush=True)
    row = {"name": name, "command": shlex.join(["benchmarks/selection.py", *sys.argv[1:]]),
           "feature": dataset.config.to_dict(), "train": config.to_dict(), "model": model_kw, "runs": runs}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with open(rows_path, "a") as f:
        f.write(json.dumps(row) + "\n")
    for key in runs[0]["rules"]:
        vals = [r["rules"][key]["test_file"] for r in runs]
        print(f"{name} {key}: test files {fmt(vals)} ({', '.join(f'{100 * v:.1f}' for v in vals)})")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
