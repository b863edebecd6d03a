"""``musicnas data``: prepare a feature cache, inspect one, or generate demo music."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from musicnas.cli.common import (
    COUNT,
    FRACTION,
    NON_NEGATIVE_FLOAT,
    POSITIVE_FLOAT,
    WORKERS,
    FiniteFloatRange,
    runtime_options,
    seed_option,
)
from musicnas.data.features import (
    MAX_CLIP_SECONDS,
    MAX_HOP_SECONDS,
    MAX_N_FFT,
    MAX_N_MELS,
    MAX_SAMPLE_RATE,
)
from musicnas.runtime import MusicnasError

DEFAULT_CACHE = ".musicnas-cache"


def feature_options(func):
    """Adds the feature options (sample rate, clip length, STFT and mel settings) and passes them as a
    ``feature_config`` keyword (a :class:`musicnas.data.features.FeatureConfig`). Other commands that
    prepare data can reuse this decorator so the options are spelled the same everywhere."""

    options = [
        click.option(
            "--sample-rate",
            type=click.IntRange(1000, MAX_SAMPLE_RATE),
            default=16000,
            show_default=True,
            help="Resample audio to this rate (Hz).",
        ),
        click.option(
            "--clip-seconds",
            type=FiniteFloatRange(0, MAX_CLIP_SECONDS, min_open=True),
            default=3.0,
            show_default=True,
            help="Length of each clip cut from a file.",
        ),
        click.option(
            "--clip-hop",
            type=FiniteFloatRange(0, MAX_HOP_SECONDS, min_open=True),
            default=None,
            help="Seconds between clip starts [default: 1, or --clip-seconds if shorter]: overlapping clips "
            "give more training windows per file and predict from more of it.",
        ),
        click.option(
            "--min-seconds",
            type=FiniteFloatRange(0, MAX_CLIP_SECONDS),
            default=1.0,
            show_default=True,
            help="Files shorter than this are skipped; shorter than a clip are zero-padded.",
        ),
        click.option(
            "--n-fft",
            type=click.IntRange(16, MAX_N_FFT),
            default=1024,
            show_default=True,
            help="STFT window length in samples.",
        ),
        click.option(
            "--hop-length",
            type=click.IntRange(1, MAX_N_FFT),
            default=512,
            show_default=True,
            help="STFT hop in samples.",
        ),
        click.option(
            "--n-mels",
            type=click.IntRange(1, MAX_N_MELS),
            default=64,
            show_default=True,
            help="Number of mel bands.",
        ),
        click.option(
            "--fmin",
            type=NON_NEGATIVE_FLOAT,
            default=0.0,
            show_default=True,
            help="Lowest mel filter edge (Hz).",
        ),
        click.option(
            "--fmax",
            type=POSITIVE_FLOAT,
            default=None,
            help="Highest mel filter edge (Hz) [default: sample rate / 2].",
        ),
        click.option(
            "--mel-scale",
            type=click.Choice(["slaney", "htk"]),
            default="slaney",
            show_default=True,
            help="Mel scale formula.",
        ),
        click.option(
            "--mel-norm",
            type=click.Choice(["slaney", "none"]),
            default="slaney",
            show_default=True,
            help="Filter normalisation (slaney = equal area).",
        ),
    ]

    @functools.wraps(func)
    def wrapper(
        *args,
        sample_rate,
        clip_seconds,
        clip_hop,
        min_seconds,
        n_fft,
        hop_length,
        n_mels,
        fmin,
        fmax,
        mel_scale,
        mel_norm,
        **kwargs,
    ):
        from musicnas.data.features import FeatureConfig

        kwargs["feature_config"] = FeatureConfig(
            sample_rate=sample_rate,
            clip_seconds=clip_seconds,
            clip_hop_seconds=min(FeatureConfig.clip_hop_seconds, clip_seconds)
            if clip_hop is None
            else clip_hop,
            min_seconds=min(min_seconds, clip_seconds),
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
            mel_scale=mel_scale,
            norm=None if mel_norm == "none" else mel_norm,
        )
        return func(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


@click.group()
def data() -> None:
    """Prepare audio into a feature cache, inspect a cache, or generate demo music."""


@data.command("prepare")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Audio folder (one subfolder per class) or CSV manifest (path,label[,split,group]).",
)
@click.option(
    "--cache",
    "cache_dir",
    default=DEFAULT_CACHE,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that holds feature caches.",
)
@feature_options
@click.option(
    "--val-fraction",
    type=FRACTION,
    default=0.15,
    show_default=True,
    help="Share of each class's groups held out for validation.",
)
@click.option(
    "--test-fraction",
    type=FRACTION,
    default=0.15,
    show_default=True,
    help="Share of each class's groups held out for testing.",
)
@seed_option
@click.option("--workers", type=WORKERS, default=None, help="Decoding threads [default: all usable cores].")
@click.option(
    "--batch-size", type=COUNT, default=64, show_default=True, help="Clips per feature-extraction batch."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@runtime_options
def prepare_command(
    data_path, cache_dir, feature_config, val_fraction, test_fraction, seed, workers, batch_size, as_json, rt
):
    """Decode, cut into clips, split and extract log-mel features into a cache.

    The cache is keyed by every option and by the input files (paths, sizes, times): running again
    with the same ones reuses it, changing any rebuilds it. Unusable files are skipped with a warning.
    """
    from musicnas.data.cache import prepare

    cache = prepare(
        data_path,
        cache_dir,
        feature_config,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        workers=workers,
        device=rt.device,
        batch_size=batch_size,
    )
    _print_summary(cache.summary(), as_json)


@data.command("inspect")
@click.option(
    "--cache",
    "cache_dir",
    default=DEFAULT_CACHE,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A cache folder, or the folder holding caches.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON (one object, or a list when there are several caches).",
)
def inspect_command(cache_dir: Path, as_json: bool):
    """Summarise prepared caches: classes, clips, groups and hours per split, skipped files."""
    from musicnas.data.cache import FeatureCache, find_caches, is_cache

    roots = [cache_dir] if is_cache(cache_dir) else find_caches(cache_dir)
    if not roots:
        raise MusicnasError(
            f"no prepared feature cache in {cache_dir}; run `musicnas data prepare --data AUDIO --cache {cache_dir}` first"
        )
    summaries = [FeatureCache.open(r).summary() for r in roots]
    if as_json:
        click.echo(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
        return
    for i, s in enumerate(summaries):
        if i:
            click.echo()
        _print_summary(s, False)


@data.command("synth")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the generated audio into.",
)
@seed_option
@click.option(
    "--classes",
    "num_classes",
    type=click.IntRange(min=2),
    default=8,
    show_default=True,
    help="Number of genres to generate.",
)
@click.option("--tracks-per-class", type=COUNT, default=24, show_default=True, help="Tracks per genre.")
@click.option(
    "--seconds",
    type=FiniteFloatRange(0, 600, min_open=True),
    default=15.0,
    show_default=True,
    help="Length of each track.",
)
@click.option(
    "--workers", type=WORKERS, default=None, help="Parallel rendering processes [default: all usable cores]."
)
def synth_command(out_dir, seed, num_classes, tracks_per_class, seconds, workers):
    """Generate a labelled folder of synthetic music (one subfolder per genre) for demos and tests."""
    from musicnas.data.synth import generate_dataset

    summary = generate_dataset(
        out_dir,
        seed=seed,
        num_classes=num_classes,
        tracks_per_class=tracks_per_class,
        seconds=seconds,
        workers=workers,
    )
    click.echo(json.dumps(summary, indent=2, default=str))


def _print_summary(s: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    f = s["features"]
    source = s["source"]
    click.echo(f"cache     {s['root']}  ({s['size_mb']} MB, key {s['key']})")
    click.echo(f"source    {source['path']}  ({source['kind']}, {source['files']} files)")
    click.echo(f"classes   {s['num_classes']}: {', '.join(s['classes'])}")
    click.echo(
        f"clips     {s['clips']} of {f['clip_seconds']:g} s (hop {f['clip_hop_seconds']:g} s) at {f['sample_rate']} Hz, "
        f"input shape {tuple(s['input_shape'])}; seed {s['seed']}"
    )
    click.echo(f"{'split':<8}{'clips':>8}{'groups':>8}{'files':>8}{'hours':>9}  per class")
    for name, sp in s["splits"].items():
        per_class = " ".join(str(n) for n in sp["clips_per_class"].values())
        click.echo(
            f"{name:<8}{sp['clips']:>8}{sp['groups']:>8}{sp['files']:>8}{sp['hours']:>9.3f}  {per_class}"
        )
    skipped = s["skipped"]
    if skipped["count"]:
        reasons = ", ".join(f"{n} {r}" for r, n in skipped["by_reason"].items())
        click.echo(f"skipped   {skipped['count']} file(s): {reasons}")
        for item in skipped["files"][:20]:
            click.echo(f"  {item['path']}: {item['reason']}")
        if skipped["count"] > 20:
            click.echo(f"  ... and {skipped['count'] - 20} more (see --json)")
    else:
        click.echo("skipped   none")
