"""Rewards for the ENAS controller: a function of (accuracy, architecture, cost) -> float.

The search loop only calls ``reward(accuracy, arch, cost)``; a reward that needs the cost says so with
``needs_cost = True`` and the loop then computes the architecture's cost (``spaces.cost.count_cost``,
cached per architecture key). Formulas follow enas-reference.md §5:

* ``accuracy``  : R = Q (the reference ENAS reward; the entropy bonus is added by the loop)
* ``mnas-soft`` : R = Q · (T/T0)^w, w = α if T ≤ T0 else β, α = β = −0.07   (MnasNet)
* ``mnas-hard`` : the same with α = 0, β = −1                                 (MnasNet)
* ``tunas``     : R = Q + β · |T/T0 − 1|, β = −0.1                            (TuNAS absolute reward)

T is the architecture's cost in ``cost_metric``: MACs, parameters, or latency in milliseconds as
predicted by the machine's latency table (``musicnas.latency``; ``search --target-latency-ms T0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicnas.runtime import MusicnasError

REWARD_NAMES = ("accuracy", "mnas-soft", "mnas-hard", "tunas")
COST_METRICS = ("macs", "params", "latency")
# cost metric -> field of spaces.cost.Cost; latency is in milliseconds, predicted by musicnas.latency's table
COST_FIELDS = {"macs": "macs", "params": "params", "latency": "latency_ms"}


def cost_value(cost: Any, metric: str) -> float:
    """The number ``metric`` of a ``Cost`` (or a dict with that key)."""
    if cost is None:
        raise MusicnasError(f"the reward needs the architecture's {metric} but no cost was computed")
    name = COST_FIELDS.get(metric, metric)
    value = cost.get(name) if isinstance(cost, dict) else getattr(cost, name, None)
    if value is None:
        raise MusicnasError(
            f"cost metric {metric!r} is not available (cost has {cost!r}); use --cost-metric macs or params, "
            "or --target-latency-ms for latency"
        )
    value = float(value)
    if value <= 0:
        raise MusicnasError(f"cost metric {metric} must be positive, got {value}")
    return value


@dataclass(frozen=True)
class AccuracyReward:
    """R = accuracy: the reference ENAS reward."""

    needs_cost = False
    name = "accuracy"

    def __call__(self, accuracy: float, arch=None, cost=None) -> float:
        return float(accuracy)

    def describe(self) -> dict:
        return {"name": self.name}


@dataclass(frozen=True)
class MnasReward:
    """MnasNet: R = Q · (T/T0)^w with w = alpha when T ≤ T0, else beta."""

    metric: str
    target: float
    alpha: float = -0.07
    beta: float = -0.07
    name: str = "mnas-soft"
    needs_cost = True

    def __post_init__(self):
        _check_target(self.metric, self.target)

    def __call__(self, accuracy: float, arch=None, cost=None) -> float:
        ratio = cost_value(cost, self.metric) / self.target
        exponent = self.alpha if ratio <= 1.0 else self.beta
        return float(accuracy) * ratio**exponent

    def describe(self) -> dict:
        return {
            "name": self.name,
            "metric": self.metric,
            "target": self.target,
            "alpha": self.alpha,
            "beta": self.beta,
        }


@dataclass(frozen=True)
class TunasReward:
    """TuNAS absolute reward: R = Q + beta · |T/T0 − 1|."""

    metric: str
    target: float
    beta: float = -0.1
    name: str = "tunas"
    needs_cost = True

    def __post_init__(self):
        _check_target(self.metric, self.target)
        if self.beta > 0:
            raise MusicnasError(f"the TuNAS cost weight beta must be <= 0 (a penalty), got {self.beta}")

    def __call__(self, accuracy: float, arch=None, cost=None) -> float:
        ratio = cost_value(cost, self.metric) / self.target
        return float(accuracy) + self.beta * abs(ratio - 1.0)

    def describe(self) -> dict:
        return {"name": self.name, "metric": self.metric, "target": self.target, "beta": self.beta}


def _check_target(metric: str, target) -> None:
    if metric not in COST_METRICS:
        raise MusicnasError(f"unknown cost metric {metric!r}: use one of {', '.join(COST_METRICS)}")
    if target is None or not float(target) > 0:
        raise MusicnasError(
            f"a cost-aware reward needs a positive cost target for {metric} (got {target}); pass --cost-target"
        )


def make_reward(name: str = "accuracy", metric: str = "macs", target: float | None = None, **kwargs):
    """The reward called ``name`` (one of ``REWARD_NAMES``); ``kwargs`` override alpha/beta."""
    if name == "accuracy":
        return AccuracyReward()
    if name == "mnas-soft":
        return MnasReward(
            metric, _as_float(target), kwargs.get("alpha", -0.07), kwargs.get("beta", -0.07), name
        )
    if name == "mnas-hard":
        return MnasReward(metric, _as_float(target), kwargs.get("alpha", 0.0), kwargs.get("beta", -1.0), name)
    if name == "tunas":
        return TunasReward(metric, _as_float(target), kwargs.get("beta", -0.1), name)
    raise MusicnasError(f"unknown reward {name!r}: choose one of {', '.join(REWARD_NAMES)}")


def _as_float(value):
    return None if value is None else float(value)
