"""The benchmark table: mean and standard deviation over seeds, every column, markdown rendering."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.baselines.budget import PRESETS, Budget, parse_budget
from musicnas.baselines.table import MARKDOWN_HEADER, METHODS, TABLE_COLUMNS, summarise, to_markdown
from musicnas.runtime import MusicnasError


def run(method, seed, clip, track=None, **extra):
    base = {"params": 100, "macs": 1000, "search_time": 1.0, "train_time": 2.0, "total_time": 3.0}
    return {
        "method": method,
        "seed": seed,
        "clip_acc": clip,
        "track_acc": clip if track is None else track,
        **base,
        **extra,
    }


def test_mean_and_sample_std_over_seeds():
    runs = [run("enas", 0, 0.5, 0.6), run("enas", 1, 0.7, 0.9), run("enas", 2, 0.6, 0.6)]
    (row,) = summarise(runs)
    assert row["clip_acc_mean"] == pytest.approx(0.6)
    assert row["clip_acc_std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.6]))
    assert row["track_acc_std"] == pytest.approx(statistics.stdev([0.6, 0.9, 0.6]))
    assert row["seeds"] == [0, 1, 2]


def test_rows_follow_method_order_and_have_every_column():
    runs = [run(m, s, 0.1 * (i + 1)) for s in (1, 0) for i, m in enumerate(reversed(list(METHODS)))]
    rows = summarise(runs)
    assert [r["method"] for r in rows] == list(METHODS)
    for row in rows:
        assert set(TABLE_COLUMNS) <= set(row)
    md = to_markdown(rows).splitlines()
    assert md[0].count("|") == len(MARKDOWN_HEADER) + 1
    assert len(md) == 2 + len(METHODS)
    assert "±" in md[2]


def test_single_seed_has_no_spread_and_missing_values_say_so():
    (row,) = summarise([run("logreg", 0, 0.42, params=None, macs=None)])
    assert row["clip_acc_std"] is None and row["params"] is None
    line = to_markdown([row]).splitlines()[2]
    assert "42.0" in line and "±" not in line and "n/a" in line


@settings(deadline=None, max_examples=20)
@given(k=st.integers(1, 6), per=st.integers(1, 5))
def test_random_retrained_spends_exactly_the_search_epochs(k, per):
    budget = Budget(search_epochs=k * per, random_k=k)
    assert budget.random_epochs * budget.random_k == budget.search_epochs


def test_budget_parsing():
    assert parse_budget("tiny") == PRESETS["tiny"]
    b = parse_budget("reduced,search_epochs=12,random-k=4")
    assert (b.search_epochs, b.random_k, b.retrain_epochs) == (12, 4, PRESETS["reduced"].retrain_epochs)
    with pytest.raises(MusicnasError, match="preset"):
        parse_budget("huge")
    with pytest.raises(MusicnasError, match="KEY=VALUE"):
        parse_budget("tiny,epochs=3")
    with pytest.raises(MusicnasError, match="multiple of random_k"):
        parse_budget("search_epochs=7,random_k=2")
    with pytest.raises(MusicnasError, match="integer"):
        parse_budget("tiny,random_k=two")


def test_paired_wilcoxon_on_known_inputs():
    """Differences 0.05, -0.01, 0.02, 0.04, 0.03: ranks of |d| are 5, 1, 2, 4, 3, so W- = 1 and W+ = 14.
    Exactly, P(W <= 1) = 2/32 under the null (the empty set and {1}); two-sided p = 0.125."""
    from musicnas.baselines.table import paired_difference

    enas = [0.80, 0.70, 0.75, 0.74, 0.73]
    other = [0.75, 0.71, 0.73, 0.70, 0.70]
    result = paired_difference(enas, other)
    diffs = [0.05, -0.01, 0.02, 0.04, 0.03]
    assert result["n"] == 5
    assert result["p_value"] == pytest.approx(0.125)
    assert result["mean_diff"] == pytest.approx(statistics.mean(diffs))
    assert result["std_diff"] == pytest.approx(statistics.stdev(diffs))
    assert result["beats_by_one_std"] is True  # 0.026 > 0.0230
    # all five better: the smallest two-sided p five seeds can give, 2 / 2^5
    assert paired_difference([0.9] * 5, [0.8, 0.81, 0.79, 0.82, 0.78])["p_value"] == pytest.approx(0.0625)
    # no difference at all, or a single pair: no test
    assert paired_difference([0.5, 0.6], [0.5, 0.6])["p_value"] is None
    single = paired_difference([0.5], [0.4])
    assert single["p_value"] is None and single["std_diff"] is None and single["beats_by_one_std"] is False


def test_paired_comparisons_match_seeds_and_skip_missing_values():
    from musicnas.baselines.table import paired_comparisons, paired_markdown

    runs = [run("enas", s, 0.7 + 0.01 * s, file_acc=0.8) for s in range(3)]
    runs += [run("random_ws", s, 0.6, file_acc=None) for s in (0, 1, 2, 7)]
    runs += [run("random_retrained", 0, 0.9)]
    out = paired_comparisons(runs)
    ws_clip = next(c for c in out if c["against"] == "random_ws" and c["metric"] == "clip_acc")
    assert ws_clip["seeds"] == [0, 1, 2] and ws_clip["mean_diff"] == pytest.approx(0.11)
    assert not any(c["against"] == "random_ws" and c["metric"] == "file_acc" for c in out)  # no values
    rr = next(c for c in out if c["against"] == "random_retrained" and c["metric"] == "clip_acc")
    assert rr["n"] == 1 and rr["mean_diff"] == pytest.approx(-0.2) and rr["p_value"] is None
    md = paired_markdown(out)
    assert "+11.0" in md and "-20.0" in md


def test_file_accuracy_is_a_column_with_its_spread():
    runs = [run("enas", 0, 0.5, file_acc=0.6), run("enas", 1, 0.7, file_acc=0.8)]
    (row,) = summarise(runs)
    assert row["file_acc_mean"] == pytest.approx(0.7)
    assert row["file_acc_std"] == pytest.approx(statistics.stdev([0.6, 0.8]))
    header, _, line = to_markdown([row]).splitlines()
    assert header.split("|")[3].strip() == "File acc (%)" and line.split("|")[3].strip() == "70.0 ± 14.1"
