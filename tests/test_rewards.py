"""Cost-aware rewards: MnasNet soft/hard and TuNAS absolute on hand-computed cases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.runtime import MusicnasError
from musicnas.search.rewards import make_reward


@dataclass(frozen=True)
class FakeCost:
    params: int
    macs: int


def test_accuracy_reward_ignores_cost():
    reward = make_reward("accuracy")
    assert not reward.needs_cost
    assert reward(0.625, None, None) == 0.625
    assert reward(0.625, None, FakeCost(10**9, 10**12)) == 0.625


def test_mnas_soft_hand_computed():
    reward = make_reward("mnas-soft", metric="macs", target=1000)
    # T = 2·T0 above target: 0.8 · 2^-0.07
    assert reward(0.8, None, FakeCost(params=1, macs=2000)) == pytest.approx(0.8 * 2**-0.07)
    # T = T0/2 below target: alpha = -0.07 rewards being small a little: 0.8 · 0.5^-0.07 > 0.8
    assert reward(0.8, None, FakeCost(params=1, macs=500)) == pytest.approx(0.8 * 0.5**-0.07)
    assert reward(0.8, None, FakeCost(params=1, macs=1000)) == pytest.approx(0.8)


def test_mnas_hard_hand_computed():
    reward = make_reward("mnas-hard", metric="params", target=100)
    # below target: no effect (alpha = 0); above: accuracy · T0/T
    assert reward(0.9, None, FakeCost(params=50, macs=1)) == pytest.approx(0.9)
    assert reward(0.9, None, FakeCost(params=300, macs=1)) == pytest.approx(0.9 / 3)


def test_tunas_hand_computed():
    reward = make_reward("tunas", metric="macs", target=1000)
    assert reward(0.7, None, FakeCost(params=1, macs=1500)) == pytest.approx(0.7 - 0.1 * 0.5)
    assert reward(0.7, None, FakeCost(params=1, macs=250)) == pytest.approx(0.7 - 0.1 * 0.75)
    assert reward(0.7, None, FakeCost(params=1, macs=1000)) == pytest.approx(0.7)


@settings(max_examples=40, deadline=None)
@given(
    acc=st.floats(0.01, 1.0),
    target=st.floats(1.0, 1e9),
    lo=st.floats(1.0, 1e10),
    factor=st.floats(1.001, 100.0),
)
def test_rewards_monotonic_in_cost_above_target(acc, target, lo, factor):
    """Above the target every cost-aware reward falls as the cost grows; MnasNet soft falls everywhere."""
    hi = lo * factor
    for name in ("mnas-soft", "mnas-hard", "tunas"):
        reward = make_reward(name, metric="macs", target=target)
        r_lo = reward(acc, None, FakeCost(1, lo))
        r_hi = reward(acc, None, FakeCost(1, hi))
        if lo >= target or name == "mnas-soft":
            assert r_hi <= r_lo + 1e-12, (name, lo, hi, target)
        if name == "tunas" and hi <= target:
            # below the target TuNAS pulls *up* towards it: cheaper is worse
            assert r_hi >= r_lo - 1e-12
    # and every reward grows with accuracy at a fixed cost
    for name in ("accuracy", "mnas-soft", "mnas-hard", "tunas"):
        reward = make_reward(name, metric="macs", target=target)
        assert reward(acc, None, FakeCost(1, lo)) < reward(acc + 0.5, None, FakeCost(1, lo))
        assert math.isfinite(reward(acc, None, FakeCost(1, lo)))


def test_cost_rewards_need_a_target_and_a_known_metric():
    with pytest.raises(MusicnasError, match="cost target"):
        make_reward("tunas", metric="macs", target=None)
    with pytest.raises(MusicnasError, match="unknown cost metric"):
        make_reward("mnas-soft", metric="flops", target=10)
    with pytest.raises(MusicnasError, match="unknown reward"):
        make_reward("speed")
    with pytest.raises(MusicnasError, match="no cost"):
        make_reward("tunas", metric="macs", target=10)(0.5, None, None)
