"""Scoring architectures with the shared weights: batch-norm handling and which batches a reward uses.

How the shared network's batch norm behaves while an architecture is scored decides how well the
shared weights rank architectures (``controller_bn``):

* ``eval``: running statistics (the reference's macro search scored with ``is_training=False``). The
  running statistics mix every architecture sampled during training, so they fit none of them well.
* ``batch``: the scored batch's own statistics (the reference's micro search, which forced
  ``is_training=True``); running statistics untouched.
* ``recalibrate``: per architecture, the running statistics are recomputed from scratch on a few fixed
  training batches run through that architecture (a cumulative average, as in single-path one-shot
  NAS, Guo et al. 2020), the architecture is scored in eval mode with them, and the shared network's own
  statistics are then put back exactly as they were.

No mode changes the shared network: every batch-norm buffer and momentum is restored afterwards, and
nothing but batch norm is put in training mode (dropout stays off, so scoring draws no random numbers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

BN_MODES = ("eval", "batch", "recalibrate")
_BatchNorm = nn.modules.batchnorm._BatchNorm


def _batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@contextlib.contextmanager
def preserved_batch_norm(model: nn.Module) -> Iterator[None]:
    """Restores every batch-norm buffer (running mean/var, batch count), momentum and train flag of
    ``model`` on exit, bit for bit, whatever happened inside."""
    saved = [
        (m, m.momentum, m.training, {k: b.detach().clone() for k, b in m.named_buffers(recurse=False)})
        for m in _batch_norms(model)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, momentum, training, buffers in saved:
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
                m.momentum = momentum
                m.train(training)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, forward, batches: Sequence[torch.Tensor]) -> None:
    """Replaces the running statistics of ``model``'s batch norms by their plain average over
    ``batches`` (each run through ``forward(x)``); only batch norm runs in training mode.

    Batch norms the forward pass does not reach keep freshly reset statistics; the caller scores one
    architecture and restores everything with :func:`preserved_batch_norm`."""
    model.eval()
    for m in _batch_norms(model):
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    for x in batches:
        forward(x)
    for m in _batch_norms(model):
        m.eval()


@contextlib.contextmanager
def scoring_mode(
    model: nn.Module,
    bn: str,
    forward=None,
    calibration: Sequence[torch.Tensor] = (),
) -> Iterator[nn.Module]:
    """``model`` set up for scoring without changing it (see the module docstring for ``bn``).

    ``recalibrate`` needs ``forward(x)`` (the scored architecture's forward pass) and the
    ``calibration`` input batches. Gradients are off inside; everything is restored on exit."""
    if bn not in BN_MODES:
        raise ValueError(f"unknown batch-norm scoring mode {bn!r}")
    was_training = model.training
    try:
        with preserved_batch_norm(model), torch.no_grad():
            model.eval()
            if bn == "batch":
                for m in _batch_norms(model):
                    m.train()
                    m.momentum = 0.0  # batch statistics; running ones stay as they are
            elif bn == "recalibrate":
                if forward is None or not calibration:
                    raise ValueError("recalibrate scoring needs the architecture's forward and batches")
                recalibrate_batch_norm(model, forward, calibration)
            yield model
    finally:
        model.train(was_training)


def calibration_indices(train_idx: np.ndarray, seed: int, batch_size: int, count: int) -> list[np.ndarray]:
    """The fixed training batches every architecture's batch norm is recalibrated on (the same ones for
    all architectures, from the run's seed)."""
    from musicnas.runtime import stream_rng

    order = train_idx[stream_rng(seed, "search.bn_calibration").permutation(len(train_idx))]
    n = max(1, min(count, len(order) // batch_size))
    size = min(batch_size, len(order))
    return [order[i * size : (i + 1) * size] for i in range(n)]


def accuracy_over(search: Any, arch, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Clip-weighted accuracy of ``arch`` with ``search``'s shared weights over ``batches`` (pairs of
    inputs and labels on the run's device), in the run's batch-norm mode; recalibration, when on,
    happens once for all the batches. Under torchrun each rank scores its shard of every batch and the
    counts are summed; every rank recalibrates on the whole calibration batches (the same statistics)."""
    return accuracy_and_loss_over(search, arch, batches)[0]


def accuracy_and_loss_over(
    search: Any, arch, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    """:func:`accuracy_over` and, from the same forward passes, the clip-weighted mean cross-entropy
    (a finer-grained score than accuracy, which moves in steps of one clip)."""
    from musicnas import distributed

    cfg = search.config
    model = search.model

    def forward(x):
        return model(x, arch)

    calibration = search.calibration_inputs if cfg.controller_bn == "recalibrate" else ()
    correct = total = 0
    loss_sum = 0.0
    with search.rt.autocast(), scoring_mode(model, cfg.controller_bn, forward, calibration):
        for x, y in batches:
            x, y = distributed.shard(x), distributed.shard(y)
            logits = model(x, arch)  # on every rank, also an empty shard (synced batch norm waits for all)
            correct += int((logits.argmax(dim=1) == y).sum())
            total += len(y)
            if len(y):
                loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
    correct, total, loss_sum = distributed.all_sum([correct, total, loss_sum])
    return correct / max(total, 1), loss_sum / max(total, 1)
