"""ENAS controllers: the space-agnostic :class:`Controller` base and the macro-space LSTM controller.

A controller walks through a space's decisions in order. The same walk serves three purposes, so the
probability of an architecture is computed by exactly one piece of code:

* ``sample()``      draws every decision from the controller's own seeded ``torch.Generator``;
* ``log_prob(arch)`` is teacher-forced: it feeds the decisions of ``arch`` instead of sampling them;
* ``most_likely()`` takes the argmax of every decision.

Subclasses implement :meth:`Controller._walk`, which asks a :class:`DecisionPass` for each decision.
The controller always lives on the CPU: it is a handful of 64-unit LSTM steps per architecture, which a
GPU would only slow down with kernel launches, and a CPU generator keeps sampling bit-for-bit repeatable.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musicnas.runtime import MusicnasError, make_generator

# The reference's prior on the share of skip connections a macro architecture uses (enas-reference.md §3).
DEFAULT_SKIP_TARGET = 0.4

__all__ = [
    "DEFAULT_SKIP_TARGET",
    "Controller",
    "ControllerSample",
    "DecisionPass",
    "MacroController",
    "make_controller",
    "skip_kl",
]


@dataclass
class ControllerSample:
    """One architecture drawn from a controller with the differentiable pieces REINFORCE needs."""

    arch: Any
    log_prob: torch.Tensor  # sum of log pi(decision) over every decision, differentiable
    entropy: torch.Tensor  # sum of the entropies of every decision's distribution, differentiable
    skip_penalty: torch.Tensor  # KL of skip probabilities to the target rate (0 for spaces without skips)
    stats: dict = field(default_factory=dict)  # space-specific numbers for logging, e.g. skip_rate


class DecisionPass:
    """Collects log-probabilities, entropies and penalties along one walk through the decisions.

    ``mode`` is ``"sample"`` (draw from ``generator``), ``"force"`` (use the given decisions) or
    ``"argmax"``. With ``record=True`` every decision's probabilities are kept for logging.
    """

    MODES = ("sample", "force", "argmax")

    def __init__(self, mode: str, generator: torch.Generator | None = None, record: bool = False):
        if mode not in self.MODES:
            raise ValueError(f"unknown decision mode {mode!r}")
        if mode == "sample" and generator is None:
            raise ValueError("sampling needs a generator")
        self.mode = mode
        self.generator = generator
        self.record = record
        self.log_probs: list[torch.Tensor] = []
        self.entropies: list[torch.Tensor] = []
        self.penalties: list[torch.Tensor] = []
        self.records: list[dict] = []

    def choose(self, name: str, logits: torch.Tensor, forced=None) -> torch.Tensor:
        """Makes the decision(s) described by ``logits`` (``[k]`` or ``[n, k]``: n independent ones).

        Returns the chosen indices (``long``, shape ``logits.shape[:-1]``). ``forced`` (an int or a
        sequence of n ints) is required in ``force`` mode and ignored otherwise. Logits of ``-inf`` mark
        impossible choices.
        """
        log_p = F.log_softmax(logits, dim=-1)
        batch_shape = log_p.shape[:-1]
        if self.mode == "force":
            if forced is None:
                raise ValueError(f"decision {name}: no forced value given")
            idx = torch.as_tensor(forced, dtype=torch.long).reshape(batch_shape)
            k = log_p.shape[-1]
            if bool(((idx < 0) | (idx >= k)).any()):
                raise MusicnasError(f"decision {name}: value {idx.tolist()} is outside 0..{k - 1}")
        elif self.mode == "argmax":
            idx = log_p.detach().argmax(dim=-1)
        else:
            flat = log_p.detach().exp().reshape(-1, log_p.shape[-1])
            idx = torch.multinomial(flat, 1, generator=self.generator).reshape(batch_shape)
        picked = log_p.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        probs = log_p.exp()
        # 0 * log 0 is 0, not nan, for masked (impossible) choices
        plogp = torch.where(probs > 0, probs * log_p, torch.zeros_like(log_p))
        self.log_probs.append(picked.sum())
        self.entropies.append(-plogp.sum())
        if self.record:
            self.records.append({"name": name, "probs": probs.detach().tolist()})
        return idx

    def add_penalty(self, value: torch.Tensor) -> None:
        self.penalties.append(value)

    @staticmethod
    def _total(values: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(values).sum() if values else torch.zeros(())

    @property
    def log_prob(self) -> torch.Tensor:
        return self._total(self.log_probs)

    @property
    def entropy(self) -> torch.Tensor:
        return self._total(self.entropies)

    @property
    def penalty(self) -> torch.Tensor:
        # the reference averages the per-layer skip KLs (reduce_mean over layers)
        return torch.stack(self.penalties).mean() if self.penalties else torch.zeros(())


class Controller(nn.Module):
    """Base class of every controller (see docs/architecture.md, Search contract).

    Subclasses set ``space`` and implement :meth:`_walk`; optionally :meth:`arch_stats`.
    """

    kind: str | None = None  # a controller other than ENAS's names itself in the run's config.json

    def __init__(self, space, seed: int = 0):
        super().__init__()
        self.space = space
        self.seed = int(seed)
        self.generator = make_generator(self.seed)

    # -- to implement -------------------------------------------------------------------------------
    def _walk(self, arch, decisions: DecisionPass):
        """Runs every decision through ``decisions.choose`` (passing ``arch``'s own value as ``forced``
        when ``arch`` is not None) and returns the resulting architecture."""
        raise NotImplementedError

    def arch_stats(self, arch) -> dict:
        """Space-specific numbers about an architecture for the metrics files (e.g. ``skip_rate``)."""
        return {}

    # -- public API ---------------------------------------------------------------------------------
    def sample(self) -> ControllerSample:
        decisions = DecisionPass("sample", self.generator)
        arch = self._walk(None, decisions)
        return ControllerSample(
            arch, decisions.log_prob, decisions.entropy, decisions.penalty, self.arch_stats(arch)
        )

    def log_prob(self, arch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(log pi(arch), entropy)``, differentiable, same graph as :meth:`sample`."""
        decisions = DecisionPass("force")
        self._walk(arch, decisions)
        return decisions.log_prob, decisions.entropy

    def skip_penalty(self, arch) -> torch.Tensor:
        decisions = DecisionPass("force")
        self._walk(arch, decisions)
        return decisions.penalty

    @torch.no_grad()
    def most_likely(self):
        return self._walk(None, DecisionPass("argmax"))

    @torch.no_grad()
    def decision_probs(self) -> dict:
        """Every decision's probabilities along the most likely path (later decisions depend on earlier
        ones, so this is one slice of the policy): ``{"decisions": [{"name", "probs"}, ...]}``."""
        decisions = DecisionPass("argmax", record=True)
        self._walk(None, decisions)
        return {"decisions": decisions.records}

    # -- generator state (checkpoints) ---------------------------------------------------------------
    def generator_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def skip_kl(skip_logits: torch.Tensor, target: float) -> torch.Tensor:
    """The authors' skip penalty for one layer: ``sum(sigmoid(l) * log(sigmoid(l) / [1 - t, t]))`` over
    the layer's ``[n, 2]`` skip logits ``l = [-q, q]`` (``general_controller.py``).

    It is taken on ``sigmoid(q)``, not on the sampling probability ``softmax([-q, q])[1] = sigmoid(2q)``:
    the penalty's optimum ``sigmoid(q) = t`` samples skips at ``sigmoid(2 logit(t))``, about 0.31 for the
    reference's t = 0.4 (a KL on the sampling probability would land at t itself)."""
    probs = torch.sigmoid(skip_logits)
    prior = torch.tensor([1.0 - target, target], dtype=probs.dtype)
    return (probs * torch.log(probs / prior)).sum()


def choose_count(
    decisions: DecisionPass, name: str, logits: torch.Tensor, start, forced_count
) -> torch.Tensor:
    """The channel-range count decision (``count - 1`` in ``0..C-1``), counts past ``C - start`` masked;
    ``forced_count`` is the architecture's count (not minus one) or None."""
    channels = logits.shape[-1]
    allowed = torch.arange(channels) <= (channels - 1 - int(start))
    return decisions.choose(
        f"{name}.count",
        logits.masked_fill(~allowed, float("-inf")),
        None if forced_count is None else int(forced_count) - 1,
    )


class LSTMPolicy(nn.Module):
    """The reference controller's recurrent core: one LSTM layer, a learned start input, uniform init."""

    def __init__(self, hidden: int = 64, init_range: float = 0.1):
        super().__init__()
        self.hidden = hidden
        self.cell = nn.LSTMCell(hidden, hidden, bias=False)  # the reference's LSTM has no bias
        self.start = nn.Parameter(torch.zeros(1, hidden))  # learned start embedding (g_emb)
        self.init_range = init_range

    def reset_uniform(self, module: nn.Module) -> None:
        for p in module.parameters():
            nn.init.uniform_(p, -self.init_range, self.init_range)

    def initial_state(self):
        zeros = torch.zeros(1, self.hidden)
        return zeros, zeros.clone()

    def step(self, inputs, state):
        h, c = self.cell(inputs, state)
        return h, (h, c)


class MacroController(Controller):
    """The ENAS macro controller (reference: ``general_controller.py``).

    Per layer: the op (whole-channels mode) or, per branch, a channel ``start`` and ``count``
    (channel-range mode); then one Bernoulli per earlier layer, decided by attention over those layers'
    LSTM states. Works on the space's flat encoding (``Arch.to_flat`` / ``Arch.from_flat``).
    """

    def __init__(
        self,
        space,
        seed: int = 0,
        lstm_size: int = 64,
        tanh_constant: float | None = 1.5,
        temperature: float | None = None,
        skip_target: float = DEFAULT_SKIP_TARGET,
        init_range: float = 0.1,
    ):
        super().__init__(space, seed)
        if getattr(space, "type", None) != "macro":
            raise MusicnasError(f"MacroController needs a macro space, got {getattr(space, 'type', space)!r}")
        if not 0.0 < skip_target < 1.0:
            raise MusicnasError(f"skip_target must lie strictly between 0 and 1, got {skip_target}")
        self.num_layers = int(space.num_layers)
        self.num_branches = int(space.num_branches)
        self.whole_channels = bool(space.whole_channels)
        self.channels = int(space.channels)
        self.tanh_constant = tanh_constant
        self.temperature = temperature
        self.skip_target = float(skip_target)
        self.lstm = LSTMPolicy(lstm_size, init_range)
        if self.whole_channels:
            self.op_embedding = nn.Embedding(self.num_branches, lstm_size)
            self.op_logits = nn.Linear(lstm_size, self.num_branches, bias=False)
        else:
            c, b = self.channels, self.num_branches
            self.start_embedding = nn.ModuleList(nn.Embedding(c, lstm_size) for _ in range(b))
            self.count_embedding = nn.ModuleList(nn.Embedding(c, lstm_size) for _ in range(b))
            self.start_logits = nn.ModuleList(nn.Linear(lstm_size, c, bias=False) for _ in range(b))
            # count-1 in 0..C-1. The reference had C-1 outputs, so count = C (all channels from start 0)
            # could never be sampled; we give the head C outputs and mask those past C-1-start.
            self.count_logits = nn.ModuleList(nn.Linear(lstm_size, c, bias=False) for _ in range(b))
        self.attn_anchor = nn.Linear(lstm_size, lstm_size, bias=False)  # W1, applied to earlier h_j
        self.attn_query = nn.Linear(lstm_size, lstm_size, bias=False)  # W2, applied to h_now
        self.attn_v = nn.Linear(lstm_size, 1, bias=False)
        self.lstm.reset_uniform(self)

    def _squash(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _walk(self, arch, decisions: DecisionPass):
        forced = None if arch is None else list(arch.to_flat())
        pos = 0

        def given(n: int = 1):
            nonlocal pos
            if forced is None:
                return None
            if pos + n > len(forced):
                raise MusicnasError("architecture has fewer decisions than this controller's space expects")
            value = forced[pos] if n == 1 else forced[pos : pos + n]
            pos += n
            return value

        flat: list[int] = []
        inputs = self.lstm.start
        state = self.lstm.initial_state()
        anchors: list[torch.Tensor] = []  # h of each earlier layer
        anchor_keys: list[torch.Tensor] = []  # W1 h_j, computed once per layer
        for layer in range(self.num_layers):
            if self.whole_channels:
                h, state = self.lstm.step(inputs, state)
                op = decisions.choose(f"layer{layer}.op", self._squash(self.op_logits(h)[0]), given())
                flat.append(int(op))
                inputs = self.op_embedding(op.view(1))
            else:
                for branch in range(self.num_branches):
                    h, state = self.lstm.step(inputs, state)
                    logits = self._squash(self.start_logits[branch](h)[0])
                    start = decisions.choose(f"layer{layer}.branch{branch}.start", logits, given())
                    inputs = self.start_embedding[branch](start.view(1))
                    h, state = self.lstm.step(inputs, state)
                    logits = self._squash(self.count_logits[branch](h)[0])
                    count_minus_one = choose_count(
                        decisions, f"layer{layer}.branch{branch}", logits, start, given()
                    )
                    flat.extend([int(start), int(count_minus_one) + 1])
                    inputs = self.count_embedding[branch](count_minus_one.view(1))
            h, state = self.lstm.step(inputs, state)
            if layer > 0:
                query = torch.tanh(torch.cat(anchor_keys, dim=0) + self.attn_query(h))  # [layer, hidden]
                q = self.attn_v(query).squeeze(-1)  # [layer]
                skip_logits = self._squash(torch.stack([-q, q], dim=-1))  # [layer, 2]
                skips = decisions.choose(f"layer{layer}.skips", skip_logits, given(layer))
                decisions.add_penalty(skip_kl(skip_logits, self.skip_target))
                flat.extend(int(s) for s in skips)
                chosen = skips.to(h.dtype).view(1, layer)
                # sum of the selected anchors over (1 + how many): the reference's "mean", which also
                # stays defined when no skip is chosen
                inputs = chosen @ torch.cat(anchors, dim=0) / (1.0 + chosen.sum())
            else:
                inputs = self.lstm.start
            anchors.append(h)
            anchor_keys.append(self.attn_anchor(h))
        if forced is not None and pos != len(forced):
            raise MusicnasError("architecture has more decisions than this controller's space expects")
        return arch if arch is not None else self._arch_from_flat(flat)

    def _arch_from_flat(self, flat: list[int]):
        from musicnas.spaces import get_space_module

        return get_space_module("macro").Arch.from_flat(flat, self.space)

    def arch_stats(self, arch) -> dict:
        return {"skip_rate": arch.skip_rate}


CONTROLLERS = ("lstm", "factorized")


def make_controller(space, seed: int = 0, policy: str = "lstm", **kwargs) -> Controller:
    """The controller for ``space``: ``policy`` ``"lstm"`` (ENAS, dispatch on ``space.type``) or
    ``"factorized"`` (TuNAS-style independent categoricals, ``search/factorized.py``); ``kwargs`` go to
    its constructor."""
    if policy == "factorized":
        from musicnas.search.factorized import FactorizedController

        return FactorizedController(space, seed=seed, **kwargs)
    if policy != "lstm":
        raise MusicnasError(f"unknown controller {policy!r}: choose one of {', '.join(CONTROLLERS)}")
    kind = getattr(space, "type", None)
    if kind == "macro":
        return MacroController(space, seed=seed, **kwargs)
    if kind == "micro":
        # imported lazily: the micro controller lives in its own module and subclasses Controller
        module = importlib.import_module("musicnas.search.micro_controller")
        return module.MicroController(space, seed=seed, **kwargs)
    raise MusicnasError(f"no controller for search space type {kind!r}: use 'macro' or 'micro'")
