"""Macro search and fixed networks: shapes on odd/non-square inputs, weight sharing, reference size."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.runtime import MusicnasError
from musicnas.spaces.macro import FixedMacroNet, MacroArch, MacroSearchNet, MacroSpace
from musicnas.spaces.ops import FactorizedReduction, reduced_size

torch.set_num_threads(1)

small_spaces = st.builds(
    MacroSpace,
    num_layers=st.integers(1, 5),
    num_branches=st.integers(4, 6),
    whole_channels=st.booleans(),
    channels=st.integers(2, 6),
)
sizes = st.integers(1, 23)


def _param_state(model):
    return {n: id(p) for n, p in model.named_parameters()}, {n: id(b) for n, b in model.named_buffers()}


@settings(max_examples=15, deadline=None)
@given(small_spaces, st.integers(0, 10**6), sizes, sizes, st.booleans())
def test_search_and_fixed_nets_forward_backward_any_size(space, seed, height, width, channels_last):
    arch = space.sample(seed)
    x = torch.randn(2, 1, height, width, generator=torch.Generator().manual_seed(seed))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    search = MacroSearchNet(space, in_channels=1, num_classes=3)
    fixed = FixedMacroNet(arch, in_channels=1, num_classes=3, dropout=0.2)
    if channels_last:
        search, fixed = (m.to(memory_format=torch.channels_last) for m in (search, fixed))
    for net, out in ((search, search(x, arch)), (fixed, fixed(x))):
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        out.square().sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    logits, aux = fixed.forward_train(x)
    assert logits.shape == (2, 3) and aux is None and fixed.aux_weight == 0.0


def test_reference_cifar_search_net_has_697860_parameters():
    space = MacroSpace(num_layers=12, num_branches=6, whole_channels=True, channels=36)
    net = MacroSearchNet(space, in_channels=3, num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 697_860
    assert all(m.bias is None for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def _whole_arch(space, ops, skip=0):
    return MacroArch(space, ops=ops, skips=tuple(tuple([skip] * layer) for layer in range(space.num_layers)))


def test_weight_sharing_and_gradients_only_on_sampled_branches():
    space = MacroSpace(num_layers=4, num_branches=6, channels=4)
    net = MacroSearchNet(space, num_classes=3)
    before = _param_state(net)
    x = torch.randn(2, 1, 9, 11)
    a, b = _whole_arch(space, (0, 1, 2, 3)), _whole_arch(space, (0, 4, 5, 3), skip=1)
    # the same parameter objects serve both architectures
    net(x, a).sum().backward()
    grads_a = {n for n, p in net.named_parameters() if p.grad is not None}
    for layer, op in enumerate(a.ops):
        for branch in range(space.num_branches):
            names = [n for n in grads_a if n.startswith(f"layers.{layer}.branches.{branch}.")]
            params = [
                n for n, _ in net.named_parameters() if n.startswith(f"layers.{layer}.branches.{branch}.")
            ]
            assert sorted(names) == (sorted(params) if branch == op else [])
    # a has no skips: after pool layers 0 and 1 only the layer's own output is reduced
    assert {n.split(".")[1] + "." + n.split(".")[2] for n in grads_a if n.startswith("reductions")} == {
        "0.1",
        "1.2",
    }
    net.zero_grad(set_to_none=True)
    net(x, b).sum().backward()
    used_b = {n for n, p in net.named_parameters() if p.grad is not None}
    # layer 0 runs op 0 in both: the very same tensors received gradients from both architectures
    assert {n for n in grads_a if n.startswith("layers.0.")} == {
        n for n in used_b if n.startswith("layers.0.")
    }
    assert "layers.1.branches.4.conv.weight" in used_b and "layers.1.branches.1.inp.0.weight" not in used_b
    assert _param_state(net) == before  # forward passes created no parameter or buffer


def test_channel_range_mode_uses_only_selected_rows():
    space = MacroSpace(num_layers=2, num_branches=4, whole_channels=False, channels=6)
    net = MacroSearchNet(space, num_classes=2)
    before = _param_state(net)
    ranges = (((1, 2), (0, 6), (3, 1), (5, 1)), ((0, 1), (2, 3), (4, 2), (0, 6)))
    arch = MacroArch(space, skips=((), (1,)), ranges=ranges)
    net.train()
    net(torch.randn(3, 1, 7, 5), arch).sum().backward()
    w = net.layers[0].branches[0].conv.weight.grad  # conv 3x3 rows 1..2 only
    assert w[1:3].abs().sum() > 0 and w[:1].abs().sum() == 0 and w[3:].abs().sum() == 0
    mix = net.layers[1].mix.weight.grad[:, :, 0, 0]  # [C, B*C]: columns of the selected ranges
    used = torch.zeros(4 * 6, dtype=torch.bool)
    for b, (s, n) in enumerate(ranges[1]):
        used[b * 6 + s : b * 6 + s + n] = True
    assert (mix[:, used].abs().sum(0) > 0).all() and mix[:, ~used].abs().sum() == 0
    rm = net.layers[0].branches[0].bn.running_mean  # BN statistics move only for the selected channels
    assert (rm[1:3] != 0).all() and (rm[:1] == 0).all() and (rm[3:] == 0).all()
    assert _param_state(net) == before


def test_search_net_rejects_foreign_arch_and_bad_input():
    net = MacroSearchNet(MacroSpace(num_layers=3, channels=4))
    other = MacroSpace(num_layers=4, channels=4).sample(0)
    with pytest.raises(MusicnasError, match="does not belong"):
        net(torch.randn(1, 1, 8, 8), other)
    with pytest.raises(MusicnasError, match=r"expected input \[batch, 1, height, width\]"):
        net(torch.randn(1, 3, 8, 8), MacroSpace(num_layers=3, channels=4).sample(0))


def test_fixed_net_doubles_width_at_pool_layers_and_concatenates_skips():
    space = MacroSpace(num_layers=6, num_branches=6, channels=4)
    arch = _whole_arch(space, (0, 1, 2, 3, 4, 5), skip=1)
    net = FixedMacroNet(arch, num_classes=5, channels=6, dropout=0.3)
    assert net.out_channels == 24 and net.head.linear.in_features == 24 and net.head.dropout.p == 0.3
    # layer 5 (after both pools, width 24) concatenates 5 skips with its output: 6 * 24 -> 24
    assert net.layers[5].skip_mix[1].weight.shape == (24, 6 * 24, 1, 1)
    assert net.layers[0].skip_mix is None
    # ops 1 and 3 are true depthwise-separable convs; ops 4 and 5 pool
    dw = net.layers[1].op[1][1][0]
    assert dw.groups == dw.in_channels == 6 and dw.kernel_size == (3, 3)
    assert net.layers[4].op[1].kind == "avg" and net.layers[5].op[1].kind == "max"
    reductions = [m for m in net.modules() if isinstance(m, FactorizedReduction)]
    assert {r.bn.num_features for r in reductions} == {12, 24}
    x = torch.randn(2, 1, 13, 19)
    assert net(x).shape == (2, 5)
    feats = {}
    net.layers[5].register_forward_hook(lambda m, i, o: feats.setdefault("out", o))
    net.eval()
    net(x)
    assert feats["out"].shape == (2, 24, reduced_size(13, 2), reduced_size(19, 2))


def test_fixed_net_channel_ranges_scale_branch_counts():
    space = MacroSpace(num_layers=3, num_branches=4, whole_channels=False, channels=8)
    ranges = tuple(((0, 8), (2, 4), (7, 1), (4, 2)) for _ in range(3))
    arch = MacroArch(space, skips=((), (0,), (1, 1)), ranges=ranges)
    net = FixedMacroNet(arch, channels=8)
    # pools after layers 0 and 1: widths 8, 16, 32; counts scale with the width
    assert net.layers[0].mix[1].weight.shape == (8, 8 + 4 + 1 + 2, 1, 1)
    assert net.layers[2].mix[1].weight.shape == (32, 32 + 16 + 4 + 8, 1, 1)
    assert net(torch.randn(2, 1, 10, 7)).shape == (2, 10)


def test_fixed_net_is_deterministic_in_eval_and_set_progress_is_noop():
    arch = MacroSpace(num_layers=3, channels=4).sample(2)
    net = FixedMacroNet(arch).eval()
    x = torch.randn(2, 1, 8, 12)
    y = net(x)
    net.set_progress(0.5)
    assert torch.equal(net(x), y)


def test_stride_two_stem_halves_the_input_and_extraction_still_matches():
    from musicnas.spaces.macro import extract_subnet

    torch.manual_seed(0)
    space = MacroSpace(num_layers=3, channels=6, num_branches=6, stem_stride=2)
    arch = space.sample(4)
    assert MacroSpace.from_dict(space.to_dict()) == space
    net = MacroSearchNet(space, in_channels=1, num_classes=3).eval()
    x = torch.randn(2, 1, 17, 30)
    assert net.stem(x).shape[-2:] == (9, 15)
    torch.testing.assert_close(extract_subnet(net, arch).eval()(x), net(x, arch))
    fixed = FixedMacroNet(arch, num_classes=3)
    assert fixed.stem(x).shape[-2:] == (9, 15)
    assert fixed(x).shape == (2, 3)
    with pytest.raises(MusicnasError, match="stem_stride"):
        MacroSpace(stem_stride=3)
