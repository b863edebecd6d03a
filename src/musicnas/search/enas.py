"""The alternating ENAS search loop (enas-reference.md §3), its run directory and checkpoint/resume.

Each epoch: (1) train the shared weights for one epoch, one architecture sampled from the controller per
minibatch; (2) train the controller with REINFORCE on validation minibatches, shared weights frozen.
At the end, architectures are derived from the trained controller (``search/derive.py``).

Everything random is drawn from explicit generators made from the run's seed: the controller's own
``torch.Generator``, and per-epoch data orders derived from ``(seed, stream, epoch)``, so a checkpoint
only needs the position (epoch, step) and the generator states to continue bit-for-bit.
The loop is space-agnostic: it talks to the space through ``musicnas.spaces.get_space_module`` and to
the controller through the :class:`~musicnas.search.controller.Controller` contract.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicnas import distributed
from musicnas import runtime as runtime_mod
from musicnas.data.identity import check_resume_data, data_identity
from musicnas.runs import RngState, RunDir, merge_resume
from musicnas.runtime import MusicnasError, Runtime, derive_seed, stream_rng
from musicnas.search.config import SearchConfig
from musicnas.search.controller import Controller, make_controller
from musicnas.search.policy import child_sample, interleaved_update, normalized_advantage
from musicnas.search.rewards import make_reward
from musicnas.search.scoring import accuracy_over, calibration_indices, scoring_mode  # noqa: F401
from musicnas.spaces.cost import Cost, count_cost
from musicnas.utils.io import atomic_write_json, ensure_dir, load_checkpoint, read_json, save_checkpoint
from musicnas.utils.logging import progress

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "musicnas-search-checkpoint"
CONFIG_FORMAT = "musicnas-search-config"
FORMAT_VERSION = 1
METRIC_FILES = ("metrics_steps.jsonl", "metrics_epochs.jsonl", "controller_probs.jsonl")
# config keys that may change when a run is resumed (they do not change what has been computed so far)
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "checkpoint_every_steps", "tensorboard", "data", "cache_dir")

StepCallback = Callable[[dict], None]
SEEN_LIMIT_MIN, SEEN_LIMIT_FACTOR = 500, 50


def rank_seen(seen: dict) -> list[tuple[str, dict]]:
    """Seen architectures best first: mean score, then more evaluations, then key (repeatable)."""
    return sorted(
        seen.items(), key=lambda kv: (-kv[1]["sum"] / max(kv[1]["count"], 1), -kv[1]["count"], kv[0])
    )


@dataclass
class LoopState:
    """Where the loop is, plus everything it accumulates that is not inside a module or optimiser."""

    epoch: int = 0  # epoch in progress
    child_step: int = 0  # next child step to run in `epoch`
    global_step: int = 0  # child steps + controller updates so far (TensorBoard x-axis)
    child_steps_total: int = 0
    baseline: float | None = None
    reward_var: float | None = None  # EMA of the squared advantage (reward_normalize)
    child_loss_sum: float = 0.0
    child_acc_sum: float = 0.0
    child_count: int = 0
    seen: dict = field(default_factory=dict)  # arch key -> {"flat": [...], "sum": score sum, "count": n}
    elapsed: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def batches(order: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    """Splits an index order into minibatches; a set smaller than one batch is one batch."""
    if len(order) <= batch_size:
        return [order] if len(order) else []
    n = len(order) // batch_size if drop_last else math.ceil(len(order) / batch_size)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n)]


def epoch_order(indices: np.ndarray, seed: int, stream: str, epoch: int) -> np.ndarray:
    """A permutation of ``indices`` that depends only on (seed, stream, epoch)."""
    rng = stream_rng(seed, stream, epoch)
    return indices[rng.permutation(len(indices))]


def reinforce_update(
    controller: Controller,
    optimizer: torch.optim.Optimizer | None,
    evaluate: Callable[[Any], tuple[float, float]],
    baseline: float | None,
    archs: int,
    entropy_weight: float = 1e-4,
    skip_weight: float = 0.8,
    baseline_decay: float = 0.99,
    reward_var: float | None = None,
) -> tuple[float, dict]:
    """One controller update (REINFORCE with an EMA baseline, enas-reference.md §3).

    Samples ``archs`` architectures; ``evaluate(arch) -> (reward, accuracy)``. Each gets
    ``reward + entropy_weight · entropy``; the baseline moves towards it (decay ``baseline_decay``) before
    its advantage is taken, as in the reference; the loss ``−log π(a) · (R − b) + skip_weight · KL`` is
    averaged over the architectures. ``optimizer=None`` only evaluates (no gradient step).
    ``reward_var`` (not None: reward normalisation on) is an EMA of the squared advantage, decayed like
    the baseline; each advantage is divided by its square root (the new value is ``stats["reward_var"]``).
    Returns the new baseline and per-architecture statistics."""
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    stats = {"loss": 0.0, "accs": [], "rewards": [], "entropies": [], "skip_rates": []}
    for _ in range(archs):
        sample = controller.sample()
        reward, acc = evaluate(sample.arch)
        entropy = float(sample.entropy.detach())
        # The reference's entropy bonus is a one-sample estimate (-log p · p per decision); we add the
        # exact entropy of every decision's distribution, detached, as a reward bonus like it.
        reward = float(reward) + entropy_weight * entropy
        # The reference starts the baseline at 0, which makes every early advantage positive (it
        # reinforces whatever is sampled first); we start it at the first reward.
        baseline = reward if baseline is None else baseline
        baseline = baseline_decay * baseline + (1.0 - baseline_decay) * reward
        advantage = reward - baseline
        if reward_var is not None:
            advantage, reward_var = normalized_advantage(advantage, reward_var, baseline_decay)
        if optimizer is not None:
            loss = -sample.log_prob * advantage + skip_weight * sample.skip_penalty
            (loss / archs).backward()  # gradients of the sampled architectures are averaged
            stats["loss"] += float(loss.detach()) / archs
        stats["accs"].append(float(acc))
        stats["rewards"].append(reward)
        stats["entropies"].append(entropy)
        if "skip_rate" in sample.stats:
            stats["skip_rates"].append(float(sample.stats["skip_rate"]))
    if optimizer is not None:
        optimizer.step()
    stats["reward_var"] = reward_var
    return baseline, stats


class SearchRun:
    """One ENAS search in one run directory. Use :func:`run_search`.

    ``controller`` replaces the LSTM controller of ``config`` (e.g. the uniform controller of random
    search with weight sharing); a controller without parameters is never updated, only sampled."""

    def __init__(
        self,
        config: SearchConfig,
        data,
        out_dir: str | os.PathLike,
        rt: Runtime,
        controller: Controller | None = None,
        callback: StepCallback | None = None,
    ):
        self.config = config.validate()
        self.data = data
        self.out = Path(out_dir)
        self.run_dir = RunDir(self.out, METRIC_FILES, writes=distributed.is_main())
        self.rt = rt
        self.callback = callback
        self.space = search_space(self.config)
        from musicnas.spaces import get_space_module

        self.space_module = get_space_module(self.space.type)
        self.input_shape = tuple(int(v) for v in data.input_shape)
        self.num_classes = int(data.num_classes)
        # Initial weights come from the global torch generator inside the modules' constructors: seed it
        # from the run's seed in a forked RNG scope, so the init is repeatable and global state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(config.seed, "search.init"))
            self.model = rt.prepare_model(
                self.space_module.SearchNet(
                    self.space,
                    in_channels=self.input_shape[0],
                    num_classes=self.num_classes,
                    dropout=config.child_dropout,
                )
            )
            if controller is None:
                controller = make_controller(
                    self.space,
                    seed=derive_seed(config.seed, "search.controller"),
                    policy=config.controller,
                    **config.controller_options,
                )
        self.controller: Controller = controller
        # row timestamps; run() resets the clock to include a resumed run's elapsed time
        self._t0 = time.perf_counter()
        distributed.check_space(self.space)
        # under torchrun: batch norm over the global batch, rank 0's weights (identity in one process)
        self.model = distributed.prepare_model(self.model, rt)
        self.child_opt = torch.optim.SGD(
            self.model.parameters(),
            lr=config.child_lr_max,
            momentum=config.child_momentum,
            nesterov=True,
            weight_decay=config.child_weight_decay,
        )
        # stepped once per epoch: the reference's cosine is a function of the epoch counter
        self.child_sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.child_opt, T_0=config.child_lr_t0, T_mult=config.child_lr_t_mul, eta_min=config.child_lr_min
        )
        params = list(self.controller.parameters())
        self.controller_opt = (
            torch.optim.Adam(
                params,
                lr=config.controller_lr,
                betas=(config.controller_beta1, 0.999),
                eps=config.controller_eps,
            )
            if params
            else None  # nothing to learn (uniform controller): the controller phase only scores
        )
        self.reward_fn = make_reward(config.reward, config.cost_metric, config.cost_target)
        self.cost_cache: dict[str, Cost] = {}
        self.latency_model = None  # the latency table, when the reward is on latency (musicnas.latency)
        if self.reward_fn.needs_cost and config.cost_metric == "latency":
            from musicnas.latency.table import model_for_search

            self.latency_model = model_for_search(
                config, self.space, self.input_shape, self.num_classes, getattr(data, "config", None)
            )
        self.state = LoopState()
        self.train_idx = np.asarray(data.split_indices("train"), dtype=np.int64)
        self.val_idx = np.asarray(data.split_indices("val"), dtype=np.int64)
        if len(self.train_idx) < 2:
            raise MusicnasError(
                "the data has fewer than 2 training clips; add audio or lower the val/test fractions"
            )
        if len(self.val_idx) < 1:
            raise MusicnasError(
                "the data has no validation clips; the controller is rewarded on the val split"
            )
        self.val_batch_size = config.controller_batch_size or config.batch_size
        # each child batch is split over the torchrun processes (a set smaller than a batch is one batch)
        distributed.local_batch_size(min(config.batch_size, len(self.train_idx)), "search batch size")

    # ---------------------------------------------------------------------------------------------
    # run directory
    def config_record(self) -> dict:
        data = self.data
        return RunDir.record(
            CONFIG_FORMAT,
            FORMAT_VERSION,
            search=self.config.to_dict(),
            space=self.space.to_dict(),
            data={
                "path": self.config.data,
                "cache": str(getattr(data, "root", "")),
                "classes": list(getattr(data, "classes", [])),
                "input_shape": list(self.input_shape),
                "train_clips": int(len(self.train_idx)),
                "val_clips": int(len(self.val_idx)),
                "identity": data_identity(data),
            },
            runtime=self.rt.describe(),
            **({"controller": self.controller.kind} if self.controller.kind else {}),
        )

    def _log_row(self, name: str, prefix: str, row: dict, step: int) -> None:
        self.run_dir.append(name, row)
        self.run_dir.scalars(prefix, row, step)

    # ---------------------------------------------------------------------------------------------
    # checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def save(self) -> None:
        if not distributed.is_main():  # every rank holds the same state; rank 0 writes it
            return
        for name in METRIC_FILES:  # rows are flushed per write; the sizes mark the checkpoint's position
            (self.out / name).touch()
        state = RunDir.record(
            CHECKPOINT_FORMAT,
            FORMAT_VERSION,
            loop=self.state.to_dict(),
            model=self.model.state_dict(),
            child_optimizer=self.child_opt.state_dict(),
            child_scheduler=self.child_sched.state_dict(),
            controller=self.controller.state_dict(),
            controller_optimizer=self.controller_opt.state_dict() if self.controller_opt else {},
            controller_generator=self.controller.generator_state(),
            # not needed to continue bit for bit (costs are computed RNG-neutrally), but a resumed run
            # should not redo the cost counting of every architecture it has met
            costs={key: cost.to_dict() for key, cost in self.cost_cache.items()},
            metric_sizes=self.run_dir.metric_sizes(),
            **RngState.capture(self.rt),
        )
        self.run_dir.flush()
        save_checkpoint(self.checkpoint_path, state)  # atomic: a crash keeps the previous good one

    def load(self) -> None:
        state = RunDir.check_record(
            load_checkpoint(self.checkpoint_path),
            CHECKPOINT_FORMAT,
            FORMAT_VERSION,
            self.checkpoint_path,
            "start a new run with another --out",
        )
        try:
            self.model.load_state_dict(state["model"])
            self.child_opt.load_state_dict(state["child_optimizer"])
            self.child_sched.load_state_dict(state["child_scheduler"])
            self.controller.load_state_dict(state["controller"])
            if self.controller_opt is not None:
                self.controller_opt.load_state_dict(state["controller_optimizer"])
            self.controller.set_generator_state(state["controller_generator"])
            RngState.restore(state, self.rt)
            self.state = LoopState(**state["loop"])
            self.cost_cache = {key: Cost.from_dict(c) for key, c in state.get("costs", {}).items()}
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise MusicnasError(
                f"checkpoint {self.checkpoint_path} does not match this search's space/config ({exc}); "
                "resume with the run's own config.json or start a new run"
            ) from exc
        self.run_dir.truncate_metrics(state.get("metric_sizes", {}))

    # ---------------------------------------------------------------------------------------------
    # scoring, used by the loop, deriving (search/derive.py) and the baselines' ranking study
    def score_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The clips ``indices`` as an input batch on the run's device, with their labels."""
        x, y = self.data.get_batch(indices)
        return self.rt.to_device(x), y.to(self.rt.device)

    def accuracy(self, arch, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy of ``arch`` with the shared weights on one batch (the run's batch-norm mode)."""
        return accuracy_over(self, arch, [(x, y)])

    def accuracy_on(self, arch, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Clip-weighted accuracy of ``arch`` over ``batches``, batch norm recalibrated once for all."""
        return accuracy_over(self, arch, batches)

    @functools.cached_property
    def calibration_inputs(self) -> list[torch.Tensor]:
        """The training inputs batch norm is recalibrated on (``controller_bn = "recalibrate"``)."""
        cfg = self.config
        chosen = calibration_indices(self.train_idx, cfg.seed, cfg.batch_size, cfg.bn_calibration_batches)
        return [self.score_batch(indices)[0] for indices in chosen]

    def child_batches(self, epoch: int) -> list[np.ndarray]:
        order = epoch_order(self.train_idx, self.config.seed, "search.train_order", epoch)
        # whole batches only: batch norm in train mode needs > 1 sample, and a ragged last batch would
        # weigh a few clips more; the order changes every epoch, so every clip is still used
        out = batches(order, self.config.batch_size, drop_last=True)
        if self.config.child_steps_per_epoch:
            out = [out[i % len(out)] for i in range(self.config.child_steps_per_epoch)]
        return out

    def val_batches(self, epoch: int, stream: str = "search.val_order") -> list[np.ndarray]:
        order = epoch_order(self.val_idx, self.config.seed, stream, epoch)
        return batches(order, self.val_batch_size, drop_last=False)

    def cost(self, arch) -> Cost:
        """The cost of the network ``musicnas train`` would build for ``arch`` (cached per key).

        Built in a forked RNG scope: its weight init must not draw from torch's global generator, which
        the search's dropout draws from, or scoring an architecture (deriving every epoch, a resumed
        run meeting it again) would change the search."""
        key = arch.key()
        if key not in self.cost_cache:
            with torch.random.fork_rng(devices=[]):
                net = self.space_module.FixedNet(
                    arch, in_channels=self.input_shape[0], num_classes=self.num_classes
                )
            net.eval()
            cost = count_cost(net, self.input_shape)
            if self.latency_model is not None:
                cost = dataclasses.replace(cost, latency_ms=self.latency_model.predict(arch))
            self.cost_cache[key] = cost
        return self.cost_cache[key]

    def reward(self, accuracy: float, arch) -> float:
        cost = self.cost(arch) if self.reward_fn.needs_cost else None
        return float(self.reward_fn(accuracy, arch, cost))

    def child_step(self, epoch: int, step: int, indices: np.ndarray, bar) -> None:
        cfg = self.config
        with torch.no_grad():
            sample = child_sample(self, epoch)
        arch = distributed.agree_arch(sample.arch)  # every rank trains rank 0's architecture
        x, y = self.score_batch(distributed.shard(indices))
        self.model.train()
        self.child_opt.zero_grad(set_to_none=True)
        with self.rt.autocast():
            logits = self.model(x, arch)
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        distributed.average_gradients(self.model)  # the grads this architecture used, one all-reduce
        # The reference's clipping was a no-op (its clipped gradients were never applied); we clip at
        # 5 on purpose: one bad sampled architecture must not blow up the shared weights.
        if cfg.child_grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.child_grad_clip)
        self.child_opt.step()
        correct, loss_value, total = distributed.all_sum(
            [int((logits.detach().argmax(dim=1) == y).sum()), float(loss.detach()) * len(y), len(y)]
        )
        acc, loss_value = correct / total, loss_value / total
        if not math.isfinite(loss_value):
            raise MusicnasError(
                f"child loss became {loss_value} at epoch {epoch} step {step}; lower --config child_lr_max "
                "or check the input features"
            )
        st = self.state
        st.child_loss_sum += loss_value
        st.child_acc_sum += acc
        st.child_count += 1
        st.child_step = step + 1
        st.child_steps_total += 1
        st.global_step += 1
        row = {
            "epoch": epoch,
            "step": step,
            "phase": "child",
            "loss": loss_value,
            "acc": acc,
            "entropy": float(sample.entropy),
            "lr": self.child_opt.param_groups[0]["lr"],
            "time": self._now(),
        }
        if "skip_rate" in sample.stats:
            row["skip_rate"] = sample.stats["skip_rate"]
        self._log_row("metrics_steps.jsonl", "child", row, st.global_step)
        bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{acc:.2f}", refresh=False)
        bar.update(1)

    def controller_phase(self, epoch: int, bar) -> dict:
        """REINFORCE updates on validation minibatches; returns the phase's means for the epoch row."""
        cfg = self.config
        val = self.val_batches(epoch)
        learn = epoch >= cfg.controller_start_epoch
        optimizer = self.controller_opt if learn else None
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0
        updates = cfg.controller_updates_per_epoch if learn else 1  # warm-up: one pass, for the metrics
        accs, rewards, entropies, skip_rates = [], [], [], []
        for update in range(updates):
            stats = self.policy_update(epoch, update, val, optimizer, phase="controller")
            accs += stats["accs"]
            rewards += stats["rewards"]
            entropies += stats["entropies"]
            skip_rates += stats["skip_rates"]
            bar.set_postfix(reward=f"{np.mean(stats['rewards']):.3f}", baseline=f"{self.state.baseline:.3f}",
                            refresh=False)  # fmt: skip
            bar.update(1)
            if self.callback is not None:
                self.callback(
                    {
                        "epoch": epoch,
                        "step": update,
                        "phase": "controller",
                        "global_step": self.state.global_step,
                    }
                )
        return {
            "val_acc": float(np.mean(accs)),
            "reward": float(np.mean(rewards)),
            "baseline": self.state.baseline,
            "entropy": float(np.mean(entropies)),
            "skip_rate": float(np.mean(skip_rates)) if skip_rates else None,
            "controller_lr": lr,
        }

    def policy_update(self, epoch: int, update: int, val: list[np.ndarray], optimizer, phase: str) -> dict:
        """One REINFORCE update (``optimizer=None``: only scores), logged as one ``phase`` row.

        ``update`` picks the validation batches: with ``reward_batches = 0`` every architecture gets its
        own batch (ENAS); with k >= 1 all of the update's architectures are scored on the same k batches."""
        cfg = self.config
        self.controller.train()
        archs = cfg.controller_archs_per_update
        if cfg.reward_batches:
            fixed = [self.score_batch(val[(update * cfg.reward_batches + j) % len(val)])
                     for j in range(cfg.reward_batches)]  # fmt: skip
        position = update * archs

        def evaluate(arch) -> tuple[float, float]:
            nonlocal position
            arch = distributed.agree_arch(arch)  # every rank scores rank 0's architecture
            if cfg.reward_batches:
                acc = self.accuracy_on(arch, fixed)
            else:
                acc = self.accuracy(arch, *self.score_batch(val[position % len(val)]))
                position += 1
            reward = self.reward(acc, arch)
            self._remember(arch, reward)
            return reward, acc

        self.state.baseline, stats = reinforce_update(
            self.controller,
            optimizer,
            evaluate,
            self.state.baseline,
            archs=archs,
            entropy_weight=cfg.entropy_weight,
            skip_weight=cfg.skip_weight,
            baseline_decay=cfg.baseline_decay,
            reward_var=(self.state.reward_var or 0.0) if cfg.reward_normalize else None,
        )
        self.state.baseline = distributed.sync_controller(self.controller, optimizer, self.state.baseline)
        if cfg.reward_normalize:
            self.state.reward_var = stats["reward_var"]
        self.state.global_step += 1
        row = {
            "epoch": epoch,
            "step": update,
            "phase": phase,
            "loss": stats["loss"],
            "acc": float(np.mean(stats["accs"])),
            "reward": float(np.mean(stats["rewards"])),
            "baseline": self.state.baseline,
            "entropy": float(np.mean(stats["entropies"])),
            "lr": optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0,
            "time": self._now(),
        }
        if stats["skip_rates"]:
            row["skip_rate"] = float(np.mean(stats["skip_rates"]))
        self._log_row("metrics_steps.jsonl", "controller", row, self.state.global_step)
        return stats

    def _remember(self, arch, score: float) -> None:
        """Tracks every architecture scored during the search (its reward, without the entropy bonus)."""
        entry = self.state.seen.setdefault(arch.key(), {"flat": list(arch.to_flat()), "sum": 0.0, "count": 0})
        entry["sum"] += score
        entry["count"] += 1

    def _prune_seen(self) -> None:
        """Keeps the best ``SEEN_LIMIT_FACTOR * keep_seen`` (at least SEEN_LIMIT_MIN) seen architectures, so
        the checkpoint stays small over a long search (the reference preset scores ~310k)."""
        limit = max(SEEN_LIMIT_MIN, SEEN_LIMIT_FACTOR * self.config.keep_seen)
        if len(self.state.seen) > limit:
            self.state.seen = dict(rank_seen(self.state.seen)[:limit])

    def _now(self) -> float:
        return round(time.perf_counter() - self._t0, 3)

    # ---------------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        cfg = self.config
        if cfg.deterministic:
            runtime_mod.set_deterministic(True)
        ensure_dir(self.out, "search run folder")
        if resume:
            self.load()
            log.info(
                "resuming %s at epoch %d step %d (%d child steps done)",
                self.out, self.state.epoch, self.state.child_step, self.state.child_steps_total,
            )  # fmt: skip
        else:
            if self.checkpoint_path.exists():
                raise MusicnasError(
                    f"{self.out} already holds a search (checkpoints/last.pt); continue it with --resume {self.out} "
                    "or choose another --out"
                )
            torch.manual_seed(derive_seed(cfg.seed, "search.torch"))  # dropout; its state is checkpointed
            self.run_dir.reset_metrics()
            if distributed.is_main():
                atomic_write_json(self.out / "config.json", self.config_record())
        distributed.barrier()  # every rank has checked the folder before rank 0 writes a checkpoint
        if cfg.tensorboard:
            self.run_dir.open_writer(self.state.global_step if resume else None)
        self._t0 = time.perf_counter() - self.state.elapsed
        stopped = False
        epoch_bar = progress(
            total=cfg.epochs, initial=self.state.epoch, desc="search", unit="epoch", leave=True
        )
        try:
            while self.state.epoch < cfg.epochs:
                stopped = self.run_epoch(self.state.epoch)
                epoch_bar.update(0 if stopped else 1)
                if stopped:
                    break
        finally:
            epoch_bar.close()
        if stopped:
            self.run_dir.close()
            return {"run_dir": str(self.out), "stopped": True, "epoch": self.state.epoch,
                    "child_steps": self.state.child_steps_total}  # fmt: skip
        from musicnas.search.derive import derive_and_write

        result = derive_and_write(self)
        if self.latency_model is not None:
            from musicnas.latency.search import record_arch_latency

            result["latency"] = record_arch_latency(self, result)
        self.run_dir.close()
        result.update(
            {"run_dir": str(self.out), "stopped": False, "epochs": cfg.epochs, "elapsed": self._now()}
        )
        return result

    def run_epoch(self, epoch: int) -> bool:
        """Runs (the rest of) one epoch; True when stopped early by ``max_steps``."""
        cfg = self.config
        st = self.state
        t_epoch = time.perf_counter()
        child = self.child_batches(epoch)
        total = len(child) + (cfg.controller_updates_per_epoch if epoch >= cfg.controller_start_epoch else 1)
        bar = progress(
            total=total, initial=st.child_step, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step"
        )
        try:
            lr = self.child_opt.param_groups[0]["lr"]
            for step in range(st.child_step, len(child)):
                self.child_step(epoch, step, child[step], bar)
                interleaved_update(self, epoch, step)
                last = step + 1 == len(child)
                if cfg.max_steps is not None and st.child_steps_total >= cfg.max_steps:
                    self._checkpoint()
                    return True
                if (
                    cfg.checkpoint_every_steps
                    and st.child_steps_total % cfg.checkpoint_every_steps == 0
                    and not last
                ):
                    self._checkpoint()
                if self.callback is not None:
                    self.callback(
                        {"epoch": epoch, "step": step, "phase": "child", "global_step": st.global_step}
                    )
            summary = self.controller_phase(epoch, bar)
        finally:
            bar.close()
        row = {
            "epoch": epoch,
            "child_loss": st.child_loss_sum / max(st.child_count, 1),
            "child_acc": st.child_acc_sum / max(st.child_count, 1),
            "val_acc": summary["val_acc"],
            "reward": summary["reward"],
            "baseline": summary["baseline"],
            "entropy": summary["entropy"],
            "skip_rate": summary["skip_rate"],
            "lr": lr,
            "controller_lr": summary["controller_lr"],
            "time": round(time.perf_counter() - t_epoch, 3),
            "elapsed": self._now(),
        }
        if row["skip_rate"] is None:
            del row["skip_rate"]
        if cfg.derive_every_epoch:
            from musicnas.search.derive import derive_snapshot

            row.update(derive_snapshot(self))
        self._log_row("metrics_epochs.jsonl", "epoch", row, st.global_step)
        self.run_dir.append("controller_probs.jsonl", {"epoch": epoch, **self.controller.decision_probs()})
        log.info(_epoch_line(row, cfg.epochs))
        log.debug("most likely architecture after epoch %d:\n%s", epoch + 1, self.controller.most_likely())
        self._prune_seen()
        self.child_sched.step()
        st.epoch = epoch + 1
        st.child_step = 0
        st.child_loss_sum = st.child_acc_sum = 0.0
        st.child_count = 0
        self._checkpoint()
        if self.callback is not None:
            self.callback({"epoch": epoch, "phase": "epoch_end", "global_step": st.global_step})
        return False

    def _checkpoint(self) -> None:
        self.state.elapsed = self._now()
        self.save()


def _epoch_line(row: dict, epochs: int) -> str:
    skip = f" skip {row['skip_rate']:.2f}" if "skip_rate" in row else ""
    return (
        f"epoch {row['epoch'] + 1}/{epochs}: child loss {row['child_loss']:.3f} acc {row['child_acc']:.3f} | "
        f"val acc {row['val_acc']:.3f} reward {row['reward']:.3f} baseline {row['baseline']:.3f} "
        f"entropy {row['entropy']:.2f}{skip} | lr {row['lr']:.4f} | {row['time']:.1f}s"
    )


def load_run_config(run_dir: str | os.PathLike) -> SearchConfig:
    """The SearchConfig recorded in ``RUN/config.json``."""
    record = RunDir.check_record(
        read_json(Path(run_dir) / "config.json", "search run config"),
        CONFIG_FORMAT,
        FORMAT_VERSION,
        f"{run_dir}/config.json",
        f"is {run_dir} a search run?",
    )
    if not isinstance(record.get("search"), dict):
        raise MusicnasError(
            f"{run_dir}/config.json lacks its 'search' settings; restore it or start a new run"
        )
    return SearchConfig.from_dict(record["search"])


def search_space(config: SearchConfig):
    """The search space ``config`` describes."""
    from musicnas.spaces import get_space_module

    try:
        return get_space_module(config.space).Space.from_dict({"type": config.space, **config.space_options})
    except TypeError as exc:
        raise MusicnasError(
            f"space_options {config.space_options} do not fit the {config.space} space: {exc}"
        ) from exc


def run_search(
    config: SearchConfig | None,
    data,
    out_dir: str | os.PathLike,
    rt: Runtime | None = None,
    resume: bool = False,
    callback: StepCallback | None = None,
    *,
    overrides: dict | None = None,
    controller: Callable[[Any], Controller] | None = None,
) -> dict:
    """Runs (or resumes) an ENAS search into ``out_dir`` and returns a result dict
    (``arch`` JSON, ``score``, ``candidates``, ``run_dir``, ``elapsed``; ``stopped`` when ``max_steps``
    cut it short).

    ``data`` is a FeatureCache or None (then ``config.data`` is opened). With ``resume=True`` the run's own
    ``config.json`` is used; ``config`` (or ``overrides``, a dict of settings where None means not
    given) may only change the keys in ``RESUMABLE_OVERRIDES``. ``controller(space)`` builds the
    controller instead of the config's LSTM one (random search with weight sharing).
    ``callback(info)`` is called after every child step and epoch (tests use it to simulate a kill)."""
    rt = rt or runtime_mod.setup("auto")
    out_dir = Path(out_dir)
    if resume:
        if not (out_dir / "checkpoints" / "last.pt").exists():
            missing = "" if (out_dir / "config.json").is_file() else " and neither does config.json"
            raise MusicnasError(
                f"nothing to resume: {out_dir}/checkpoints/last.pt does not exist{missing}; "
                "is it a search run's directory?"
            )
        saved = load_run_config(out_dir).to_dict()
        # max_steps is a stop for this invocation (tests, time-boxed harnesses), not part of the run
        saved["max_steps"] = None
        given = config.to_dict() if config is not None else overrides
        config = SearchConfig.from_dict(merge_resume(saved, given, RESUMABLE_OVERRIDES, out_dir))
    if config is None:
        raise MusicnasError("run_search needs a config (or resume=True with an existing run)")
    if data is None:
        if not config.data:
            raise MusicnasError("no data given: pass --data PATH")
        from musicnas.data.cache import open_data

        data = open_data(config.data, config.cache_dir)
    if not config.data and getattr(data, "root", None) and Path(str(data.root)).is_dir():
        # record the prepared cache folder, so `musicnas search --resume RUN` can reopen the data
        config = SearchConfig.from_dict({**config.to_dict(), "data": str(data.root)})
    config.validate()
    chosen = controller(search_space(config)) if controller is not None else None
    search = SearchRun(config, data, out_dir, rt, controller=chosen, callback=callback)
    if resume:
        _check_same_data(out_dir, search)
    return search.run(resume=resume)


def _check_same_data(out_dir: Path, search: SearchRun) -> None:
    record = read_json(out_dir / "config.json", "search run config")
    now = search.config_record()["data"]
    check_resume_data(record.get("data", {}).get("identity"), search.data, out_dir)
    for key in ("classes", "input_shape", "train_clips", "val_clips"):
        if record.get("data", {}).get(key) != now[key]:
            raise MusicnasError(
                f"the data differs from the run's ({key}: {record.get('data', {}).get(key)} vs {now[key]}); "
                "resume with the same --data and cache"
            )
