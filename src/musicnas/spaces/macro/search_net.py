"""The macro search network (the reference's "enas layer", enas-reference.md §1).

Every parameter is created once in ``__init__`` and shared by all architectures; ``forward(x, arch)`` runs
only what ``arch`` uses: its branch per layer (whole channels), the channel slices of every branch
(channel ranges), and only the factorized reductions whose outputs are consumed later.

Layout (gives exactly 697,860 parameters for 12 layers x 36 channels, 6 branches, 3 input channels,
10 classes, as the reference): stem conv3x3 -> BN; per layer one module per branch; for layers > 0 a BN
after the skip sum; one factorized reduction per earlier tensor at each pool layer; global average pool
-> dropout -> bias-free linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.spaces.macro.arch import MacroArch, MacroSpace
from musicnas.spaces.ops import (
    ConvBN,
    ConvBNReLU,
    FactorizedReduction,
    GlobalAvgPoolHead,
    Pool,
    SeparableConv2d,
    add_all,
    batch_norm,
    conv2d,
    dense_conv2d,
    recomputable,
    recompute_activations,
)

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def slice_rows(
    state: dict[str, torch.Tensor], prefix: str, keys: tuple[str, ...], start: int, stop: int
) -> None:
    """In a state dict, keeps rows ``[start, stop)`` of ``prefix + key`` for each key (copies)."""
    for key in keys:
        name = prefix + key
        if name in state:
            state[name] = state[name][start:stop].clone()


class ConvBranch(nn.Module):
    """conv1x1 (C -> C) -> BN -> ReLU -> conv kxk (or depthwise kxk + pointwise 1x1) -> BN -> ReLU.

    ``c_out`` < C builds the standalone copy of a channel range (used by extraction)."""

    def __init__(self, channels: int, kernel: int, separable: bool, c_out: int | None = None):
        super().__init__()
        c_out = channels if c_out is None else c_out
        self.kernel, self.separable = kernel, separable
        self.inp = ConvBNReLU(channels, channels, 1)
        self.conv = SeparableConv2d(channels, c_out, kernel) if separable else conv2d(channels, c_out, kernel)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, start: int | None = None, count: int | None = None) -> torch.Tensor:
        h = self.inp(x)
        if self.separable:
            # the depthwise output is kept only for the pointwise conv's weight gradient: rebuilt from h
            # (itself rebuilt) in the backward, a depthwise conv costs C_in/k^2 of the pointwise's work
            dw = self.conv.depthwise
            d = recomputable(dw(h), F.conv2d, h, dw.weight.detach(), None, 1, dw.padding, 1, dw.groups)
        if start is None:
            y = self.conv.pointwise(d) if self.separable else self.conv(h)
            return batch_norm(self.bn, y, relu=True)
        stop = start + count
        if self.separable:  # the depthwise part is per input channel: all of it is used
            y = F.conv2d(d, self.conv.pointwise.weight[start:stop])
        else:
            y = dense_conv2d(h, self.conv.weight[start:stop], padding=self.kernel // 2)
        return batch_norm(self.bn, y, relu=True, channels=(start, stop))

    def range_state(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """The state dict of ``ConvBranch(C, k, separable, c_out=count)`` equal to this branch's range."""
        state = {k: v.clone() for k, v in self.state_dict().items()}
        slice_rows(state, "conv.1." if self.separable else "conv.", ("weight",), start, start + count)
        slice_rows(state, "bn.", BN_KEYS, start, start + count)
        return state


class PoolBranch(nn.Module):
    """conv1x1 -> BN -> ReLU -> 3x3 pool (stride 1, padding 1).

    A channel range only needs the 1x1 conv's rows in the range (BN, ReLU and pooling act per channel),
    so the range is taken before the pool rather than after it as in the reference: same output, less work."""

    def __init__(self, channels: int, kind: str, c_out: int | None = None):
        super().__init__()
        c_out = channels if c_out is None else c_out
        self.conv = conv2d(channels, c_out, 1)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = Pool(kind, stride=1)

    def forward(self, x: torch.Tensor, start: int | None = None, count: int | None = None) -> torch.Tensor:
        if start is None:
            return self.pool(batch_norm(self.bn, self.conv(x), relu=True))
        stop = start + count
        y = F.conv2d(x, self.conv.weight[start:stop])
        return self.pool(batch_norm(self.bn, y, relu=True, channels=(start, stop)))

    def range_state(self, start: int, count: int) -> dict[str, torch.Tensor]:
        state = {k: v.clone() for k, v in self.state_dict().items()}
        slice_rows(state, "conv.", ("weight",), start, start + count)
        slice_rows(state, "bn.", BN_KEYS, start, start + count)
        return state


# op id -> factory(channels, c_out): the search branches, keyed like arch.OP_NAMES (DARTS-style table)
BRANCHES = {
    "conv_3x3": lambda c, c_out=None: ConvBranch(c, 3, separable=False, c_out=c_out),
    "sep_conv_3x3": lambda c, c_out=None: ConvBranch(c, 3, separable=True, c_out=c_out),
    "conv_5x5": lambda c, c_out=None: ConvBranch(c, 5, separable=False, c_out=c_out),
    "sep_conv_5x5": lambda c, c_out=None: ConvBranch(c, 5, separable=True, c_out=c_out),
    "avg_pool_3x3": lambda c, c_out=None: PoolBranch(c, "avg", c_out=c_out),
    "max_pool_3x3": lambda c, c_out=None: PoolBranch(c, "max", c_out=c_out),
}


class MacroSearchLayer(nn.Module):
    """One shared layer: all branches, the channel-range mix (channel-range mode), the skip BN (l > 0)."""

    def __init__(self, space: MacroSpace, layer: int):
        super().__init__()
        c, b = space.channels, space.num_branches
        self.layer = layer
        self.branches = nn.ModuleList(BRANCHES[name](c) for name in space.op_names)
        if not space.whole_channels:
            # mix weight [C, B*C] (the reference's [B*C, C]); a range selects its columns
            self.mix = conv2d(b * c, c, 1)
            self.mix_bn = nn.BatchNorm2d(c)
        self.skip_bn = nn.BatchNorm2d(c) if layer > 0 else None

    def mix_columns(self, ranges) -> list[tuple[int, int]]:
        c = self.mix.weight.shape[0]
        return [(b * c + s, b * c + s + n) for b, (s, n) in enumerate(ranges)]

    def forward(self, x: torch.Tensor, arch: MacroArch, skips: list[torch.Tensor]) -> torch.Tensor:
        if arch.space.whole_channels:
            out = self.branches[arch.ops[self.layer]](x)
        else:
            ranges = arch.ranges[self.layer]
            parts = [branch(x, s, n) for branch, (s, n) in zip(self.branches, ranges, strict=True)]
            weight = torch.cat([self.mix.weight[:, a:z] for a, z in self.mix_columns(ranges)], dim=1)
            out = batch_norm(self.mix_bn, F.conv2d(torch.cat(parts, dim=1), weight), relu=True)
        if self.skip_bn is not None:
            out = batch_norm(self.skip_bn, add_all(out, skips))
        return out


class MacroSearchNet(nn.Module):
    """Shared-weight network of a macro space; ``forward(x [B, in_ch, H, W], arch) -> logits [B, K]``."""

    def __init__(self, space: MacroSpace, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        if not isinstance(space, MacroSpace):
            raise MusicnasError(f"MacroSearchNet needs a MacroSpace, got {type(space).__name__}")
        self.space, self.in_channels, self.num_classes = space, in_channels, num_classes
        c = space.channels
        self.stem = ConvBN(in_channels, c, 3, stride=space.stem_stride)
        self.layers = nn.ModuleList(MacroSearchLayer(space, layer) for layer in range(space.num_layers))
        # one reduction per tensor [stem, L0 .. Lp] after pool layer p
        self.reductions = nn.ModuleDict(
            {
                str(p): nn.ModuleList(FactorizedReduction(c, c) for _ in range(p + 2))
                for p in space.pool_layers
            }
        )
        self.head = GlobalAvgPoolHead(c, num_classes, dropout, bands=space.head_bands, pool=space.head_pool)

    def check_arch(self, arch: MacroArch) -> None:
        if not isinstance(arch, MacroArch) or arch.space != self.space:
            got = arch.space if isinstance(arch, MacroArch) else type(arch).__name__
            raise MusicnasError(
                f"architecture of {got} does not belong to this search network's {self.space}"
            )

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise MusicnasError(
                f"expected input [batch, {self.in_channels}, height, width], got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor, arch: MacroArch) -> torch.Tensor:
        self.check_arch(arch)
        self.check_input(x)
        with recompute_activations():
            return self.layers_forward(x, arch)

    def layers_forward(self, x: torch.Tensor, arch: MacroArch) -> torch.Tensor:
        needed = arch.reductions_needed()
        tensors: list[torch.Tensor | None] = [self.stem(x)]
        for layer, module in enumerate(self.layers):
            skips = [tensors[i] for i in arch.skip_sources(layer)]
            tensors.append(module(tensors[layer], arch, skips))
            if layer in needed:
                keep = set(needed[layer])
                reduce = self.reductions[str(layer)]
                tensors = [reduce[t](v) if t in keep else None for t, v in enumerate(tensors)]
        return self.head(tensors[-1])

    def subnet(self, arch: MacroArch) -> nn.Module:
        """The standalone network of exactly the weights ``arch`` uses (see :func:`extract_subnet`)."""
        from musicnas.spaces.macro.extract import extract_subnet

        return extract_subnet(self, arch)
