"""Levers of the search loop around the policy (``search/enas.py`` calls these):

* the shared-weight warm-up's fair sampling: before ``controller_start_epoch`` the shared weights can be
  trained on uniformly drawn architectures (``warmup_uniform``), so every op gets the same share of
  training before the policy starts to prefer some (an untrained LSTM is not uniform: its tanh-squashed
  logits already favour some ops);
* TuNAS-style interleaved policy updates: one REINFORCE update every ``controller_update_every`` child
  steps, on top of (or instead of) the per-epoch controller phase;
* reward normalisation: the advantage divided by an EMA of its standard deviation, so the policy's step
  size does not depend on the scale of the reward (accuracy differences of a few points on a batch).
"""

from __future__ import annotations

import math

import torch

from musicnas.search.controller import ControllerSample

NORMALIZE_EPS = 1e-8


def in_warmup(config, epoch: int) -> bool:
    return epoch < config.controller_start_epoch


def child_sample(search, epoch: int) -> ControllerSample:
    """The architecture for the next shared-weight step: uniform during a ``warmup_uniform`` warm-up
    (drawn from the controller's own generator, so it is seeded and checkpointed), else the policy's."""
    if search.config.warmup_uniform and in_warmup(search.config, epoch):
        arch = search.space.sample(search.controller.generator)
        log_size = math.log(int(search.space.size()))
        return ControllerSample(
            arch,
            torch.tensor(-log_size),
            torch.tensor(log_size),
            torch.zeros(()),
            search.controller.arch_stats(arch),
        )
    return search.controller.sample()


def interleaved_update(search, epoch: int, step: int) -> None:
    """After child step ``step``: one policy update when ``controller_update_every`` divides ``step + 1``
    (not during the warm-up, not for a controller without parameters)."""
    cfg = search.config
    every = cfg.controller_update_every
    if not every or (step + 1) % every or in_warmup(cfg, epoch) or search.controller_opt is None:
        return
    search.policy_update(
        epoch, (step + 1) // every - 1, search.val_batches(epoch, "search.policy_order"), search.controller_opt,
        phase="policy",
    )  # fmt: skip


def normalized_advantage(advantage: float, variance: float, decay: float) -> tuple[float, float]:
    """``(advantage / std, new variance)`` with the variance an EMA of squared advantages (``decay``),
    started at the first non-zero one (the first advantage is 0: the baseline starts at the first reward)."""
    squared = advantage * advantage
    variance = decay * variance + (1.0 - decay) * squared if variance > 0 else squared
    return advantage / (math.sqrt(variance) + NORMALIZE_EPS), variance
