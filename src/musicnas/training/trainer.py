"""Retraining a fixed network from scratch on the train split, selected by the val split; resumable.

Optimiser as in ENAS's child training (enas-reference.md section 3: SGD with Nesterov momentum 0.9,
weight decay 5e-4 = 2 x the reference's L2 of 2.5e-4, gradient-norm clipping at 5) but with **one cosine
decay over the whole run, stepped per batch, instead of warm restarts**: a final training of a known
length has no use for restarts, and a single decay ends at the low learning rate where the best model
is usually found. Label smoothing (0.1) and early stopping on val accuracy are additions for small
audio datasets; the aux head (micro) is trained with its weight (0.4), which the reference forgot.

Every epoch ends with an atomic checkpoint (``MODEL/checkpoints/last.pt``, weights_only-loadable) holding
model, optimiser, scheduler, AMP scaler, the data/augmentation generator and torch's global generator
(dropout and drop-path draw from it), the epoch, the best weights so far and the metric history; resuming
from it gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from musicnas.runtime import MusicnasError, Runtime, make_generator
from musicnas.training.augment import AugmentConfig, SpectrogramAugment, mixup
from musicnas.training.evaluate import evaluate_split, predict_logits
from musicnas.utils.io import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics_epochs.jsonl"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a final training.

    Sized for the demo on 2 CPU cores (~670 train clips of 1x64x94): 12 epochs are ~8,000 training
    samples. Measured on this (shared) machine with 1 thread: 20.8 samples/s for a 6-layer, 24-channel
    macro net of 127 M MACs per clip (~6.5 min), 45 samples/s at --channels 12 (~3 min). Training
    time grows with MACs; the spaces' default widths cost 100-300 M per clip."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 0.05
    min_lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    grad_clip: float = 5.0  # the reference's clipping was a silent no-op; clipping on purpose here
    patience: int = 6  # stop after this many epochs without a better val accuracy (0: never)
    eval_batch_size: int = 128
    amp: bool = True  # mixed precision on CUDA (no effect on CPU)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs={self.epochs} (need >= 1)")
        if self.batch_size < 2:
            problems.append(f"batch_size={self.batch_size} (need >= 2 for batch norm)")
        if not self.lr > 0 or self.min_lr < 0 or self.min_lr > self.lr:
            problems.append(f"lr={self.lr}, min_lr={self.min_lr} (need lr > 0 and 0 <= min_lr <= lr)")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing={self.label_smoothing} (need 0 <= x < 1)")
        if self.patience < 0:
            problems.append(f"patience={self.patience} (need >= 0)")
        if self.augment.mixup_alpha < 0:
            problems.append(f"mixup_alpha={self.augment.mixup_alpha} (need >= 0)")
        if problems:
            raise MusicnasError("invalid training options: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MusicnasError(f"unknown training options {unknown}; known: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        aug = {k[len("augment_") :]: changes.pop(k) for k in list(changes) if k.startswith("augment_")}
        d = self.to_dict()
        d.update(changes)
        d["augment"].update(aug)
        return TrainConfig.from_dict(d)


def _config_differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out


def place_model(model: nn.Module, rt: Runtime) -> nn.Module:
    """Moves a model for training in ``channels_last`` (Runtime.prepare_model; ~1.45x for micro nets on
    CPU here). torch 2.13's CPU backward of a *strided 1x1* convolution in channels_last corrupts the
    heap; the spaces' factorized reduction therefore subsamples first (spaces/ops.py), and a model of
    another kind should do the same."""
    return rt.prepare_model(model)


def place_input(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Moves an input batch to match :func:`place_model`."""
    return rt.to_device(x)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _forward_train(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ENAS fixed nets return (logits, aux_logits | None) from forward_train; any other module just logits."""
    if hasattr(model, "forward_train"):
        return model.forward_train(x)
    return model(x), None


def _val_loss_acc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    t = torch.from_numpy(logits).double()
    y = torch.from_numpy(labels).long()
    return float(nn.functional.cross_entropy(t, y)), float((t.argmax(1) == y).double().mean())


def _model_cost(model: nn.Module, input_shape) -> dict | None:
    try:
        from musicnas.spaces.cost import count_cost

        cost = count_cost(copy.deepcopy(model).cpu().float().eval(), tuple(input_shape))
        return {"params": int(cost.params), "macs": int(cost.macs)}
    except Exception as exc:  # cost is informative; a model the counter cannot trace still trains
        log.debug("cost counting failed: %s", exc)
        return {"params": int(sum(p.numel() for p in model.parameters())), "macs": None}


def train_model(
    model: nn.Module,
    data,
    out_dir,
    config: TrainConfig,
    rt: Runtime,
    seed: int = 0,
    resume: bool = False,
    *,
    model_spec=None,
    arch=None,
    on_epoch_end: Callable[[dict], None] | None = None,
    show_progress: bool = True,
) -> dict:
    """Trains ``model`` (any ``nn.Module`` mapping ``[B, C, n_mels, frames]`` to logits) on ``data``'s
    train split, keeps the weights with the best val accuracy, evaluates them on val and test, and writes
    ``out_dir/summary.json``, ``metrics_epochs.jsonl`` and ``checkpoints/last.pt``. With ``model_spec``
    (see :class:`musicnas.export.bundle.ModelSpec`) or an ENAS ``arch`` it also writes the model bundle.

    ``on_epoch_end(record)`` is called after each epoch's checkpoint is safely written. Returns the
    summary dict. The model's initial weights are the caller's: seed before building it."""
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise MusicnasError(
            f"{out} already holds a training checkpoint; pass --resume {out} to continue it or choose a new --out"
        )
    train_idx = np.asarray(data.split_indices("train"))
    val_idx = np.asarray(data.split_indices("val"))
    if len(train_idx) < 2:
        raise MusicnasError(
            f"the train split of {data.root} has {len(train_idx)} clips; add audio or re-split"
        )
    if len(val_idx) == 0:
        raise MusicnasError(
            f"the val split of {data.root} is empty; prepare the data with a val fraction > 0"
        )
    labels = np.asarray(data.labels)
    val_labels = labels[val_idx]

    model = place_model(model, rt)
    batch_size = min(config.batch_size, len(train_idx))
    steps_per_epoch = len(train_idx) // batch_size  # drop the incomplete last batch (BN on tiny batches)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=total_steps, eta_min=config.min_lr
    )
    use_scaler = rt.is_cuda and config.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    augmenter = SpectrogramAugment(config.augment)
    generator = make_generator(seed)  # shuffling and augmentation
    torch.manual_seed(seed)  # dropout / drop-path inside the model use torch's global generator

    start_epoch = 0
    best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf}
    best_state = _cpu_state(model)
    history: list[dict] = []
    bad_epochs = 0
    stopped_early = False
    elapsed_before = 0.0
    if resume:
        state = load_checkpoint(ckpt_path)
        diffs = _config_differences(state.get("config", {}), config.to_dict())
        if state.get("seed") != seed:
            diffs.append(f"seed: checkpoint {state.get('seed')!r}, now {seed!r}")
        if diffs:
            raise MusicnasError(
                f"cannot resume {ckpt_path} with different settings ({'; '.join(diffs)}); "
                "use the original options or start a new --out"
            )
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if rt.is_cuda and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], rt.device)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise MusicnasError(
                f"checkpoint {ckpt_path} does not fit this model or is incomplete ({str(exc)[:200]}); start a new --out"
            ) from exc
        start_epoch = int(state["epoch"])
        best = dict(state["best"])
        best_state = state["best_state"]
        history = list(state["history"])
        bad_epochs = int(state["bad_epochs"])
        stopped_early = bool(state["stopped_early"])
        elapsed_before = float(state.get("elapsed", 0.0))
        log.info("resuming %s after epoch %d (best val acc %.4f)", out, start_epoch, best["val_acc"])

    t0 = time.perf_counter()
    epoch = start_epoch
    while epoch < config.epochs and not stopped_early:
        epoch_start = time.perf_counter()
        model.train()
        if hasattr(model, "set_progress"):
            model.set_progress(epoch / config.epochs)
        perm = torch.randperm(len(train_idx), generator=generator).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = progress(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not show_progress,
        )
        for step in bar:
            idx = train_idx[perm[step * batch_size : (step + 1) * batch_size]]
            x, y = data.get_batch(idx)
            x = augmenter(x, generator)
            lam, y_b = 1.0, None
            if config.augment.mixup_alpha > 0:
                x, y, y_b, lam = mixup(x, y, config.augment.mixup_alpha, generator)
            x = place_input(x, rt)
            y = y.to(rt.device)
            with rt.autocast(config.amp):
                logits, aux = _forward_train(model, x)
                loss = _mixed_loss(criterion, logits, y, y_b, lam, rt)
                if aux is not None:
                    loss = loss + float(getattr(model, "aux_weight", 0.4)) * _mixed_loss(
                        criterion, aux, y, y_b, lam, rt
                    )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = y.shape[0]
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise MusicnasError(
                    f"training diverged (loss {loss_value}) in epoch {epoch + 1}; lower --lr (now {config.lr})"
                )
            loss_sum += loss_value * n
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += n
            if show_progress:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        lr_now = optimizer.param_groups[0]["lr"]
        val_logits = predict_logits(model, data, val_idx, rt, config.eval_batch_size)
        val_loss, val_acc = _val_loss_acc(val_logits, val_labels)
        epoch += 1
        # Selection: best val accuracy, ties broken by lower val loss. Patience counts epochs without a
        # strictly better accuracy (a loss that creeps down on a plateau does not keep a run alive).
        bad_epochs = 0 if val_acc > best["val_acc"] else bad_epochs + 1
        if val_acc > best["val_acc"] or (val_acc == best["val_acc"] and val_loss < best["val_loss"]):
            best = {"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss}
            best_state = _cpu_state(model)
        if config.patience and bad_epochs >= config.patience and epoch < config.epochs:
            stopped_early = True
            log.info("early stop after epoch %d: no better val accuracy for %d epochs", epoch, bad_epochs)
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr_now,
            "time": time.perf_counter() - epoch_start,
        }
        history.append(record)
        log.info(
            "epoch %d/%d  train loss %.4f acc %.3f  val loss %.4f acc %.3f  lr %.4g  %.1fs",
            epoch,
            config.epochs,
            record["train_loss"],
            record["train_acc"],
            val_loss,
            val_acc,
            lr_now,
            record["time"],
        )
        save_checkpoint(
            ckpt_path,
            {
                "version": CHECKPOINT_VERSION,
                "config": config.to_dict(),
                "seed": seed,
                "epoch": epoch,
                "model": _cpu_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(rt.device) if rt.is_cuda else None,
                "best": best,
                "best_state": best_state,
                "history": history,
                "bad_epochs": bad_epochs,
                "stopped_early": stopped_early,
                "elapsed": elapsed_before + time.perf_counter() - t0,
            },
        )
        atomic_write_text(out / METRICS_FILE, "".join(_json_line(r) for r in history))
        if on_epoch_end is not None:
            on_epoch_end(record)

    train_seconds = elapsed_before + time.perf_counter() - t0
    model.load_state_dict(best_state)
    model.eval()
    classes = list(data.classes)
    val_metrics = evaluate_split(model, data, "val", rt, classes, config.eval_batch_size)
    test_metrics = None
    if len(data.split_indices("test")):
        test_metrics = evaluate_split(model, data, "test", rt, classes, config.eval_batch_size)
    summary = {
        "model": model_spec.to_dict(arch) if model_spec is not None else {"type": type(model).__name__},
        "epochs": config.epochs,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "stopped_early": stopped_early,
        "val": _headline(val_metrics),
        "test": _headline(test_metrics) if test_metrics is not None else None,
        "cost": _model_cost(model, data.input_shape),
        "train_seconds": train_seconds,
        "seed": seed,
        "config": config.to_dict(),
        "runtime": rt.describe(),
        "data": {
            "root": str(data.root),
            "classes": classes,
            "clips": {s: int(len(data.split_indices(s))) for s in ("train", "val", "test")},
        },
    }
    if model_spec is not None or arch is not None:
        from musicnas.export.bundle import save_bundle

        save_bundle(
            out, model, arch, data.config, classes, data.mean, data.std, summary, model_spec=model_spec
        )
    else:
        from musicnas.export.bundle import WEIGHTS_FILE, save_weights

        save_weights(out / WEIGHTS_FILE, model)
        atomic_write_json(out / "summary.json", summary)
        log.warning("no model spec given: wrote weights and summary but no loadable bundle to %s", out)
    return summary


def _mixed_loss(criterion, logits, y, y_b, lam: float, rt: Runtime) -> torch.Tensor:
    logits = logits.float()
    if y_b is None:
        return criterion(logits, y)
    return lam * criterion(logits, y) + (1.0 - lam) * criterion(logits, y_b.to(rt.device))


def _headline(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    keys = ("clips", "files", "tracks", "clip_accuracy", "file_accuracy", "track_accuracy", "macro_f1", "loss")
    return {k: metrics[k] for k in keys}


def _json_line(obj: dict) -> str:
    import json

    return json.dumps(obj) + "\n"


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
    """Builds the fixed network of ``arch`` (seeded), trains it with :func:`train_model` and writes the
    full model bundle to ``out_dir``. Returns the training summary."""
    from musicnas.export.bundle import ModelSpec, build_model
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
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_json(out / "arch.json", arch.to_json())
        atomic_write_json(
            out / TRAIN_CONFIG_FILE,
            {"config": config.to_dict(), "seed": seed, "model": spec.to_dict(arch), "data": str(data.root)},
        )
    torch.manual_seed(seed)  # weight initialisation
    model = build_model(spec, arch)
    if spec.channels is None and isinstance(getattr(model, "channels", None), int):
        spec.channels = model.channels  # record the width the space chose, for readers of bundle.json
    return train_model(
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
