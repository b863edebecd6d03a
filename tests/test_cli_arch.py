"""`musicnas arch sample` and `musicnas arch info` through click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from musicnas.cli.arch import arch as arch_group
from musicnas.spaces import load_arch
from musicnas.spaces.cost import count_cost
from musicnas.spaces.macro import FixedMacroNet, MacroArch, MacroSearchNet, MacroSpace


def _run(*args, ok=True):
    result = CliRunner().invoke(arch_group, list(args))
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_sample_prints_a_valid_seeded_architecture():
    first = json.loads(_run("sample", "--seed", "4", "--layers", "5", "--branches", "4").output)
    again = json.loads(_run("sample", "--seed", "4", "--layers", "5", "--branches", "4").output)
    other = json.loads(_run("sample", "--seed", "5", "--layers", "5", "--branches", "4").output)
    arch = load_arch(first)
    assert arch == MacroSpace(num_layers=5, num_branches=4).sample(4)
    assert first == again and first != other
    ranges = load_arch(json.loads(_run("sample", "--channel-ranges", "--channels", "8").output))
    assert ranges.space == MacroSpace(6, 6, False, 8) and ranges.ranges


def test_info_json_matches_count_cost(tmp_path):
    arch = MacroSpace(num_layers=4, channels=6).sample(2)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch.to_json()))
    fixed = json.loads(_run("info", str(path), "--input", "20x31", "--classes", "5", "--json").output)
    assert MacroArch.from_json(fixed["arch"]) == arch and fixed["network"] == "fixed"
    expected = count_cost(FixedMacroNet(arch, num_classes=5), (1, 20, 31))
    assert (fixed["params"], fixed["macs"]) == (expected.params, expected.macs)
    search = json.loads(
        _run("info", str(path), "--input", "20x31", "--classes", "5", "--search-net", "--json").output
    )
    expected = count_cost(MacroSearchNet(arch.space, num_classes=5), (1, 20, 31), arch)
    assert (search["params"], search["macs"]) == (expected.params, expected.macs)
    assert int(search["space_size"]) == arch.space.size()


def test_info_from_flat_ints_prints_readably():
    space = MacroSpace(num_layers=3, num_branches=4, channels=4)
    result = _run("info", "--arc", "[1, 3 1, 0 0 1]", "--layers", "3", "--branches", "4", "--channels", "4",
                  "--in-channels", "2", "--input", "16x9")  # fmt: skip
    arch = MacroArch.from_flat([1, 3, 1, 0, 0, 1], space)
    cost = count_cost(FixedMacroNet(arch, in_channels=2), (2, 16, 9))
    assert "sep_conv_5x5" in result.output and "skips: stem" in result.output
    assert f"parameters: {cost.params:,}" in result.output and f"{cost.macs:,}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "--arc", "1 0 3"], "has 21 integers, got 3"),
        (["info", "--arc", "1 0 x"], "--arc must be integers"),
        (["info"], "exactly one architecture"),
        (["info", "--arc", "0", "--layers", "1", "--input", "64by94"], "--input must be HEIGHTxWIDTH"),
        (
            ["info", "--arc", "0", "--layers", "1", "--cells", "3"],
            "--cells does not apply to the macro space",
        ),
        (["sample", "--branches", "7"], "'--branches': 7 is not in the range 4<=x<=6"),
    ],
)
def test_errors_are_clear(args, message):
    result = _run(*args, ok=False)
    assert result.exit_code != 0 and (message in str(result.exception) or message in result.output)


def test_space_options_with_a_file_are_rejected(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(MacroSpace(num_layers=2).sample(0).to_json()))
    result = _run("info", str(path), "--layers", "4", ok=False)
    assert "--layers only apply with --arc" in str(result.exception)
