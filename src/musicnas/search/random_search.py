"""Random-search baselines in the same framework as ENAS (Li & Talwalkar 2019; Yu et al. 2019).

* :class:`UniformController` plugs into the ENAS loop in place of the LSTM: same shared weights, same
  epochs, same child steps, same deriving, but every architecture is drawn uniformly from the space
  ("random search with weight sharing"). :func:`run_uniform_search` runs it: the ENAS
  :class:`~musicnas.search.enas.SearchRun` itself, given this controller, so the loop, batching,
  validation scoring, checkpoints, metrics files and deriving are the same code as ENAS's. The
  controller phase still samples and scores ``controller_updates_per_epoch x controller_archs_per_update``
  architectures on validation batches each epoch (the same forward passes as ENAS, and the same "best
  seen" record that deriving rescoring uses); having no parameters, the controller is never updated.
* :func:`sample_distinct_archs` draws the k architectures of "random search without weight sharing",
  which the benchmark harness trains from scratch (see ``musicnas.baselines.harness``).
"""

from __future__ import annotations

import math
import os

import torch

from musicnas.runtime import MusicnasError, Runtime, derive_seed
from musicnas.search.config import SearchConfig
from musicnas.search.controller import Controller, ControllerSample
from musicnas.search.enas import run_search

__all__ = ["UniformController", "run_uniform_search", "sample_distinct_archs"]


class UniformController(Controller):
    """Draws every architecture uniformly at random from ``space`` with its own seeded generator.

    It has no parameters, so the ENAS loop gives it no optimiser and never updates it. ``log_prob`` and
    ``entropy`` are the exact values of the uniform distribution (``-log |space|`` and ``log |space|``),
    constants, so logged rewards and entropies stay comparable with an ENAS run's.
    """

    kind = "uniform"  # marks the run as random search with weight sharing

    def __init__(self, space, seed: int = 0):
        super().__init__(space, seed)
        size = int(space.size())
        if size < 1:
            raise MusicnasError(f"search space {space!r} has no architectures to sample")
        self.log_size = math.log(size)  # math.log handles Python ints far beyond float range

    def _uniform(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(-self.log_size), torch.tensor(self.log_size)

    def sample(self) -> ControllerSample:
        arch = self.space.sample(self.generator)
        log_prob, entropy = self._uniform()
        return ControllerSample(arch, log_prob, entropy, torch.zeros(()), self.arch_stats(arch))

    def log_prob(self, arch) -> tuple[torch.Tensor, torch.Tensor]:
        arch.validate()
        return self._uniform()

    def skip_penalty(self, arch) -> torch.Tensor:
        return torch.zeros(())

    @torch.no_grad()
    def most_likely(self):
        """Every architecture is equally likely: returns a fresh uniform draw (advances the generator)."""
        return self.space.sample(self.generator)

    @torch.no_grad()
    def decision_probs(self) -> dict:
        return {"decisions": [], "uniform": True, "log_size": self.log_size}

    def arch_stats(self, arch) -> dict:
        # the same skip-rate statistic the macro controller logs, so the metrics files line up
        return {"skip_rate": arch.skip_rate} if hasattr(arch, "skip_rate") else {}


def sample_distinct_archs(space, k: int, generator: torch.Generator, max_tries: int | None = None) -> list:
    """``k`` architectures drawn uniformly without repeats (by ``Arch.key()``).

    Repeats are rejected rather than kept so that k trainings are k different candidates; a space with
    fewer than k architectures is an error naming both numbers."""
    if k < 1:
        raise MusicnasError(f"the number of random architectures must be at least 1 (got {k})")
    size = int(space.size())
    if size < k:
        raise MusicnasError(f"asked for {k} distinct random architectures but the space has only {size}")
    max_tries = max_tries or 100 * k
    seen: dict[str, object] = {}
    tries = 0
    while len(seen) < k:
        tries += 1
        if tries > max_tries:
            raise MusicnasError(f"could not draw {k} distinct architectures in {max_tries} tries")
        arch = space.sample(generator)
        seen.setdefault(arch.key(), arch)
    return list(seen.values())


def run_uniform_search(
    config: SearchConfig, data, out_dir: str | os.PathLike, rt: Runtime, resume: bool = False, callback=None
) -> dict:
    """Random search with weight sharing into ``out_dir``: same run directory and result dict as
    :func:`musicnas.search.enas.run_search`."""
    if data is None:
        raise MusicnasError("run_uniform_search needs an opened FeatureCache")

    def uniform(space) -> UniformController:
        return UniformController(space, seed=derive_seed(config.seed, "search.uniform_controller"))

    return run_search(config, data, out_dir, rt, resume=resume, callback=callback, controller=uniform)
