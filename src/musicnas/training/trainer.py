"""Retraining a fixed network from scratch on the train split; resumable.

Optimiser as in ENAS's child training (enas-reference.md section 3: SGD with Nesterov momentum 0.9,
weight decay 5e-4 = 2 x the reference's L2 of 2.5e-4, gradient-norm clipping at 5) but with **one cosine
decay over the whole run, stepped per batch, instead of warm restarts**: a final training of a known
length has no use for restarts, and a single decay ends at the low learning rate where the best model
is usually found; the weights kept are the last epoch's by default (``select_by``; the best val epoch on
request). Label smoothing (0.1) and early stopping on val accuracy are additions for small audio
datasets; the aux head (micro) is trained with its weight (0.4), which the reference forgot.

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

from musicnas import distributed
from musicnas.data.identity import check_resume_data, data_identity
from musicnas.runs import RngState, RunDir, config_differences
from musicnas.runtime import MusicnasError, Runtime, make_generator
from musicnas.training.augment import AugmentConfig, SpectrogramAugment, mixup
from musicnas.training.evaluate import evaluate_split, predict_logits
from musicnas.utils.io import load_checkpoint, save_checkpoint
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics_epochs.jsonl"
CHECKPOINT_FORMAT = "musicnas-train-checkpoint"
CHECKPOINT_VERSION = 1
SELECT_BY = ("last", "val_acc", "val_loss")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a final training.

    Chosen on the real-music benchmark (docs/realmusic.md: 3 to 5 seeds per setting), where small data
    overfits: 24 epochs over overlapping 3-s clips (the features' 1-s hop), mixup 0.3, one cosine decay
    run to its end and its last epoch kept. On the demo's ~2,000 train clips of 1x64x94 that is ~48,000
    training samples: a few minutes for the cpu preset's 12-channel networks on 2 CPU cores. Training
    time grows with MACs."""

    # 24, not 16: with the last epoch kept, 53.3 +- 2.4 vs 51.2 +- 3.6% of real-music test files over the
    # same 5 search + train pipelines (paired +2.1 +- 3.8, within its spread; docs/realmusic.md)
    epochs: int = 24
    batch_size: int = 32
    lr: float = 0.05
    min_lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    grad_clip: float = 5.0  # the reference's clipping was a silent no-op; clipping on purpose here
    # Which epoch's weights are kept: "last" (the end of the cosine decay), "val_acc" (best val clip
    # accuracy, ties by val loss) or "val_loss". "last" by default: on real music, with 3-s clips of 128
    # val files, the best-val epoch is mostly the luckiest one, and keeping it labelled fewer test files
    # (44.9 vs 51.1% over 4 seeds, docs/realmusic.md); the learning rate is lowest at the end.
    select_by: str = "last"
    # Stop after this many epochs without a better val accuracy (0: never). Off by default: with one cosine
    # decay the best epochs are the late, low-rate ones, and an early stop while the rate is still high
    # keeps a worse model (docs/realmusic.md).
    patience: int = 0
    eval_batch_size: int = 128
    amp: bool = True  # autocast when the runtime's precision is bf16 (CUDA, CPUs with native bf16)
    # An exponential moving average of the weights (and batch-norm statistics), updated every step; when
    # on, validation, selection and the saved model use the average. 0 turns it off.
    ema_decay: float = 0.0
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
        if self.select_by not in SELECT_BY:
            problems.append(f"select_by={self.select_by!r} (choose one of {', '.join(SELECT_BY)})")
        if self.patience < 0:
            problems.append(f"patience={self.patience} (need >= 0)")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay={self.ema_decay} (need 0 <= x < 1; 0 turns the average off)")
        if self.augment.gain < 0 or self.augment.tilt < 0:
            problems.append(f"gain={self.augment.gain}, tilt={self.augment.tilt} (need >= 0)")
        if self.augment.mixup_alpha < 0:
            problems.append(f"mixup_alpha={self.augment.mixup_alpha} (need >= 0)")
        if problems:
            raise MusicnasError("invalid training options: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_record(cls, d: dict) -> TrainConfig:
        """A config written by a run: one recorded before ``select_by`` existed kept the best val accuracy."""
        return cls.from_dict({"select_by": "val_acc", **d})

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

        return count_cost(copy.deepcopy(model).cpu().float().eval(), tuple(input_shape)).to_dict()
    except Exception as exc:  # cost is informative; a model the counter cannot trace still trains
        log.debug("cost counting failed: %s", exc)
        return {"params": int(sum(p.numel() for p in model.parameters())), "macs": None}


class WeightAverage:
    """An exponential moving average of a model's state (``avg = decay·avg + (1−decay)·current`` for
    floating-point tensors; integer buffers such as batch norm's step count are copied).

    ``torch.optim.swa_utils.AveragedModel`` with buffers would lerp integer buffers too (an error), and
    it keeps a second copy of the module; a dict of tensors is all that selection and checkpoints need."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        floats = [k for k, v in self.state.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.state[k] for k in floats], [current[k].detach() for k in floats],
                             1.0 - self.decay)  # fmt: skip
        for k, v in self.state.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in self.state.items():
            v.copy_(state[k])

    def swapped_into(self, model: nn.Module):
        """A context in which ``model`` holds the averaged state; its own state is restored after."""
        return _SwappedState(model, self.state)


class _SwappedState:
    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor]):
        self.model, self.state = model, state

    def __enter__(self):
        self.saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.state)
        return self.model

    def __exit__(self, *exc):
        self.model.load_state_dict(self.saved)
        return False


class Training:
    """One resumable training of ``model`` into ``out_dir``: :meth:`resume`, :meth:`run_epoch` until
    :attr:`done`, :meth:`finish`. :func:`train_model` drives it.

    Under torchrun (``musicnas.distributed``) every rank draws the same global batch and augmentation,
    trains on its shard and averages gradients; only rank 0 writes. ``on_step({"epoch", "step", "loss",
    "acc"})`` sees every step's global-batch loss."""

    def __init__(self, model: nn.Module, data, out_dir, config: TrainConfig, rt: Runtime, seed: int = 0,
                 show_progress: bool = True, on_step: Callable[[dict], None] | None = None):  # fmt: skip
        self.out = Path(out_dir)
        self.run_dir = RunDir(self.out, (METRICS_FILE,), writes=distributed.is_main())
        self.on_step = on_step
        self.ckpt_path = self.out / CHECKPOINT
        self.data, self.config, self.rt, self.seed = data, config, rt, seed
        self.show_progress = show_progress
        self.train_idx = np.asarray(data.split_indices("train"))
        self.val_idx = np.asarray(data.split_indices("val"))
        if len(self.train_idx) < 2:
            raise MusicnasError(
                f"the train split of {data.root} has {len(self.train_idx)} clips; add audio or re-split"
            )
        if len(self.val_idx) == 0:
            raise MusicnasError(
                f"the val split of {data.root} is empty; prepare the data with a val fraction > 0"
            )
        self.val_labels = np.asarray(data.labels)[self.val_idx]
        self.model = model = distributed.prepare_model(place_model(model, rt), rt)
        self.batch_size = min(config.batch_size, len(self.train_idx))
        distributed.local_batch_size(self.batch_size, "training batch size")
        # drop the incomplete last batch (BN on tiny batches)
        self.steps_per_epoch = len(self.train_idx) // self.batch_size
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
            weight_decay=config.weight_decay,
        )  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.steps_per_epoch * config.epochs, eta_min=config.min_lr
        )
        use_scaler = rt.is_cuda and config.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.augmenter = SpectrogramAugment(config.augment)
        self.generator = make_generator(seed)  # shuffling and augmentation
        torch.manual_seed(seed)  # dropout / drop-path inside the model use torch's global generator
        self.epoch = 0
        self.best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf}
        self.best_state = _cpu_state(model)
        self.average = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
        self.history: list[dict] = []
        self.bad_epochs = 0
        self.top_val_acc = -1.0  # the best val accuracy so far, for patience
        self.stopped_early = False
        self.elapsed_before = 0.0
        self.t0 = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs or self.stopped_early

    def start(self) -> None:
        """A new run: refuses to overwrite one, starts an empty metrics file."""
        if self.ckpt_path.exists():
            raise MusicnasError(
                f"{self.out} already holds a training checkpoint; pass --resume {self.out} to continue it or "
                "choose a new --out"
            )
        self.run_dir.reset_metrics()

    def resume(self) -> None:
        """Continues from ``checkpoints/last.pt``, refusing other settings or another seed."""
        state = RunDir.check_record(
            load_checkpoint(self.ckpt_path), CHECKPOINT_FORMAT, CHECKPOINT_VERSION, self.ckpt_path,
            "start a new --out",
        )  # fmt: skip
        # a checkpoint written before select_by existed kept the best val accuracy
        diffs = config_differences({"select_by": "val_acc", **state.get("config", {})}, self.config.to_dict())
        if state.get("seed") != self.seed:
            diffs.append(f"seed: checkpoint {state.get('seed')!r}, now {self.seed!r}")
        if diffs:
            raise MusicnasError(
                f"cannot resume {self.ckpt_path} with different settings ({'; '.join(diffs)}); "
                "use the original options or start a new --out"
            )
        check_resume_data(state.get("data"), self.data, self.ckpt_path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.generator.set_state(state["generator"])
            if self.average is not None:
                self.average.load_state(state["average"])
            RngState.restore(state, self.rt)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise MusicnasError(
                f"checkpoint {self.ckpt_path} does not fit this model or is incomplete ({str(exc)[:200]}); "
                "start a new --out"
            ) from exc
        self.epoch = int(state["epoch"])
        self.best = dict(state["best"])
        self.best_state = state["best_state"]
        self.history = list(state["history"])
        self.bad_epochs = int(state["bad_epochs"])
        self.top_val_acc = float(
            state.get("top_val_acc", max((r["val_acc"] for r in self.history), default=-1.0))
        )
        self.stopped_early = bool(state["stopped_early"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.run_dir.truncate_metrics(state["metric_sizes"])
        log.info("resuming %s after epoch %d (best val acc %.4f)", self.out, self.epoch, self.best["val_acc"])

    def _train_steps(self) -> tuple[float, float]:
        """One pass over the train split; (mean loss, accuracy)."""
        cfg, rt, model = self.config, self.rt, self.model
        perm = torch.randperm(len(self.train_idx), generator=self.generator).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = progress(range(self.steps_per_epoch), desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not self.show_progress)  # fmt: skip
        for step in bar:
            idx = self.train_idx[perm[step * self.batch_size : (step + 1) * self.batch_size]]
            x, y = self.data.get_batch(idx)
            x = self.augmenter(x, self.generator)
            lam, y_b = 1.0, None
            if cfg.augment.mixup_alpha > 0:
                x, y, y_b, lam = mixup(x, y, cfg.augment.mixup_alpha, self.generator)
            # every rank drew the same global batch and augmentation (mixup pairs clips across shards);
            # each trains on its own rows of it
            x, y, y_b = (None if t is None else distributed.shard(t) for t in (x, y, y_b))
            x = place_input(x, rt)
            y = y.to(rt.device)
            with rt.autocast(cfg.amp):
                logits, aux = _forward_train(model, x)
                loss = _mixed_loss(self.criterion, logits, y, y_b, lam, rt)
                if aux is not None:
                    loss = loss + float(getattr(model, "aux_weight", 0.4)) * _mixed_loss(
                        self.criterion, aux, y, y_b, lam, rt
                    )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            distributed.average_gradients(model)
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.average is not None:
                self.average.update(model)
            step_loss, step_correct, n = distributed.all_sum(
                [float(loss.detach()) * y.shape[0], int((logits.detach().argmax(1) == y).sum()), y.shape[0]]
            )
            loss_value, n = step_loss / n, int(n)
            if not math.isfinite(loss_value):
                raise MusicnasError(
                    f"training diverged (loss {loss_value}) in epoch {self.epoch + 1}; lower --lr (now {cfg.lr})"
                )
            loss_sum += loss_value * n
            correct += int(step_correct)
            seen += n
            if self.on_step is not None:
                self.on_step({"epoch": self.epoch, "step": step, "loss": loss_value, "acc": step_correct / n})
            if self.show_progress:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    def run_epoch(self) -> dict:
        """Trains one epoch, selects, checkpoints; returns the epoch's metrics row."""
        cfg = self.config
        epoch_start = time.perf_counter()
        self.model.train()
        if hasattr(self.model, "set_progress"):
            self.model.set_progress(self.epoch / cfg.epochs)
        train_loss, train_acc = self._train_steps()
        lr_now = self.optimizer.param_groups[0]["lr"]
        if self.average is None:
            val_logits = self._val_logits()
        else:
            with self.average.swapped_into(self.model):
                val_logits = self._val_logits()
        val_loss, val_acc = _val_loss_acc(val_logits, self.val_labels)
        self.epoch += 1
        # Patience counts epochs without a strictly better val accuracy than any before (a loss that
        # creeps down on a plateau does not keep a run alive), whatever the selection rule.
        self.bad_epochs = 0 if val_acc > self.top_val_acc else self.bad_epochs + 1
        self.top_val_acc = max(self.top_val_acc, val_acc)
        if self._selects(val_acc, val_loss):
            self.best = {"epoch": self.epoch, "val_acc": val_acc, "val_loss": val_loss}
            if self.average is None:
                self.best_state = _cpu_state(self.model)
            else:
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.average.state.items()}
        if cfg.patience and self.bad_epochs >= cfg.patience and self.epoch < cfg.epochs:
            self.stopped_early = True
            log.info(
                "early stop after epoch %d: no better val accuracy for %d epochs", self.epoch, self.bad_epochs
            )
        record = {"epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                  "val_acc": val_acc, "lr": lr_now, "time": time.perf_counter() - epoch_start}  # fmt: skip
        self.history.append(record)
        log.info(
            "epoch %d/%d  train loss %.4f acc %.3f  val loss %.4f acc %.3f  lr %.4g  %.1fs",
            self.epoch, cfg.epochs, train_loss, train_acc, val_loss, val_acc, lr_now, record["time"],
        )  # fmt: skip
        self.run_dir.append(METRICS_FILE, record)
        self._checkpoint()
        return record

    def _selects(self, val_acc: float, val_loss: float) -> bool:
        """Whether this epoch's weights replace the kept ones under ``config.select_by``."""
        rule, best = self.config.select_by, self.best
        if rule == "last":
            return True
        if rule == "val_loss":
            return val_loss < best["val_loss"]
        return val_acc > best["val_acc"] or (val_acc == best["val_acc"] and val_loss < best["val_loss"])

    def _val_logits(self) -> np.ndarray:
        """Validation logits; under torchrun each rank predicts its shard and all gather them."""
        mine = distributed.shard(self.val_idx)
        logits = predict_logits(self.model, self.data, mine, self.rt, self.config.eval_batch_size)
        if distributed.world_size() == 1:
            return logits
        if len(mine) == 0:  # fewer val clips than processes
            logits = np.zeros((0, int(self.data.num_classes)), dtype=np.float32)
        return distributed.gather_rows(torch.from_numpy(np.asarray(logits)), len(self.val_idx)).numpy()

    def _checkpoint(self) -> None:
        if not distributed.is_main():  # every rank holds the same state; rank 0 writes it
            return
        state = RunDir.record(
            CHECKPOINT_FORMAT,
            CHECKPOINT_VERSION,
            config=self.config.to_dict(),
            seed=self.seed,
            data=data_identity(self.data),
            epoch=self.epoch,
            model=_cpu_state(self.model),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            generator=self.generator.get_state(),
            average=None if self.average is None else {k: v.cpu() for k, v in self.average.state.items()},
            best=self.best,
            best_state=self.best_state,
            history=self.history,
            bad_epochs=self.bad_epochs,
            top_val_acc=self.top_val_acc,
            stopped_early=self.stopped_early,
            elapsed=self.elapsed_before + time.perf_counter() - self.t0,
            metric_sizes=self.run_dir.metric_sizes(),
            **RngState.capture(self.rt),
        )
        save_checkpoint(self.ckpt_path, state)

    def finish(self, model_info: dict | None = None) -> dict:
        """Loads the best weights into the model, evaluates them on val and test; the summary."""
        data, cfg, model = self.data, self.config, self.model
        train_seconds = self.elapsed_before + time.perf_counter() - self.t0
        model.load_state_dict(self.best_state)
        model.eval()
        classes = list(data.classes)
        val_metrics = evaluate_split(model, data, "val", self.rt, classes, cfg.eval_batch_size)
        test_metrics = None
        if len(data.split_indices("test")):
            test_metrics = evaluate_split(model, data, "test", self.rt, classes, cfg.eval_batch_size)
        return {
            "model": model_info if model_info is not None else {"type": type(model).__name__},
            "epochs": cfg.epochs,
            "epochs_run": len(self.history),
            "best_epoch": self.best["epoch"],
            "stopped_early": self.stopped_early,
            "val": _headline(val_metrics),
            "test": _headline(test_metrics) if test_metrics is not None else None,
            "cost": _model_cost(model, data.input_shape),
            "train_seconds": train_seconds,
            "seed": self.seed,
            "config": cfg.to_dict(),
            "runtime": self.rt.describe(),
            "data": {
                "root": str(data.root),
                "classes": classes,
                "clips": {s: int(len(data.split_indices(s))) for s in ("train", "val", "test")},
                "identity": data_identity(data),
            },
        }


def train_model(
    model: nn.Module,
    data,
    out_dir,
    config: TrainConfig,
    rt: Runtime,
    seed: int = 0,
    resume: bool = False,
    *,
    model_info: dict | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    show_progress: bool = True,
) -> dict:
    """Trains ``model`` (any ``nn.Module`` mapping ``[B, C, n_mels, frames]`` to logits) on ``data``'s
    train split, keeps the weights of the epoch ``config.select_by`` picks (left in ``model``), evaluates them on val
    and test, and writes ``out_dir/metrics_epochs.jsonl`` and ``checkpoints/last.pt``. Writing the model
    itself is the caller's (``musicnas.retrain`` writes the bundle).

    ``on_epoch_end(record)`` is called after each epoch's checkpoint is safely written. Returns the
    summary dict (``model_info`` is its ``model`` entry). The model's initial weights are the caller's:
    seed before building it."""
    training = Training(model, data, out_dir, config, rt, seed, show_progress)
    if resume:
        training.resume()
    else:
        training.start()
    while not training.done:
        record = training.run_epoch()
        if on_epoch_end is not None:
            on_epoch_end(record)
    return training.finish(model_info)


def _mixed_loss(criterion, logits, y, y_b, lam: float, rt: Runtime) -> torch.Tensor:
    logits = logits.float()
    if y_b is None:
        return criterion(logits, y)
    return lam * criterion(logits, y) + (1.0 - lam) * criterion(logits, y_b.to(rt.device))


def _headline(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    keys = (
        "clips",
        "files",
        "tracks",
        "clip_accuracy",
        "file_accuracy",
        "track_accuracy",
        "macro_f1",
        "loss",
    )
    return {k: metrics[k] for k in keys}
