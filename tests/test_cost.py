"""count_cost: parameters and MACs by torch's FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.spaces.cost import Cost, count_cost
from musicnas.spaces.macro import FixedMacroNet, MacroSearchNet, MacroSpace, extract_subnet

torch.set_num_threads(1)


def test_conv_and_linear_macs_match_the_formula():
    model = nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1, bias=False),  # 2*5*9 MACs per output pixel
        nn.Conv2d(5, 5, 3, padding=1, groups=5, bias=False),  # depthwise: 5*9
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    h, w = 7, 10
    cost = count_cost(model, (2, h, w))
    assert cost == Cost(params=90 + 45 + 15 + 3, macs=(90 + 45) * h * w + 15)
    assert count_cost(model, (4, 2, h, w)).macs == 4 * cost.macs


def test_search_net_cost_counts_used_parameters_only():
    space = MacroSpace(num_layers=4, num_branches=6, channels=6)
    net = MacroSearchNet(space, num_classes=3)
    arch = space.sample(1)
    cost = count_cost(net, (1, 16, 20), arch)
    sub = extract_subnet(net, arch)
    assert cost == count_cost(sub, (1, 16, 20))
    assert cost.params < sum(p.numel() for p in net.parameters())
    ranges = MacroSpace(num_layers=3, num_branches=4, whole_channels=False, channels=6)
    rnet = MacroSearchNet(ranges, num_classes=3)
    rarch = ranges.sample(2)
    assert count_cost(rnet, (1, 9, 9), rarch) == count_cost(extract_subnet(rnet, rarch), (1, 9, 9))


class _Switch(nn.Module):
    """A two-branch model without ``subnet``: cost falls back to the parameters the graph reaches."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 2, bias=False)
        self.b = nn.Linear(4, 2)

    def forward(self, x, which):
        return (self.a if which == "a" else self.b)(x.flatten(1)[:, :4])


def test_graph_fallback_counts_reached_parameters():
    model = _Switch()
    assert count_cost(model, (1, 2, 2), "a").params == 8
    assert count_cost(model, (1, 2, 2), "b").params == 10


def test_count_cost_leaves_the_model_alone():
    arch = MacroSpace(num_layers=3, channels=4).sample(0)
    net = FixedMacroNet(arch).train()
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    count_cost(net, (1, 12, 12))
    assert net.training
    assert all(torch.equal(stats[k], v) for k, v in net.state_dict().items())
    with pytest.raises(MusicnasError, match="input shape"):
        count_cost(net, (12, 12))


def test_fixed_net_macs_grow_with_input_area():
    arch = MacroSpace(num_layers=3, channels=4).sample(4)
    net = FixedMacroNet(arch)
    small, large = count_cost(net, (1, 16, 16)), count_cost(net, (1, 32, 32))
    assert small.params == large.params
    assert 3.5 * small.macs < large.macs < 4.5 * small.macs


def test_training_only_modules_are_left_out_of_the_parameter_count():
    from musicnas.spaces.micro import FixedNet as FixedMicroNet
    from musicnas.spaces.micro import Space as MicroSpace

    arch = MicroSpace(num_cells=2, num_nodes=2, channels=4).sample(0)
    with_aux = FixedMicroNet(arch, num_classes=3, aux_weight=0.4)
    without_aux = FixedMicroNet(arch, num_classes=3, aux_weight=0.0)
    aux_params = sum(p.numel() for p in with_aux.aux_head.parameters())
    assert aux_params > 0
    total = sum(p.numel() for p in with_aux.parameters())
    # the deployed network is the same with and without the auxiliary head
    assert count_cost(with_aux, (1, 16, 20)).params == total - aux_params
    assert count_cost(with_aux, (1, 16, 20)).params == count_cost(without_aux, (1, 16, 20)).params
