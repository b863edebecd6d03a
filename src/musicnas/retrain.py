"""Retraining into a model bundle: build the network, train it (``musicnas.training``), write the bundle
(``musicnas.export``). It sits above both, so training never depends on the bundle format."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from musicnas import distributed
from musicnas.data.identity import data_identity
from musicnas.models import ModelSpec, build_model
from musicnas.runtime import Runtime
from musicnas.training.trainer import TRAIN_CONFIG_FILE, TrainConfig, train_model
from musicnas.utils.io import atomic_write_json, ensure_dir

log = logging.getLogger(__name__)


def train_bundle(
    model: nn.Module,
    data,
    out_dir,
    config: TrainConfig,
    rt: Runtime,
    seed: int = 0,
    resume: bool = False,
    *,
    model_spec: ModelSpec | None = None,
    arch=None,
    on_epoch_end: Callable[[dict], None] | None = None,
    show_progress: bool = True,
) -> dict:
    """:func:`~musicnas.training.trainer.train_model`, then the model bundle of the best weights
    (``model_spec`` says how to rebuild ``model``; an ENAS ``arch`` is enough for its fixed network).
    Without either, the weights and summary are written but no loadable bundle. Returns the summary."""
    from musicnas.export.bundle import WEIGHTS_FILE, save_bundle, save_weights

    out = Path(out_dir)
    info = model_spec.to_dict(arch) if model_spec is not None else None
    summary = train_model(model, data, out, config, rt, seed=seed, resume=resume, model_info=info,
                          on_epoch_end=on_epoch_end, show_progress=show_progress)  # fmt: skip
    if not distributed.is_main():  # under torchrun every rank holds the same weights; rank 0 writes
        return summary
    if model_spec is not None or arch is not None:
        save_bundle(out, model, arch, data.config, list(data.classes), data.mean, data.std, summary,
                    model_spec=model_spec)  # fmt: skip
    else:
        save_weights(out / WEIGHTS_FILE, model)
        atomic_write_json(out / "summary.json", summary)
        log.warning("no model spec given: wrote weights and summary but no loadable bundle to %s", out)
    return summary


def train_arch(
    arch,
    data,
    out_dir,
    config: TrainConfig | None = None,
    rt: Runtime | None = None,
    seed: int = 0,
    resume: bool = False,
    *,
    channels=None,
    dropout: float = 0.1,
    on_epoch_end: Callable[[dict], None] | None = None,
    show_progress: bool = True,
    **space_kwargs,
) -> dict:
    """Builds the fixed network of ``arch`` (seeded), trains it with :func:`train_bundle` and writes the
    full model bundle to ``out_dir``. Returns the training summary."""
    from musicnas.runtime import setup

    config = config or TrainConfig()
    rt = rt or setup()
    out = Path(out_dir)
    in_channels = int(data.input_shape[0])
    spec = ModelSpec.for_arch(
        arch,
        in_channels=in_channels,
        num_classes=data.num_classes,
        channels=channels,
        dropout=dropout,
        **space_kwargs,
    )
    # Recorded up front so `musicnas train --resume MODEL` can rebuild the same network and settings.
    ensure_dir(out, "model folder")
    if not resume and distributed.is_main():
        atomic_write_json(out / "arch.json", arch.to_json())
        atomic_write_json(
            out / TRAIN_CONFIG_FILE,
            {
                "config": config.to_dict(),
                "seed": seed,
                "model": spec.to_dict(arch),
                "data": str(data.root),
                "data_identity": data_identity(data),
            },
        )
    torch.manual_seed(seed)  # weight initialisation
    model = build_model(spec, arch)
    if spec.channels is None and isinstance(getattr(model, "channels", None), int):
        spec.channels = model.channels  # record the width the space chose, for readers of bundle.json
    return train_bundle(
        model,
        data,
        out,
        config,
        rt,
        seed=seed,
        resume=resume,
        model_spec=spec,
        arch=arch,
        on_epoch_end=on_epoch_end,
        show_progress=show_progress,
    )
