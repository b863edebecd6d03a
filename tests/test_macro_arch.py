"""Macro space and architectures: validation, encodings, size, sampling."""

from __future__ import annotations

import collections
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.runtime import MusicnasError, make_generator
from musicnas.spaces import get_space_module, load_arch
from musicnas.spaces.macro import Arch, MacroArch, MacroSpace, Space
from musicnas.spaces.macro.arch import OP_NAMES, log10_size

spaces = st.builds(
    MacroSpace,
    num_layers=st.integers(1, 7),
    num_branches=st.integers(4, 6),
    whole_channels=st.booleans(),
    channels=st.integers(2, 9),
)


@st.composite
def space_and_arch(draw):
    space = draw(spaces)
    return space, space.sample(draw(st.integers(0, 2**31 - 1)))


def test_module_exports_the_contract_names():
    module = get_space_module("macro")
    assert (
        module.Space is MacroSpace and module.Arch is MacroArch and Space is MacroSpace and Arch is MacroArch
    )
    assert callable(module.extract_subnet) and module.SearchNet.__name__ == "MacroSearchNet"
    assert module.FixedNet.__name__ == "FixedMacroNet"


@settings(max_examples=40, deadline=None)
@given(space_and_arch())
def test_flat_and_json_round_trip(pair):
    space, arch = pair
    flat = arch.to_flat()
    assert len(flat) == space.flat_length
    assert MacroArch.from_flat(flat, space) == arch
    data = json.loads(json.dumps(arch.to_json()))  # survives real JSON
    assert data["format"] == "musicnas-arch" and data["version"] == 1 and data["space"]["type"] == "macro"
    back = MacroArch.from_json(data)
    assert back == arch and hash(back) == hash(arch) and back.key() == arch.key()
    assert load_arch(data) == arch
    assert MacroSpace.from_dict(space.to_dict()) == space


def test_reference_flat_length_and_example():
    space = MacroSpace(num_layers=12, num_branches=6, whole_channels=True, channels=36)
    assert space.flat_length == 78
    ranges = MacroSpace(num_layers=12, num_branches=6, whole_channels=False, channels=36)
    assert ranges.flat_length == 12 * 12 + 66
    arch = MacroArch.from_flat([1, 3, 1, 5, 0, 1], MacroSpace(num_layers=3))
    assert arch.ops == (1, 3, 5) and arch.skips == ((), (1,), (0, 1))
    assert arch.skip_sources(2) == [1]


def test_load_arch_reads_a_file(tmp_path):
    arch = MacroSpace(num_layers=4).sample(5)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch.to_json()))
    assert load_arch(path) == arch


@pytest.mark.parametrize(
    ("space", "flat", "message"),
    [
        (MacroSpace(num_layers=3), [0, 1, 0, 1], "has 6 integers, got 4"),
        (MacroSpace(num_layers=3), [0, 1, 0] * 26, "fit a 12-layer whole-channels space"),
        (MacroSpace(num_layers=3, num_branches=4), [0, 4, 0, 1, 0, 1], "layer 1: op 4 is out of range"),
        (MacroSpace(num_layers=3), [0, -1, 1, 0, 1, 0], "op -1 is out of range"),
        (MacroSpace(num_layers=3), [0, 1, 2, 1, 1, 0], "skip bit 0 must be 0 or 1"),
        (MacroSpace(num_layers=2, num_branches=4, whole_channels=False, channels=4), [4, 1] + [0, 1] * 7 + [0],
         "start 4 must be in 0..3"),
        (MacroSpace(num_layers=2, num_branches=4, whole_channels=False, channels=4), [2, 3] + [0, 1] * 7 + [0],
         "count 3 must be in 1..2"),
        (MacroSpace(num_layers=2, num_branches=4, whole_channels=False, channels=4), [0, 0] + [0, 1] * 7 + [0],
         "count 0 must be in 1..4"),
    ],
)  # fmt: skip
def test_invalid_flat_architectures_name_the_problem(space, flat, message):
    with pytest.raises(MusicnasError, match=message):
        MacroArch.from_flat(flat, space)


@settings(max_examples=25, deadline=None)
@given(space_and_arch(), st.data())
def test_corrupted_architectures_are_rejected(pair, data):
    space, arch = pair
    kind = data.draw(st.sampled_from(["layers", "skip_len", "skip_value", "op", "range"]))
    if kind == "layers":  # one layer too many or too few
        other = MacroSpace(space.num_layers + data.draw(st.sampled_from([-1, 1])) or 2, space.num_branches,
                           space.whole_channels, space.channels)  # fmt: skip
        with pytest.raises(MusicnasError, match="layers|integers"):
            MacroArch(other, ops=arch.ops, skips=arch.skips, ranges=arch.ranges)
        return
    if kind == "skip_len":
        layer = data.draw(st.integers(0, space.num_layers - 1))
        skips = list(arch.skips)
        skips[layer] = (*skips[layer], 0)
        with pytest.raises(MusicnasError, match=f"layer {layer}: expected {layer} skip bits"):
            MacroArch(space, ops=arch.ops, skips=skips, ranges=arch.ranges)
        return
    if kind == "skip_value":
        if space.num_layers < 2:
            return
        layer = data.draw(st.integers(1, space.num_layers - 1))
        skips = list(arch.skips)
        skips[layer] = (data.draw(st.sampled_from([2, -1, True])),) + skips[layer][1:]
        with pytest.raises(MusicnasError, match="skip bit 0 must be 0 or 1"):
            MacroArch(space, ops=arch.ops, skips=skips, ranges=arch.ranges)
        return
    layer = data.draw(st.integers(0, space.num_layers - 1))
    if space.whole_channels:
        ops = list(arch.ops)
        ops[layer] = data.draw(st.sampled_from([space.num_branches, 6, -1, 99]))
        with pytest.raises(MusicnasError, match=f"layer {layer}: op .* out of range"):
            MacroArch(space, ops=ops, skips=arch.skips)
    else:
        ranges = [list(r) for r in arch.ranges]
        start = data.draw(st.integers(0, space.channels - 1))
        ranges[layer][0] = (start, space.channels - start + 1)  # one channel past the end
        with pytest.raises(MusicnasError, match=f"layer {layer}, branch 0: count"):
            MacroArch(space, skips=arch.skips, ranges=ranges)


def test_mode_mismatch_is_rejected():
    whole, ranges = MacroSpace(num_layers=2), MacroSpace(num_layers=2, whole_channels=False, channels=3)
    with pytest.raises(MusicnasError, match="channel ranges but its space uses whole channels"):
        MacroArch(whole, ops=(0, 0), skips=((), (0,)), ranges=ranges.sample(0).ranges)
    with pytest.raises(MusicnasError, match="whole-channel ops but its space uses channel ranges"):
        MacroArch(ranges, ops=(0, 0), skips=((), (0,)), ranges=ranges.sample(0).ranges)


def test_bad_json_is_rejected():
    arch = MacroSpace(num_layers=3).sample(1)
    data = arch.to_json()
    with pytest.raises(MusicnasError, match="format"):
        MacroArch.from_json({**data, "format": "other"})
    with pytest.raises(MusicnasError, match="version 2 is not supported"):
        MacroArch.from_json({**data, "version": 2})
    edited = json.loads(json.dumps(data))
    edited["layers"][1]["op"] = (edited["layers"][1]["op"] + 1) % 6
    with pytest.raises(MusicnasError, match="'layers' and 'flat' describe different"):
        MacroArch.from_json(edited)
    with pytest.raises(MusicnasError, match="unknown keys"):
        MacroArch.from_json({**data, "space": {**data["space"], "cells": 3}})


@pytest.mark.parametrize(
    "space",
    [
        MacroSpace(num_layers=3, num_branches=4),
        MacroSpace(num_layers=4, num_branches=5),
        MacroSpace(num_layers=2, num_branches=4, whole_channels=False, channels=2),
        MacroSpace(num_layers=1, num_branches=4, whole_channels=False, channels=3),
    ],
)
def test_size_matches_enumeration(space):
    archs = list(space.enumerate())
    assert len(archs) == len(set(archs)) == len({a.key() for a in archs}) == space.size()
    assert abs(log10_size(space) - __import__("math").log10(space.size())) < 1e-9


def test_size_of_reference_space():
    assert MacroSpace(12, 6, True, 36).size() == 6**12 * 2**66


def test_sampling_is_seeded_and_uniform():
    space = MacroSpace(num_layers=2, num_branches=4, whole_channels=False, channels=2)  # 3^8 * 2 archs
    assert space.sample(7) == space.sample(7) == space.sample(make_generator(7))
    assert len({space.sample(s) for s in range(20)}) > 15
    tiny = MacroSpace(num_layers=2, num_branches=4)  # 4 * 4 * 2 = 32 architectures
    gen = make_generator(0)
    counts = collections.Counter(tiny.sample(gen) for _ in range(3200))
    assert set(counts) == set(tiny.enumerate())
    # expected 100 each; a non-uniform sampler (e.g. skewed skips or ops) leaves this band
    assert max(counts.values()) < 150 and min(counts.values()) > 55
    ranges = collections.Counter(
        MacroSpace(num_layers=1, num_branches=4, whole_channels=False, channels=3).sample(gen).ranges[0][0]
        for _ in range(1200)
    )
    assert set(ranges) == {(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1)}
    assert max(ranges.values()) < 260 and min(ranges.values()) > 140  # 200 each if uniform over pairs


def test_space_validation_and_options():
    with pytest.raises(MusicnasError, match="branches must be 4, 5 or 6"):
        MacroSpace(num_branches=7)
    with pytest.raises(MusicnasError, match="layers must be at least 1"):
        MacroSpace(num_layers=0)
    with pytest.raises(MusicnasError, match="channels must be at least 2"):
        MacroSpace(channels=1)
    assert MacroSpace.from_options(layers=None, channels=None, branches=None, whole_channels=None,
                                   cells=None, nodes=None) == MacroSpace(6, 6, True, 24)  # fmt: skip
    assert MacroSpace.from_options(layers=3, branches=4, whole_channels=False) == MacroSpace(3, 4, False, 24)
    with pytest.raises(MusicnasError, match="--cells, --nodes do not apply to the macro space"):
        MacroSpace.from_options(layers=3, cells=2, nodes=5)


def test_pool_layers_follow_the_reference():
    assert MacroSpace(num_layers=12).pool_layers == (3, 7)
    assert MacroSpace(num_layers=6).pool_layers == (1, 3)
    assert MacroSpace(num_layers=1).pool_layers == ()


def test_str_is_one_line_per_layer():
    arch = MacroArch.from_flat([1, 3, 1, 5, 0, 1], MacroSpace(num_layers=3, num_branches=6))
    lines = str(arch).splitlines()
    assert len(lines) == 4
    assert OP_NAMES[1] in lines[1] and "skips: stem" in lines[2] and "skips: L0" in lines[3]


def test_reductions_needed_tracks_consumers():
    # 6 layers: pools after L1 and L3. Only L5 skips, to the stem: the stem must survive both reductions.
    flat = [0] + [0, 0] + [0, 0, 0] + [0, 0, 0, 0] + [0, 0, 0, 0, 0] + [0, 1, 0, 0, 0, 0]
    arch = MacroArch.from_flat(flat, MacroSpace(num_layers=6))
    assert arch.reductions_needed() == {1: [0, 2], 3: [0, 4]}


def test_numpy_and_torch_integers_are_normalised():
    import numpy as np
    import torch

    space = MacroSpace(num_layers=3)
    arch = MacroArch.from_flat([1, 3, 1, 5, 0, 1], space)
    from_numpy = MacroArch.from_flat(np.array([1, 3, 1, 5, 0, 1]), space)
    from_torch = MacroArch.from_flat(list(torch.tensor([1, 3, 1, 5, 0, 1])), space)
    assert from_numpy == arch == from_torch and hash(from_numpy) == hash(arch)
    assert json.dumps(from_torch.to_json()) == json.dumps(arch.to_json())
    with pytest.raises(MusicnasError, match="op must be an integer"):
        MacroArch.from_flat([1.5, 3, 1, 5, 0, 1], space)


def test_pool_layers_differ_from_the_authors_code_only_when_n_is_2_mod_3():
    """Decided: keep [N//3 - 1, 2N//3 - 1] (enas-reference.md). The authors' general_child.py uses
    pd = N//3, [pd - 1, 2 pd - 1]; the two agree unless N = 2 (mod 3), never for a published size (12),
    and ours splits such N more evenly (N = 8: stages of 2, 3, 3 layers; the authors' 2, 2, 4)."""

    def authors(n):
        pd = n // 3
        return tuple(sorted({p for p in (pd - 1, 2 * pd - 1) if p >= 0}))

    for n in range(1, 40):
        assert (MacroSpace(num_layers=n).pool_layers == authors(n)) == (n % 3 != 2), n
    assert MacroSpace(num_layers=8).pool_layers == (1, 4) and authors(8) == (1, 3)
