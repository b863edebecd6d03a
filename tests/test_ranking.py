"""Ranking quality: Kendall tau between shared-weight and stand-alone accuracy."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.baselines.ranking import kendall_tau, ranking_result, write_ranking
from musicnas.runtime import MusicnasError


def brute_force_tau(a, b):
    concordant = discordant = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        s = (a[i] - a[j]) * (b[i] - b[j])
        concordant += s > 0
        discordant += s < 0
    return (concordant - discordant) / (len(a) * (len(a) - 1) / 2)


@settings(deadline=None, max_examples=30)
@given(st.permutations(list(range(8))), st.permutations(list(range(8))))
def test_tau_counts_concordant_pairs(a, b):
    tau, p = kendall_tau([x / 10 for x in a], [x / 10 for x in b])
    assert tau == pytest.approx(brute_force_tau(a, b))
    assert 0.0 <= p <= 1.0


def test_agreement_and_reversal():
    acc = [0.1 * i for i in range(10)]
    tau, p = kendall_tau(acc, acc)
    assert tau == pytest.approx(1.0) and p < 0.001
    tau, p = kendall_tau(acc, acc[::-1])
    assert tau == pytest.approx(-1.0) and p < 0.001


def test_undefined_tau_is_none_not_nan():
    assert kendall_tau([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) == (None, None)
    assert kendall_tau([0.5], [0.1]) == (None, None)
    result = ranking_result([0.5, 0.5], [0.1, 0.2], [{}, {}])
    assert result["kendall_tau"] is None and "undefined" in result["note"]


def test_mismatched_lengths_are_errors():
    with pytest.raises(MusicnasError, match="one shared-weight and one stand-alone"):
        kendall_tau([0.1, 0.2], [0.1])
    with pytest.raises(MusicnasError, match="architectures"):
        ranking_result([0.1, 0.2], [0.1, 0.3], [{}])


def test_ranking_json_has_the_report_shape(tmp_path):
    archs = [{"flat": [i]} for i in range(4)]
    path = write_ranking(
        tmp_path / "ranking.json", ranking_result([0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.4, 0.3], archs)
    )
    data = json.loads(path.read_text())
    assert {"shared", "standalone", "kendall_tau", "p_value", "archs"} <= set(data)
    assert data["archs"] == archs and data["n"] == 4
    assert data["kendall_tau"] == pytest.approx(brute_force_tau([4, 3, 2, 1], [1, 2, 4, 3]))
