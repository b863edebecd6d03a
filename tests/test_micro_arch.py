"""Micro space encodings: JSON and flat round-trips, validation, size, seeded sampling, CLI options."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.runtime import MusicnasError
from musicnas.spaces import get_space_module, load_arch
from musicnas.spaces.micro import MicroArch, MicroSpace
from musicnas.spaces.micro.arch import NUM_OPS

spaces = st.builds(
    MicroSpace,
    num_cells=st.integers(1, 6),
    num_nodes=st.integers(1, 6),
    channels=st.integers(1, 64),
)


@st.composite
def archs(draw):
    space = draw(spaces)
    cells = []
    for _ in range(2):
        cell = []
        for j in range(space.num_nodes):
            cell.append(
                (
                    draw(st.integers(0, j + 1)),
                    draw(st.integers(0, NUM_OPS - 1)),
                    draw(st.integers(0, j + 1)),
                    draw(st.integers(0, NUM_OPS - 1)),
                )
            )
        cells.append(cell)
    return MicroArch(space=space, normal=cells[0], reduction=cells[1])


@settings(deadline=None, max_examples=40)
@given(archs())
def test_json_round_trip_through_text(arch):
    text = json.dumps(arch.to_json())
    back = MicroArch.from_json(json.loads(text))
    assert back == arch
    assert hash(back) == hash(arch)
    assert back.key() == arch.key()
    # the registry reads it as well, dispatching on the recorded space
    assert load_arch(json.loads(text)) == arch


@settings(deadline=None, max_examples=40)
@given(archs())
def test_flat_round_trip_and_layout(arch):
    flat = arch.to_flat()
    b = arch.space.num_nodes
    assert len(flat) == 8 * b
    # normal cell first (4B ints), then the reduction cell, each node [index_1, op_1, index_2, op_2]
    assert flat[: 4 * b] == [v for node in arch.normal for v in node]
    assert flat[4 * b :] == [v for node in arch.reduction for v in node]
    assert MicroArch.from_flat(flat, arch.space) == arch


def test_json_file_records_the_space(tmp_path):
    arch = MicroSpace(num_cells=3, num_nodes=4, channels=20).sample(5)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch.to_json()))
    data = json.loads(path.read_text())
    assert data["format"] == "musicnas-arch" and data["version"] == 1
    assert data["space"] == {"type": "micro", "num_cells": 3, "num_nodes": 4, "channels": 20}
    assert load_arch(path) == arch


def test_numpy_integers_are_accepted_and_normalised():
    np = pytest.importorskip("numpy")
    space = MicroSpace(num_nodes=2)
    flat = np.array([0, 1, 1, 2, 2, 0, 0, 4] * 2)
    arch = MicroArch.from_flat(flat, space)
    assert arch == MicroArch.from_flat([int(v) for v in flat], space)
    assert all(type(v) is int for v in arch.to_flat())


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ([0, 0, 2, 0] + [0, 0, 0, 0], "index_2=2 is out of range"),  # node 0 reads only the two inputs
        ([0, 5, 1, 0] + [0, 0, 0, 0], "op_1=5 is not an op id"),
        ([0, -1, 1, 0] + [0, 0, 0, 0], "op_1=-1"),
        ([0, 0, 1, 0] + [-1, 0, 0, 0], "reduction cell node 0 index_1=-1"),
        ([0, 0, 1, 0] + [0, 0, 1.0, 0], "must be an integer"),
        ([0, 0, 1, 0] + [0, 0, True, 0], "must be an integer"),
        ([0, 0, 1, 0], "has 8 integers"),
    ],
)
def test_invalid_flat_architectures_are_rejected_clearly(flat, message):
    with pytest.raises(MusicnasError, match=message):
        MicroArch.from_flat(flat, MicroSpace(num_nodes=1))


def test_invalid_cells_and_json_are_rejected_clearly():
    space = MicroSpace(num_nodes=2)
    good = space.sample(0)
    with pytest.raises(MusicnasError, match="normal cell has 1 nodes but the space has num_nodes=2"):
        MicroArch(space=space, normal=good.normal[:1], reduction=good.reduction)
    with pytest.raises(MusicnasError, match=r"must be \[index_1, op_1, index_2, op_2\]"):
        MicroArch(space=space, normal=((0, 0, 1),) + good.normal[1:], reduction=good.reduction)
    data = good.to_json()
    with pytest.raises(MusicnasError, match="version"):
        MicroArch.from_json({**data, "version": 99})
    with pytest.raises(MusicnasError, match="format"):
        MicroArch.from_json({**data, "format": "other"})
    with pytest.raises(MusicnasError, match="expected a micro space"):
        MicroArch.from_json({**data, "space": {**data["space"], "type": "macro"}})
    inconsistent = {**data, "normal": [[1, 1, 1, 1], [0, 0, 0, 0]]}
    with pytest.raises(MusicnasError, match="inconsistent"):
        MicroArch.from_json(inconsistent)
    with pytest.raises(MusicnasError, match="num_nodes must be >= 1"):
        MicroSpace(num_nodes=0)


def test_space_size_matches_enumeration_of_a_tiny_space():
    space = MicroSpace(num_nodes=1)
    # Enumerate a superset of candidate encodings (indices 0..2, op ids 0..5) and count the valid ones.
    candidates = itertools.product(range(3), range(NUM_OPS + 1), range(3), range(NUM_OPS + 1))
    valid_cells = []
    for node in candidates:
        try:
            MicroArch(space=space, normal=(node,), reduction=(node,))
        except MusicnasError:
            continue
        valid_cells.append(node)
    distinct = {
        MicroArch(space=space, normal=(a,), reduction=(b,)).key() for a in valid_cells for b in valid_cells
    }
    assert space.size() == len(distinct)


def test_space_size_grows_with_nodes():
    # node j adds ((j + 2) * 5)^2 choices per cell, for both cells
    small, big = MicroSpace(num_nodes=2).size(), MicroSpace(num_nodes=3).size()
    assert big == small * (4 * NUM_OPS) ** 4
    assert isinstance(MicroSpace(num_nodes=8).size(), int)


def test_sampling_is_seeded_and_covers_the_choices():
    space = MicroSpace(num_nodes=3)
    assert space.sample(7) == space.sample(7)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [space.sample(g1) for _ in range(5)] == [space.sample(g2) for _ in range(5)]
    g = torch.Generator().manual_seed(0)
    samples = [space.sample(g) for _ in range(200)]
    assert len({a.key() for a in samples}) == 200
    last_node_inputs = {a.normal[2][0] for a in samples}
    ops = {node[1] for a in samples for node in a.normal}
    assert last_node_inputs == {0, 1, 2, 3}
    assert ops == set(range(NUM_OPS))


def test_from_options_and_registry():
    module = get_space_module("micro")
    assert module.Space is MicroSpace
    space = module.Space.from_options(
        cells=4, nodes=3, channels=8, layers=None, branches=None, whole_channels=None
    )
    assert space == MicroSpace(num_cells=4, num_nodes=3, channels=8)
    assert MicroSpace.from_dict(space.to_dict()) == space
    assert MicroSpace.from_options() == MicroSpace()
    with pytest.raises(MusicnasError, match="--layers, --branches only apply to the macro space"):
        MicroSpace.from_options(cells=2, layers=12, branches=6)
    with pytest.raises(MusicnasError, match="--whole-channels only applies"):
        MicroSpace.from_options(whole_channels=True)


def test_reduction_positions_and_str():
    assert MicroSpace(num_cells=6).reduction_cells == (2, 5)
    assert MicroSpace(num_cells=2).reduction_cells == (0, 2)
    arch = MicroArch.from_flat([1, 4, 0, 2] + [0, 0, 1, 3], MicroSpace(num_nodes=1))
    text = str(arch)
    assert "identity(prev) + avg_pool_3x3(prev_prev)" in text
    assert "sep_conv_3x3(prev_prev) + max_pool_3x3(prev)" in text
    assert MicroArch.unused(arch.normal) == [2]


def test_reduction_cells_differ_from_the_authors_code_only_when_n_is_2_mod_3():
    """Decided: keep [N//3, 2N//3 + 1]; the authors' micro_child.py has [pd, 2 pd + 1], pd = N//3. They
    agree unless N = 2 (mod 3), never for a published size (6 in search, 15 in the final network)."""
    for n in range(1, 33):  # the space allows up to 32 normal cells per stage
        pd = n // 3
        assert (MicroSpace(num_cells=n).reduction_cells == (pd, 2 * pd + 1)) == (n % 3 != 2), n
