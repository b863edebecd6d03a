"""The classifier head options of the macro space: frequency bands (``head_bands``) and statistics
pooling (``head_pool``)."""

from __future__ import annotations

import pytest
import torch

from musicnas.runtime import MusicnasError
from musicnas.spaces import load_arch
from musicnas.spaces.macro import FixedMacroNet, MacroSearchNet, MacroSpace, extract_subnet
from musicnas.spaces.ops import GlobalAvgPoolHead


def _band_inputs(channels=3, height=8, width=5):
    """Two feature maps with the same global mean per channel: energy in the low or the high half."""
    low = torch.zeros(1, channels, height, width)
    high = torch.zeros(1, channels, height, width)
    low[:, :, : height // 2] = 1.0
    high[:, :, height // 2 :] = 1.0
    return low, high


def test_one_band_is_the_global_average_pool():
    torch.manual_seed(0)
    head = GlobalAvgPoolHead(3, 4, bands=1).eval()
    x = torch.randn(2, 3, 8, 5)
    expected = head.linear(x.mean(dim=(2, 3)))
    torch.testing.assert_close(head(x), expected)


def test_bands_tell_apart_what_a_global_pool_cannot():
    torch.manual_seed(0)
    low, high = _band_inputs()
    global_head, banded = GlobalAvgPoolHead(3, 4).eval(), GlobalAvgPoolHead(3, 4, bands=2).eval()
    torch.testing.assert_close(global_head(low), global_head(high))
    assert not torch.allclose(banded(low), banded(high))
    assert banded.linear.in_features == 6


def test_banded_space_round_trips_and_old_json_means_one_band():
    space = MacroSpace(num_layers=3, channels=4, stem_stride=2, head_bands=4)
    arch = space.sample(0)
    again = load_arch(arch.to_json())
    assert again.space.head_bands == 4 and again == arch
    plain = MacroSpace(num_layers=3, channels=4).sample(0).to_json()
    assert "head_bands" not in plain["space"]  # reference-head architectures keep their JSON
    assert load_arch(plain).space.head_bands == 1
    with pytest.raises(MusicnasError, match="head_bands"):
        MacroSpace(head_bands=0)


def test_fixed_search_and_extracted_nets_use_the_bands():
    torch.manual_seed(0)
    space = MacroSpace(num_layers=3, channels=4, head_bands=4)
    arch = space.sample(1)
    fixed = FixedMacroNet(arch, num_classes=5)
    assert fixed.head.bands == 4 and fixed.head.linear.in_features == 4 * fixed.out_channels
    search = MacroSearchNet(space, num_classes=5).eval()
    sub = extract_subnet(search, arch).eval()
    x = torch.randn(2, 1, 16, 12)
    torch.testing.assert_close(sub(x), search(x, arch))
    assert fixed(x).shape == (2, 5)


def test_avg_std_pool_is_mean_and_time_std_and_tells_apart_steady_from_varying():
    torch.manual_seed(0)
    head = GlobalAvgPoolHead(3, 4, pool="avg_std").eval()
    x = torch.randn(2, 3, 8, 5)
    over_freq = x.mean(2)  # [B, C, T]
    features = torch.cat([over_freq.mean(-1), over_freq.std(-1, unbiased=False)], 1)
    torch.testing.assert_close(head(x), head.linear(features), atol=1e-4, rtol=1e-4)
    steady = torch.full((1, 3, 8, 6), 0.5)
    varying = torch.zeros(1, 3, 8, 6)
    varying[..., ::2] = 1.0  # the same mean, switching on and off through time
    plain = GlobalAvgPoolHead(3, 4).eval()
    torch.testing.assert_close(plain(steady), plain(varying))
    assert not torch.allclose(head(steady), head(varying))


def test_avg_std_space_round_trips_builds_all_nets_and_refuses_unknown_pools():
    torch.manual_seed(0)
    space = MacroSpace(num_layers=3, channels=4, head_pool="avg_std")
    arch = space.sample(2)
    assert load_arch(arch.to_json()) == arch
    assert "head_pool" not in MacroSpace(num_layers=3, channels=4).sample(0).to_json()["space"]
    fixed = FixedMacroNet(arch, num_classes=5)
    assert fixed.head.linear.in_features == 2 * fixed.out_channels
    search = MacroSearchNet(space, num_classes=5).eval()
    x = torch.randn(2, 1, 16, 12)
    torch.testing.assert_close(extract_subnet(search, arch).eval()(x), search(x, arch))
    with pytest.raises(MusicnasError, match="head_pool"):
        MacroSpace(head_pool="max")
