"""Training-recipe ablations: one setting trained over several seeds, test accuracy per file and per clip
as mean ± std over the seeds, beside the per-file log-mel statistics + logistic regression floor.

Each call is one row; rows accumulate in ``OUT/rows.jsonl`` (with the command that made them) and
``--table`` prints them all as a markdown table, as docs/realmusic.md shows them::

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0 \\
    .venv/bin/python benchmarks/recipe.py --data REALMUSIC/manifest.csv --name defaults \\
        --arch runs/search/arch.json --seeds 0,1,2 [--feature n_mels=96] [--train epochs=20] \\
        [--train augment_mixup_alpha=0.2] [--model channels=16] [--model-type hand_cnn]
    .venv/bin/python benchmarks/recipe.py --out runs/recipe --table

``--feature`` sets a :class:`~musicnas.data.features.FeatureConfig` field, ``--train`` a
:class:`~musicnas.training.trainer.TrainConfig` field (``augment_*`` for augmentation), ``--model`` an
option of the fixed network (``channels``, ``dropout``) or of the hand CNN (``channels``, ``num_blocks``).
The split is the data's own (the real-music manifest fixes it), so seeds vary initialisation, data order
and augmentation only.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import click
import torch


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def pairs(items: tuple[str, ...], what: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=what)
        out[key.replace("-", "_")] = _parse_value(value)
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``, or a click error naming ``--seeds``."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected comma-separated integers", param_hint="--seeds"
        ) from None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float]) -> str:
    m, s = _mean_std(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def print_table(rows_path: Path) -> None:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    print("| row | seeds | test files | test clips | val files | M MACs | min/run | floor (files) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        runs = r["runs"]
        print(
            f"| {r['name']} | {len(runs)} | {fmt([x['test_file'] for x in runs])} "
            f"| {fmt([x['test_clip'] for x in runs])} | {fmt([x['val_file'] for x in runs])} "
            f"| {r['macs'] / 1e6:.0f} | {statistics.fmean(x['seconds'] for x in runs) / 60:.1f} "
            f"| {100 * r['floor_test_file']:.1f} |"
        )
    print()
    for r in rows:
        print(f"- {r['name']}: `{r['command']}`")


@click.command()
@click.option("--data", type=click.Path(path_type=Path), help="Audio folder, CSV manifest or prepared cache.")
@click.option("--cache", type=click.Path(path_type=Path), default=Path(".musicnas-cache"), show_default=True)
@click.option("--arch", "arch_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--model-type",
    type=click.Choice(["arch", "hand_cnn"]),
    default="arch",
    show_default=True,
    help="The fixed network of --arch, or the hand-designed short-chunk ResCNN.",
)
@click.option("--name", default=None, help="Row label.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds, comma-separated.")
@click.option("--feature", multiple=True, help="FeatureConfig field=value (repeatable).")
@click.option("--train", "train_opts", multiple=True, help="TrainConfig field=value (repeatable).")
@click.option("--model", "model_opts", multiple=True, help="Model option=value (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/recipe"), show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--table", is_flag=True, help="Print the rows collected in --out and exit.")
def main(
    data, cache, arch_path, model_type, name, seeds, feature, train_opts, model_opts, out, threads, table
):
    """Trains one recipe over seeds and appends its row to OUT/rows.jsonl."""
    rows_path = out / "rows.jsonl"
    if table:
        print_table(rows_path)
        return
    if data is None or name is None or (model_type == "arch" and arch_path is None):
        raise click.UsageError("--data, --name and (for --model-type arch) --arch are needed")

    from musicnas.baselines.logreg import file_floor
    from musicnas.data.cache import open_data
    from musicnas.data.features import FeatureConfig
    from musicnas.retrain import train_arch, train_bundle
    from musicnas.runtime import setup
    from musicnas.spaces import load_arch
    from musicnas.training.trainer import TrainConfig

    seeds = parse_seeds(seeds)
    rt = setup("cpu", threads)
    dataset = open_data(data, cache, config=FeatureConfig(**pairs(feature, "--feature")))
    floor = file_floor(dataset)
    config = TrainConfig().replace(**pairs(train_opts, "--train"))
    model_kw = pairs(model_opts, "--model")
    runs, macs = [], None
    for seed in seeds:
        run_dir = out / name / f"seed{seed}"
        t0 = time.perf_counter()
        if model_type == "arch":
            summary = train_arch(
                load_arch(arch_path), dataset, run_dir, config, rt, seed=seed, show_progress=False, **model_kw
            )
        else:
            from musicnas.baselines.cnn import ShortChunkResCNN

            torch.manual_seed(seed)
            model = ShortChunkResCNN(
                in_channels=int(dataset.input_shape[0]), num_classes=dataset.num_classes, **model_kw
            )
            summary = train_bundle(
                model,
                dataset,
                run_dir,
                config,
                rt,
                seed=seed,
                model_spec=model.model_spec(),
                show_progress=False,
            )
        seconds = time.perf_counter() - t0
        macs = (summary.get("cost") or {}).get("macs") or 0
        run = {
            "seed": seed,
            "test_file": summary["test"]["file_accuracy"],
            "test_clip": summary["test"]["clip_accuracy"],
            "val_file": summary["val"]["file_accuracy"],
            "best_epoch": summary["best_epoch"],
            "seconds": seconds,
        }
        runs.append(run)
        print(json.dumps({"name": name, **run}), flush=True)
    row = {
        "name": name,
        "command": shlex.join(["benchmarks/recipe.py", *sys.argv[1:]]),
        "feature": dataset.config.to_dict(),
        "train": config.to_dict(),
        "model": model_kw,
        "model_type": model_type,
        "macs": macs,
        "floor_test_file": floor["test"]["file_acc"],
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    with open(rows_path, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(
        f"{name}: test files {fmt([r['test_file'] for r in runs])}, clips {fmt([r['test_clip'] for r in runs])}"
        f" (floor {100 * floor['test']['file_acc']:.1f}), {macs / 1e6:.0f} M MACs"
    )


if __name__ == "__main__":
    main()
