"""The whole musicnas path on demo music it composes itself: synth → prepare → search → retrain →
evaluate → report. Each stage writes into its own folder under ``out`` and is skipped or resumed when a
rerun finds it done or interrupted, so a killed demo loses no finished work.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from musicnas.runtime import Runtime
from musicnas.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSizes:
    """How big the demo is. The defaults fit the 15-minute budget on 2 CPU cores."""

    classes: int = 8
    tracks_per_class: int = 24
    seconds: float = 15.0
    search_epochs: int | None = None  # None: the cpu preset's
    train_epochs: int | None = None  # None: TrainConfig's default


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux; children covers the synth/prepare worker processes
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def _synth(audio_dir: Path, seed: int, sizes: DemoSizes) -> None:
    from musicnas.data.synth import GENRES, generate_dataset
    from musicnas.data.synth.dataset import VERSION

    manifest = audio_dir / "synth.json"
    if manifest.is_file():
        done = read_json(manifest, "demo manifest")
        wanted = {
            "version": VERSION,  # audio from another composer version is made again
            "seed": seed,
            "classes": list(GENRES[: sizes.classes]),
            "tracks_per_class": sizes.tracks_per_class,
            "seconds": float(sizes.seconds),
        }
        if all(done.get(k) == v for k, v in wanted.items()):
            log.info("demo music already in %s: reusing it", audio_dir)
            return
    generate_dataset(
        audio_dir,
        seed=seed,
        num_classes=sizes.classes,
        tracks_per_class=sizes.tracks_per_class,
        seconds=sizes.seconds,
    )


def run_demo(
    out: str | Path, rt: Runtime, seed: int = 0, space: str = "macro", sizes: DemoSizes | None = None
) -> dict:
    """Runs every stage and returns a summary (also written to ``out/demo.json``)."""
    from musicnas.baselines.logreg import logmel_stats_logreg
    from musicnas.data.cache import open_data
    from musicnas.export.bundle import load_bundle
    from musicnas.report import write_report
    from musicnas.retrain import train_arch
    from musicnas.search.config import preset
    from musicnas.search.enas import run_search
    from musicnas.spaces import load_arch
    from musicnas.training.evaluate import evaluate_bundle
    from musicnas.training.trainer import TrainConfig

    sizes = sizes or DemoSizes()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    def stage(name: str, start: float) -> None:
        times[name] = round(time.perf_counter() - start, 1)
        log.info("demo: %s done in %.1f s", name, times[name])

    start = time.perf_counter()
    _synth(out / "audio", seed, sizes)
    stage("synth", start)

    start = time.perf_counter()
    data = open_data(out / "audio", out / "cache", seed=seed)
    stage("prepare", start)

    floor = logmel_stats_logreg(data, seed=seed)

    start = time.perf_counter()
    search_dir = out / "search"
    if (search_dir / "arch.json").is_file():
        log.info("search already finished in %s: reusing its architecture", search_dir)
    else:
        config = preset("cpu", space)
        config.seed = seed
        config.data = str(out / "audio")
        config.cache_dir = str(out / "cache")
        if sizes.search_epochs is not None:
            config.epochs = sizes.search_epochs
        resume = (search_dir / "checkpoints" / "last.pt").is_file()
        run_search(config.validate(), data, search_dir, rt, resume=resume)
    arch = load_arch(search_dir / "arch.json")
    stage("search", start)

    start = time.perf_counter()
    model_dir = out / "model"
    if (model_dir / "summary.json").is_file():
        log.info("model already trained in %s: reusing it", model_dir)
    else:
        train_config = TrainConfig()
        if sizes.train_epochs is not None:
            train_config = train_config.replace(epochs=sizes.train_epochs)
        resume = (model_dir / "checkpoints" / "last.pt").is_file()
        train_arch(arch, data, model_dir, train_config, rt, seed=seed, resume=resume)
    stage("train", start)

    start = time.perf_counter()
    classifier = load_bundle(model_dir, device=str(rt.device))
    metrics = evaluate_bundle(classifier, data, "test", rt)
    stage("evaluate", start)

    start = time.perf_counter()
    report = write_report(out)
    stage("report", start)

    summary = {
        "out": str(out),
        "seed": seed,
        "space": space,
        "arch": str(search_dir / "arch.json"),
        "arch_flat": arch.to_flat(),
        "model": str(model_dir),
        "report": str(report),
        "test_clip_accuracy": metrics["clip_accuracy"],
        "test_track_accuracy": metrics["track_accuracy"],
        "test_macro_f1": metrics["macro_f1"],
        "logreg_floor": floor,
        "seconds": times,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "runtime": rt.describe(),
    }
    atomic_write_json(out / "demo.json", summary)
    return summary
