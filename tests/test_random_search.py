"""Random search baselines: the uniform controller and distinct random architectures."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy import stats

from musicnas.runtime import MusicnasError, make_generator
from musicnas.search.random_search import UniformController, sample_distinct_archs
from musicnas.spaces import get_space_module


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks run fastest on one thread, and a second one only spins when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny_space():
    # 4 ops ** 2 layers * 2 skip bits ** 1 = 32 architectures
    return get_space_module("macro").Space(num_layers=2, num_branches=4, channels=4)


def test_uniform_controller_samples_every_architecture_equally_often(tiny_space):
    controller = UniformController(tiny_space, seed=3)
    n = 3200
    counts = Counter(controller.sample().arch.key() for _ in range(n))
    all_keys = [a.key() for a in tiny_space.enumerate()]
    assert set(counts) == set(all_keys)
    observed = [counts[k] for k in all_keys]
    assert stats.chisquare(observed).pvalue > 1e-3


def test_uniform_controller_has_nothing_to_train_and_exact_uniform_probabilities(tiny_space):
    controller = UniformController(tiny_space, seed=0)
    assert list(controller.parameters()) == []
    sample = controller.sample()
    assert sample.log_prob.item() == pytest.approx(-math.log(tiny_space.size()))
    assert sample.entropy.item() == pytest.approx(math.log(tiny_space.size()))
    assert sample.skip_penalty.item() == 0.0
    log_prob, entropy = controller.log_prob(sample.arch)
    assert log_prob.item() == pytest.approx(sample.log_prob.item())
    assert 0.0 <= sample.stats["skip_rate"] <= 1.0


def test_uniform_controller_is_seeded_and_resumable(tiny_space):
    a = UniformController(tiny_space, seed=7)
    b = UniformController(tiny_space, seed=7)
    c = UniformController(tiny_space, seed=8)
    seq_a = [a.sample().arch.key() for _ in range(20)]
    assert seq_a == [b.sample().arch.key() for _ in range(20)]
    assert seq_a != [c.sample().arch.key() for _ in range(20)]
    state = a.generator_state()
    next_a = [a.sample().arch.key() for _ in range(5)]
    b.set_generator_state(state)
    assert [b.sample().arch.key() for _ in range(5)] == next_a


def test_distinct_archs_are_distinct_and_seeded(tiny_space):
    archs = sample_distinct_archs(tiny_space, 10, make_generator(1))
    assert len({a.key() for a in archs}) == 10
    again = sample_distinct_archs(tiny_space, 10, make_generator(1))
    assert [a.key() for a in archs] == [a.key() for a in again]
    everything = sample_distinct_archs(tiny_space, 32, make_generator(2))
    assert len({a.key() for a in everything}) == 32
    with pytest.raises(MusicnasError, match="only 32"):
        sample_distinct_archs(tiny_space, 33, make_generator(0))


def test_uniform_controller_draws_valid_archs_of_a_bigger_space():
    space = get_space_module("macro").Space(num_layers=6, num_branches=6, channels=8)
    controller = UniformController(space, seed=0)
    for _ in range(5):
        arch = controller.sample().arch
        arch.validate()
        assert arch.space == space
    assert isinstance(controller.most_likely(), type(arch))
    torch.testing.assert_close(controller.skip_penalty(arch), torch.zeros(()))
