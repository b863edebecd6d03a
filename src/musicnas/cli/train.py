"""``musicnas train``: retrain an architecture from scratch and write a model bundle."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from musicnas.cli.common import (
    CHANNELS,
    COUNT,
    FRACTION,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    SEED,
    TRAIN_BATCH,
    cache_option,
    runtime_options,
)
from musicnas.runtime import MusicnasError

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--arch",
    "arch_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Architecture JSON (e.g. RUN/arch.json from `musicnas search`). Not needed with --resume.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Audio folder, CSV manifest or prepared feature cache. With --resume: defaults to the recorded one.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model bundle folder to write (required unless --resume gives it).",
)
@click.option("--epochs", type=COUNT, default=None, help="Training epochs [default: 24].")
@click.option(
    "--seed",
    type=SEED,
    default=None,
    help="Seed for initialisation, shuffling and augmentation [default: 0].",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue the interrupted training in this model folder from its last checkpoint "
    "(same settings; options given must match the original run).",
)
@click.option(
    "--channels", type=CHANNELS, default=None, help="Width of the fixed network [default: the space's]."
)
@click.option("--dropout", type=FRACTION, default=None, help="Dropout before the classifier [default: 0.1].")
@click.option("--batch-size", type=TRAIN_BATCH, default=None, help="Training batch size [default: 32].")
@click.option(
    "--lr",
    type=POSITIVE_FLOAT,
    default=None,
    help="Peak learning rate of the cosine schedule [default: 0.05].",
)
@click.option(
    "--label-smoothing", type=FRACTION, default=None, help="Label smoothing, 0 to switch off [default: 0.1]."
)
@click.option(
    "--mixup", type=NON_NEGATIVE_FLOAT, default=None, help="Mixup alpha, 0 to switch off [default: 0.3]."
)
@click.option(
    "--gain",
    type=NON_NEGATIVE_FLOAT,
    default=None,
    help="Random level offset per clip, up to this many normalised units (about one band std), 0 off "
    "[default: 0.5].",
)
@click.option(
    "--tilt",
    type=NON_NEGATIVE_FLOAT,
    default=None,
    help="Random spectral tilt per clip (a ramp over the mel bands reaching this many normalised units at "
    "each end), 0 off [default: 0.5].",
)
@click.option(
    "--ema-decay",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=None,
    help="Average the weights with this decay per step and select and save the average, 0 off [default: 0].",
)
@click.option(
    "--select",
    "select_by",
    type=click.Choice(["last", "val_acc", "val_loss"]),  # trainer.SELECT_BY (kept torch-free here)
    default=None,
    help="Which epoch's weights to keep: last (the end of the cosine decay), val_acc (best val clip "
    "accuracy) or val_loss [default: last; on small val splits the best val epoch is mostly the luckiest].",
)
@click.option(
    "--patience",
    type=NON_NEGATIVE_INT,
    default=None,
    help="Stop after this many epochs without a better val accuracy, 0 never [default: 0].",
)
@click.option(
    "--measure-latency/--no-measure-latency",
    default=True,
    show_default=True,
    help="Measure the trained model's latency (onnxruntime, 1 thread, batch 1) for its model card.",
)
@cache_option
@runtime_options(data_parallel=True)
def train(
    arch_path,
    data,
    out,
    epochs,
    seed,
    resume,
    channels,
    dropout,
    batch_size,
    lr,
    label_smoothing,
    mixup,
    gain,
    tilt,
    ema_decay,
    select_by,
    patience,
    measure_latency,
    cache,
    rt,
):
    """Train the fixed network of an architecture from scratch (train split; the last epoch kept, or
    the best on the val split with --select) and write a model bundle to --out: weights (safetensors), arch.json, bundle.json (feature
    options, classes, normalisation), summary.json with val/test metrics, per-epoch metrics.

    \b
    Augmentation: random time crop and shift, SpecAugment masks (and mixup with --mixup).
    Schedule: SGD with Nesterov momentum, one cosine decay; checkpoints every epoch.
    Example:
      musicnas train --arch runs/search/arch.json --data demo_audio --out runs/model
      musicnas train --resume runs/model          # after an interruption
    """
    from musicnas.data.cache import open_data
    from musicnas.retrain import train_arch
    from musicnas.spaces import load_arch
    from musicnas.training.trainer import TRAIN_CONFIG_FILE, TrainConfig

    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "label_smoothing": label_smoothing,
        "patience": patience,
        "augment_mixup_alpha": mixup,
        "augment_gain": gain,
        "augment_tilt": tilt,
        "ema_decay": ema_decay,
        "select_by": select_by,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    model_opts = {"channels": channels, "dropout": dropout}
    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise MusicnasError(
                f"--resume {resume} continues in that folder; drop --out {out} or make it the same"
            )
        out = resume
        recorded = read_train_record(resume / TRAIN_CONFIG_FILE)
        config = TrainConfig.from_record(recorded["config"]).replace(**overrides)
        seed = recorded["seed"] if seed is None else seed
        model = recorded["model"]
        for key, value in model_opts.items():
            if value is not None and value != model.get(key):
                raise MusicnasError(f"--{key} {value} differs from the run being resumed ({model.get(key)})")
            model_opts[key] = model.get(key)
        space_kwargs = dict(model.get("kwargs") or {})
        arch = load_arch(arch_path or resume / "arch.json")
        data = data or Path(recorded["data"])
    else:
        if arch_path is None or data is None or out is None:
            raise MusicnasError("--arch, --data and --out are required (or --resume MODEL to continue a run)")
        config = TrainConfig().replace(**overrides)
        seed = 0 if seed is None else seed
        arch = load_arch(arch_path)
        space_kwargs = {}
        if model_opts["dropout"] is None:
            model_opts["dropout"] = 0.1
    dataset = open_data(data, cache)
    _warn_untrainable_classes(dataset)
    click.echo(
        f"training {arch.space.type} architecture on {dataset.root} ({len(dataset.split_indices('train'))} train clips, "
        f"{dataset.num_classes} classes) for {config.epochs} epochs on {rt.device}"
    )
    try:
        summary = train_arch(
            arch, dataset, out, config, rt, seed=seed, resume=resume is not None, **model_opts, **space_kwargs
        )
    except KeyboardInterrupt:
        # the last finished epoch is in the checkpoint; say how to go on instead of a bare "aborted"
        raise MusicnasError(
            f"training interrupted; continue from the last finished epoch with: musicnas train --resume {out}"
        ) from None
    _card(out, arch_path, measure_latency)
    val, test, cost = summary["val"], summary["test"], summary["cost"]
    click.echo(
        f"kept epoch {summary['best_epoch']}/{summary['epochs_run']} ({config.select_by})"
        + (" (stopped early)" if summary["stopped_early"] else "")
        + f": val clip acc {val['clip_accuracy']:.3f}, file acc {val['file_accuracy']:.3f}, "
        f"track acc {val['track_accuracy']:.3f}"
    )
    if test is not None:
        click.echo(
            f"test: clip acc {test['clip_accuracy']:.3f}, file acc {test['file_accuracy']:.3f}, "
            f"track acc {test['track_accuracy']:.3f}, "
            f"macro-F1 {test['macro_f1']:.3f}"
        )
    macs = f", {cost['macs'] / 1e6:.1f} M MACs" if cost and cost.get("macs") else ""
    click.echo(f"{cost['params']:,} parameters{macs}; {summary['train_seconds']:.0f} s. Model bundle: {out}")


def _warn_untrainable_classes(dataset) -> None:
    """Says which classes have no train clips (the model can never predict them), with prepare's reason."""
    present = set(dataset.labels[dataset.split_indices("train")].tolist())
    notes = [n for n in dataset.meta.get("warnings", []) if n.startswith("split train ")]
    for index, name in enumerate(dataset.classes):
        if index not in present:
            why = next(
                (n.split(": ", 1)[1] for n in notes if f"class {name!r}:" in n), "see `musicnas data inspect`"
            )
            log.warning(
                "class %r has no clips in the train split (%s): the model will never predict it", name, why
            )


def read_train_record(path: Path) -> dict:
    """``MODEL/train_config.json`` (written when the training started), checked: config, seed, model, data."""
    from musicnas.training.trainer import TrainConfig
    from musicnas.utils.io import read_json

    record = read_json(path, what="training settings of the run to resume")
    kinds = {"config": dict, "seed": int, "model": dict, "data": str}
    problems = [
        f"{key!r} must be a {kind.__name__}"
        for key, kind in kinds.items()
        if not isinstance(record.get(key) if isinstance(record, dict) else None, kind)
        or (kind is int and isinstance(record.get(key), bool))
    ]
    if not problems:
        try:
            TrainConfig.from_record(record["config"])
        except MusicnasError as exc:
            problems.append(str(exc))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            problems.append(f"'config' holds a value of the wrong type ({exc})")
    if problems:
        raise MusicnasError(f"{path} is damaged ({'; '.join(problems)}); restore it or start a new --out")
    return record


def _card(out: Path, arch_path: Path | None, measure_latency: bool) -> None:
    """The bundle's model card with the search it came from and, by default, its measured latency."""
    from musicnas.export.card import record_latency, record_search_provenance, write_model_card

    if arch_path is not None:
        record_search_provenance(out, arch_path)
    if measure_latency:
        from musicnas.latency.measure import deployed_from_path, measure_deployed

        try:
            record_latency(out, measure_deployed(deployed_from_path(out)).to_dict())
            return
        except MusicnasError as exc:  # the model is trained and saved; a failed export must not hide that
            click.secho(f"latency not measured: {exc}", fg="yellow", err=True)
    write_model_card(out)
