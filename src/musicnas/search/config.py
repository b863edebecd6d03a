"""Search configuration: one plain dataclass, named presets, loading from TOML/JSON, CLI overrides.

Two presets (see docs/search.md):

* ``reference``: the ENAS authors' published hyper-parameters (12 layers × 36 channels, batch 128,
  310 epochs, 20 architectures per controller update, 50 updates per epoch ...). GPU-sized.
* ``cpu`` (default): the same algorithm sized for 2 CPU cores, so a demo search over ~960 clips of
  1×64×94 takes a few minutes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from musicnas.runtime import MusicnasError
from musicnas.search.scoring import BN_MODES

PRESETS = ("cpu", "reference")
CONTROLLERS = ("lstm", "factorized")
DERIVE_BY = ("loss", "reward", "mode")
# What choosing the factorised policy changes, unless set explicitly (TuNAS: EMA momentum 0.95, Adam
# beta1 0; its policy is updated every few shared-weight steps with normalised rewards).
FACTORIZED_DEFAULTS = {
    "controller_lr": 0.05,
    "baseline_decay": 0.95,
    "reward_normalize": True,
    "controller_update_every": 5,
}


@dataclass
class SearchConfig:
    """Every hyper-parameter of an ENAS search. Defaults are the ``cpu`` preset for the macro space."""

    space: str = "macro"
    # passed to Space.from_dict (field names): the macro space takes num_layers, num_branches, whole_channels, channels
    space_options: dict = field(
        default_factory=lambda: {
            "num_layers": 6,
            "channels": 12,
            "num_branches": 6,
            "whole_channels": True,
            "stem_stride": 2,
        }
    )
    seed: int = 0
    data: str | None = None  # data path given to open_data (recorded so --resume can reopen it)
    cache_dir: str = ".musicnas-cache"

    epochs: int = 10
    batch_size: int = 32
    child_steps_per_epoch: int | None = None  # None: one pass over the train split
    child_lr_max: float = 0.05
    child_lr_min: float = 0.0005
    child_lr_t0: int = 10  # epochs in the first cosine cycle
    child_lr_t_mul: int = 2  # each cycle twice as long (restarts at 10, 30, 70, 150, 310)
    child_momentum: float = 0.9
    child_weight_decay: float = 5e-4  # = 2 · the reference's l2 2.5e-4 (it penalised Σw², not Σw²/2)
    child_grad_clip: float = 5.0
    child_dropout: float = 0.0

    controller: str = "lstm"  # "lstm" (ENAS) or "factorized" (TuNAS-style, search/factorized.py)
    controller_options: dict = field(
        default_factory=dict
    )  # constructor kwargs (lstm_size, tanh_constant ...)
    controller_lr: float = 1e-3
    controller_beta1: float = 0.0
    controller_eps: float = 1e-3
    controller_archs_per_update: int = 8
    controller_updates_per_epoch: int = 5
    controller_batch_size: int | None = None  # None: batch_size
    controller_start_epoch: int = 0  # >0: shared-weight warm-up, no policy updates before this epoch
    # BN of the shared net while scoring (search/scoring.py): "eval" (running statistics), "batch" (the
    # scored batch's) or "recalibrate" (recomputed per architecture on bn_calibration_batches train batches)
    controller_bn: str = "eval"
    bn_calibration_batches: int = 2
    # 0: every architecture of an update is scored on its own validation batch (ENAS); k >= 1: all of an
    # update's architectures on the same k validation batches (less noise, comparable rewards)
    reward_batches: int = 0
    warmup_uniform: bool = False  # before controller_start_epoch, train on uniform architectures (fair ops)
    controller_update_every: int = 0  # k > 0: also one policy update every k child steps (TuNAS)
    reward_normalize: bool = False  # divide the advantage by an EMA of its standard deviation
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.99
    skip_weight: float = 0.8

    reward: str = "accuracy"
    cost_metric: str = "macs"  # "latency": milliseconds predicted by the latency table (docs/latency.md)
    cost_target: float | None = None
    latency_backend: str = "onnxruntime"  # what the latency table measured: onnxruntime or torch
    latency_threads: int = 1  # intra-op threads of that backend
    latency_table: str | None = None  # table file; None: this machine's file in the user cache

    derive_samples: int = 100
    derive_batches: int = 4
    derive_top_k: int = 5
    # n > 0: the best n screened candidates and the seen ones are scored again on the whole validation
    # split and ranked by that; 0: rank by the derive_batches screening alone
    derive_rescore: int = 20
    # what ranks the candidates: "loss" (mean validation cross-entropy, lowest first) or "reward" (the
    # run's reward of the validation accuracy, ENAS); a cost-aware reward always ranks by the reward
    derive_by: str = "loss"
    keep_seen: int = 5  # best architectures seen during search, rescored with the derived ones
    derive_every_epoch: bool = False  # also derive after every epoch (logged as derived_best/derived_mean)

    checkpoint_every_steps: int = 0  # 0: checkpoint at the end of every epoch only
    deterministic: bool = False
    tensorboard: bool = True
    max_steps: int | None = None  # stop (after a checkpoint) once this many child steps ran in total

    def validate(self) -> SearchConfig:
        def need(ok: bool, message: str):
            if not ok:
                raise MusicnasError(f"invalid search config: {message}")

        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 2, f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        need(self.child_lr_max >= self.child_lr_min > 0, "need child_lr_max >= child_lr_min > 0")
        need(
            self.child_lr_t0 >= 1 and self.child_lr_t_mul >= 1, "child_lr_t0 and child_lr_t_mul must be >= 1"
        )
        need(self.controller_archs_per_update >= 1, "controller_archs_per_update must be >= 1")
        need(self.controller_updates_per_epoch >= 0, "controller_updates_per_epoch must be >= 0")
        need(0.0 <= self.baseline_decay < 1.0, "baseline_decay must be in [0, 1)")
        need(self.controller_bn in BN_MODES, f"controller_bn must be one of {BN_MODES}")
        need(
            self.controller in CONTROLLERS,
            f"controller must be one of {CONTROLLERS}, got {self.controller!r}",
        )
        need(self.bn_calibration_batches >= 1, "bn_calibration_batches must be >= 1")
        need(self.reward_batches >= 0, "reward_batches must be >= 0")
        need(self.controller_update_every >= 0, "controller_update_every must be >= 0")
        need(self.controller_start_epoch >= 0, "controller_start_epoch must be >= 0")
        need(
            self.derive_samples >= 1 and self.derive_batches >= 1,
            "derive_samples/derive_batches must be >= 1",
        )
        need(self.derive_top_k >= 1, "derive_top_k must be >= 1")
        need(self.derive_rescore >= 0, "derive_rescore must be >= 0")
        need(self.derive_by in DERIVE_BY, f"derive_by must be one of {DERIVE_BY}, got {self.derive_by!r}")
        need(self.checkpoint_every_steps >= 0, "checkpoint_every_steps must be >= 0")
        if self.child_steps_per_epoch is not None:
            need(self.child_steps_per_epoch >= 1, "child_steps_per_epoch must be >= 1 or null")
        from musicnas.search.rewards import make_reward

        make_reward(self.reward, self.cost_metric, self.cost_target)  # raises on a bad reward/metric/target
        if self.cost_metric == "latency":
            from musicnas.latency.measure import check_backend

            check_backend(self.latency_backend, self.latency_threads)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SearchConfig:
        if not isinstance(values, dict):
            raise MusicnasError(f"search settings must be a JSON/TOML table, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MusicnasError(
                f"unknown search config key(s): {', '.join(unknown)}; known keys are {', '.join(sorted(known))}"
            )
        wrong = _wrongly_typed(values)
        if wrong:
            raise MusicnasError(f"invalid search config: {'; '.join(wrong)}")
        return cls(**values)


_JSON_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,)}


def _wrongly_typed(values: dict) -> list[str]:
    """Values whose JSON type does not fit the field (an edited config.json or config file)."""
    out = []
    for f in dataclasses.fields(SearchConfig):
        if f.name not in values:
            continue
        value, kinds = values[f.name], [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        fits = any(
            isinstance(value, _JSON_TYPES[k]) and (k == "bool" or not isinstance(value, bool))
            for k in kinds
            if k in _JSON_TYPES
        )
        if not fits:
            out.append(f"{f.name} must be {f.type}, got {value!r}")
    return out


def _reference_macro() -> dict:
    return dict(
        space_options={"num_layers": 12, "channels": 36, "num_branches": 6, "whole_channels": True},
        epochs=310,
        batch_size=128,
        child_dropout=0.1,  # the authors' search scripts: keep_prob 0.9 before the linear head
        controller_lr=1e-3,
        controller_archs_per_update=20,
        controller_updates_per_epoch=50,
        derive_samples=100,
        derive_batches=10,
        derive_top_k=10,
        keep_seen=10,
        derive_rescore=0,  # the authors rank by the derive batches' accuracy alone
        derive_by="reward",
    )


def _reference_micro() -> dict:
    return dict(
        space_options={"num_cells": 6, "num_nodes": 5, "channels": 20},
        epochs=150,
        batch_size=160,
        child_dropout=0.1,  # keep_prob 0.9
        child_weight_decay=2e-4,  # the micro search's l2 1e-4 on sum(w^2), as PyTorch counts it
        # the authors' micro child forces is_training=True in the search, also when it scores the
        # controller's architectures: batch statistics
        controller_bn="batch",
        controller_lr=3.5e-3,
        controller_archs_per_update=10,
        controller_updates_per_epoch=30,
        derive_samples=100,
        derive_batches=10,
        derive_top_k=10,
        keep_seen=10,
        derive_rescore=0,
        derive_by="reward",
    )


def _cpu(space: str) -> dict:
    values = dict(
        epochs=10,
        batch_size=32,
        controller_archs_per_update=8,
        controller_updates_per_epoch=5,
        derive_samples=100,
        derive_batches=4,
        derive_top_k=5,
        keep_seen=5,
        derive_rescore=20,
        derive_by="loss",
    )
    if space == "macro":
        # stride-2 stem: ~4x less work on a 64x94 log-mel, so the demo search fits a few minutes on 2 cores
        values["space_options"] = {
            "num_layers": 6,
            "channels": 12,
            "num_branches": 6,
            "whole_channels": True,
            "stem_stride": 2,
        }
    else:
        values["space_options"] = {}
        values["controller_lr"] = 3.5e-3
        # The shared cells' running BN statistics mix every sampled architecture: on the demo data, scoring
        # with them gave near-chance validation accuracy (0.13-0.16 for 8 classes) and so no reward signal.
        # Batch statistics while scoring (the running ones untouched) give each architecture its own.
        values["controller_bn"] = "batch"
    return values


def preset(name: str = "cpu", space: str = "macro") -> SearchConfig:
    """The named preset for ``space``."""
    if name not in PRESETS:
        raise MusicnasError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    if name == "reference":
        values = _reference_macro() if space == "macro" else _reference_micro()
    else:
        values = _cpu(space)
    return SearchConfig(space=space, **values)


def _toml():
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise MusicnasError(
                "reading a TOML config needs Python 3.11+ or `pip install tomli`; or use JSON"
            ) from None
    return tomllib


def load_config_file(path: str | Path) -> dict:
    """Reads a TOML (``.toml``) or JSON file of SearchConfig keys. A ``[search]`` table / key, when
    present, holds them (so one TOML can configure several commands)."""
    path = Path(path)
    if not path.is_file():
        raise MusicnasError(f"config file not found: {path}")
    try:
        if path.suffix.lower() == ".toml":
            values = _toml().loads(path.read_text(encoding="utf-8"))
        else:
            values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise MusicnasError(f"config file {path} cannot be parsed: {exc}") from exc
    if not isinstance(values, dict):
        raise MusicnasError(f"config file {path} must hold a table/object of search settings")
    if isinstance(values.get("search"), dict):
        values = values["search"]
    return values


def resolve_config(
    preset_name: str = "cpu",
    space: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SearchConfig:
    """Preset, then the config file, then explicit overrides (None values are ignored)."""
    file_values = load_config_file(config_file) if config_file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    space = space or overrides.get("space") or file_values.get("space") or "macro"
    base = preset(file_values.get("preset", preset_name), space).to_dict()
    file_values = {k: v for k, v in file_values.items() if k != "preset"}
    if (overrides.get("controller") or file_values.get("controller")) == "factorized":
        base.update(FACTORIZED_DEFAULTS)  # the file and the overrides below still win
    for values in (file_values, overrides):
        for key, value in values.items():
            if key in ("space_options", "controller_options") and isinstance(value, dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
    base["space"] = space
    return SearchConfig.from_dict(base).validate()
