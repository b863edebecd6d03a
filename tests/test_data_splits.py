"""Group-wise stratified splits: no group crosses splits, every class reaches every split, seeded."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.data.splits import (
    ClipRow,
    assign_splits,
    check_splits_nonempty,
    read_splits_csv,
    split_targets,
    write_splits_csv,
)
from musicnas.runtime import MusicnasError

groups_per_class = st.dictionaries(
    st.sampled_from(["rock", "jazz", "pop", "blues", "metal"]), st.integers(1, 30), min_size=2, max_size=5
)
fractions = st.tuples(st.sampled_from([0.1, 0.15, 0.2, 0.3]), st.sampled_from([0.1, 0.15, 0.2, 0.3]))


def make_groups(spec: dict[str, int]) -> dict[str, str]:
    return {f"{label}/track{i:03d}": label for label, n in spec.items() for i in range(n)}


@settings(max_examples=60, deadline=None)
@given(spec=groups_per_class, fr=fractions, seed=st.integers(0, 2**31))
def test_every_group_one_split_and_classes_covered(spec, fr, seed):
    groups = make_groups(spec)
    result = assign_splits(groups, val_fraction=fr[0], test_fraction=fr[1], seed=seed)
    assert set(result) == set(groups)
    assert set(result.values()) <= {"train", "val", "test"}
    by_class = defaultdict(Counter)
    for g, s in result.items():
        by_class[groups[g]][s] += 1
    for label, n in spec.items():
        counts = by_class[label]
        assert counts["train"] >= 1
        if n >= 3:
            assert counts["val"] >= 1 and counts["test"] >= 1
        # close to the asked fractions (rounding, plus the at-least-one rule)
        assert abs(counts["test"] - n * fr[1]) <= max(1, 0.5 + 1e-9)
    # deterministic for a seed
    assert assign_splits(groups, val_fraction=fr[0], test_fraction=fr[1], seed=seed) == result


def test_seed_changes_assignment_and_classes_are_independent():
    groups = make_groups({"rock": 20, "jazz": 20})
    a = assign_splits(groups, seed=0)
    b = assign_splits(groups, seed=1)
    assert a != b
    # adding a class does not reshuffle the others
    more = assign_splits({**groups, **make_groups({"pop": 7})}, seed=0)
    assert {g: more[g] for g in groups} == a


@settings(max_examples=30, deadline=None)
@given(spec=groups_per_class, seed=st.integers(0, 1000), data=st.data())
def test_explicit_splits_win(spec, seed, data):
    groups = make_groups(spec)
    names = sorted(groups)
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    explicit = {g: data.draw(st.sampled_from(["train", "val", "test"])) for g in chosen}
    result = assign_splits(groups, explicit, seed=seed)
    assert all(result[g] == s for g, s in explicit.items())
    assert set(result) == set(groups)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (6, (4, 1, 1)), (10, (6, 2, 2)), (100, (70, 15, 15))],
)
def test_split_targets(n, expected):
    t = split_targets(n, 0.15, 0.15)
    assert (t["train"], t["val"], t["test"]) == expected


def test_empty_split_is_a_hard_error():
    rows = [ClipRow(f"/a/{i}.wav", str(i), "x" if i % 2 else "y", "train", 0.0) for i in range(4)]
    with pytest.raises(MusicnasError, match="val, test would hold no clips"):
        check_splits_nonempty(rows, ["x", "y"])


def test_bad_fractions_are_user_errors():
    with pytest.raises(MusicnasError, match="sum to less than 1"):
        assign_splits({"a": "x", "b": "y"}, val_fraction=0.6, test_fraction=0.5)


def test_splits_csv_round_trip():
    rows = [
        ClipRow("/d/a, b.wav", "g,1", "rock", "train", 3.0),
        ClipRow('/d/"q".wav', "g2", "jazz", "test", 0.5),
    ]
    text = write_splits_csv(rows)
    assert text.splitlines()[0] == "path,group,label,split,offset"
    assert read_splits_csv(text) == rows
