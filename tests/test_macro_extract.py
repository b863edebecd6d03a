"""Sub-network extraction: same outputs as the search network in eval mode, only the used weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicnas.runtime import MusicnasError
from musicnas.spaces.macro import MacroSearchNet, MacroSpace, extract_subnet
from musicnas.spaces.macro.extract import ExtractedMacroNet

torch.set_num_threads(1)


def _trained_search_net(space, steps=3):
    """A search net whose weights and BN statistics are no longer at their initial values."""
    net = MacroSearchNet(space, num_classes=4, dropout=0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(4, 1, 11, 13, generator=gen)
        opt.zero_grad()
        net(x, space.sample(step)).logsumexp(1).mean().backward()
        opt.step()
    return net


@settings(max_examples=10, deadline=None)
@given(
    st.builds(
        MacroSpace,
        num_layers=st.integers(1, 5),
        num_branches=st.integers(4, 6),
        whole_channels=st.booleans(),
        channels=st.integers(2, 6),
    ),  # fmt: skip
    st.integers(0, 10**6),
    st.integers(3, 21),
    st.integers(3, 21),
)
def test_extracted_subnet_reproduces_search_net(space, seed, height, width):
    net = _trained_search_net(space, steps=2)
    arch = space.sample(seed)
    net.eval()
    sub = extract_subnet(net, arch)
    assert not sub.training
    x = torch.randn(3, 1, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(sub(x), net(x, arch), rtol=1e-5, atol=1e-5)
    n_sub = sum(p.numel() for p in sub.parameters())
    assert n_sub < sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("whole_channels", [True, False])
def test_extraction_copies_weights_and_rebuilds_from_state_dict(whole_channels):
    space = MacroSpace(num_layers=4, num_branches=6, whole_channels=whole_channels, channels=5)
    net = _trained_search_net(space).eval()
    arch = space.sample(11)
    sub = extract_subnet(net, arch)
    x = torch.randn(2, 1, 9, 14)
    with torch.no_grad():
        expected = net(x, arch)
        for p in net.parameters():  # copies, not views: changing the search net leaves the subnet alone
            p.add_(1.0)
        torch.testing.assert_close(sub(x), expected, rtol=1e-5, atol=1e-5)
    # standalone: the architecture plus the state dict rebuild it (how a bundle ships it)
    rebuilt = ExtractedMacroNet(arch, in_channels=1, num_classes=4)
    rebuilt.load_state_dict(sub.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), expected, rtol=1e-5, atol=1e-5)
    logits, aux = sub.forward_train(x)
    assert aux is None and logits.shape == (2, 4)


def test_extracted_parameters_are_exactly_the_used_ones():
    space = MacroSpace(num_layers=3, num_branches=6, whole_channels=True, channels=4)
    net = MacroSearchNet(space, num_classes=2)
    arch = space.sample(3)
    net(torch.randn(2, 1, 8, 8), arch).sum().backward()
    used = sum(p.numel() for p in net.parameters() if p.grad is not None)
    assert sum(p.numel() for p in extract_subnet(net, arch).parameters()) == used


def test_extract_rejects_foreign_arch():
    net = MacroSearchNet(MacroSpace(num_layers=3, channels=4))
    with pytest.raises(MusicnasError, match="does not belong"):
        extract_subnet(net, MacroSpace(num_layers=2, channels=4).sample(0))
