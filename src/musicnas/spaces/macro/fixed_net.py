"""The macro fixed network (the reference's "fixed layer", enas-reference.md §1): one architecture,
trained from scratch.

Order ReLU -> conv -> BN throughout. Skips are concatenated with the op output on the channel axis ->
ReLU -> conv1x1 -> BN. Width doubles at each pool layer (C, 2C, 4C): every tensor still consumed later
goes through its own factorized reduction to the doubled width.
"""

from __future__ import annotations

import torch
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.spaces.macro.arch import OP_NAMES, MacroArch
from musicnas.spaces.ops import (
    ConvBN,
    FactorizedReduction,
    GlobalAvgPoolHead,
    Pool,
    ReLUConvBN,
    ReLUSepConvBN,
)

# op name -> factory(C_in, C_out) of the fixed layer's op (DARTS-style table). The 1x1 conv comes first,
# as in the reference; the pool ops, which the reference left unimplemented, mirror the search branch
# (1x1 conv, then pool) so the fixed op computes what was searched.
FIXED_OPS = {
    "conv_3x3": lambda c_in, c_out: nn.Sequential(ReLUConvBN(c_in, c_out, 1), ReLUConvBN(c_out, c_out, 3)),
    "sep_conv_3x3": lambda c_in, c_out: nn.Sequential(
        ReLUConvBN(c_in, c_out, 1), ReLUSepConvBN(c_out, c_out, 3)
    ),
    "conv_5x5": lambda c_in, c_out: nn.Sequential(ReLUConvBN(c_in, c_out, 1), ReLUConvBN(c_out, c_out, 5)),
    "sep_conv_5x5": lambda c_in, c_out: nn.Sequential(
        ReLUConvBN(c_in, c_out, 1), ReLUSepConvBN(c_out, c_out, 5)
    ),
    "avg_pool_3x3": lambda c_in, c_out: nn.Sequential(ReLUConvBN(c_in, c_out, 1), Pool("avg")),
    "max_pool_3x3": lambda c_in, c_out: nn.Sequential(ReLUConvBN(c_in, c_out, 1), Pool("max")),
}


def _range_op(name: str, c_in: int, c_out: int) -> nn.Module:
    """A channel-range branch with ``c_out`` channels: conv branches keep C channels inside (as the
    search branch does) and only their last conv produces ``c_out``; pool branches pool ``c_out``."""
    if name.startswith(("conv", "sep_conv")):
        kernel = 3 if name.endswith("3x3") else 5
        block = ReLUSepConvBN if name.startswith("sep") else ReLUConvBN
        return nn.Sequential(ReLUConvBN(c_in, c_in, 1), block(c_in, c_out, kernel))
    return FIXED_OPS[name](c_in, c_out)


def scaled_count(count: int, width: int, space_channels: int) -> int:
    """A branch's channel count scaled from the search width to this layer's width (at least 1)."""
    return max(1, round(count * width / space_channels))


class FixedMacroLayer(nn.Module):
    def __init__(self, arch: MacroArch, layer: int, width: int):
        super().__init__()
        space = arch.space
        self.whole_channels = space.whole_channels
        if space.whole_channels:
            self.op = FIXED_OPS[OP_NAMES[arch.ops[layer]]](width, width)
        else:
            # Per-branch channel counts. Deviation: the reference kept the searched counts as absolute
            # numbers while the width doubled; we scale them with the layer width (C -> 2C -> 4C, and a
            # --channels different from the search), so a branch keeps its searched share of the layer.
            counts = [scaled_count(n, width, space.channels) for _, n in arch.ranges[layer]]
            self.branches = nn.ModuleList(
                _range_op(name, width, n) for name, n in zip(space.op_names, counts, strict=True)
            )
            self.mix = ReLUConvBN(sum(counts), width, 1)
        n_skip = len(arch.skip_sources(layer))
        self.skip_mix = ReLUConvBN((n_skip + 1) * width, width, 1) if layer > 0 else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        if self.whole_channels:
            out = self.op(x)
        else:
            out = self.mix(torch.cat([b(x) for b in self.branches], dim=1))
        if self.skip_mix is not None:
            out = self.skip_mix(torch.cat([*skips, out], dim=1))
        return out


class MacroLayerChain(nn.Module):
    """The forward pass shared by the fixed and the extracted macro networks: stem, layers fed by their
    predecessor and skip tensors, per-tensor reductions after pool layers (only for tensors used later),
    head. Subclasses build ``stem``, ``layers``, ``reductions``, ``needed``, ``head`` and set ``arch``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise MusicnasError(
                f"expected input [batch, {self.in_channels}, height, width], got {tuple(x.shape)}"
            )
        tensors: list[torch.Tensor | None] = [self.stem(x)]
        for layer, module in enumerate(self.layers):
            tensors.append(module(tensors[layer], [tensors[i] for i in self.arch.skip_sources(layer)]))
            if layer in self.needed:
                keep = set(self.needed[layer])
                tensors = [
                    self.reductions[f"{layer}_{t}"](v) if t in keep else None for t, v in enumerate(tensors)
                ]
        return self.head(tensors[-1])

    def forward_train(self, x: torch.Tensor):
        return self(x), None

    def set_progress(self, progress: float) -> None:
        """No drop-path schedule in the macro space (kept for the FixedNet contract)."""


class FixedMacroNet(MacroLayerChain):
    """``FixedMacroNet(arch, in_channels=1, num_classes=10, channels=None, dropout=0.1)``;
    ``channels`` defaults to the space's width and doubles at each pool layer."""

    aux_weight = 0.0  # no auxiliary head in the macro space

    def __init__(
        self,
        arch: MacroArch,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        if not isinstance(arch, MacroArch):
            raise MusicnasError(f"FixedMacroNet needs a MacroArch, got {type(arch).__name__}")
        width = arch.space.channels if channels is None else int(channels)
        if width < 2:
            raise MusicnasError(f"channels must be at least 2, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise MusicnasError(f"dropout must be in [0, 1), got {dropout}")
        self.arch, self.in_channels, self.num_classes = arch, in_channels, num_classes
        self.channels, self.dropout = width, dropout
        self.needed = arch.reductions_needed()
        self.stem = ConvBN(in_channels, width, 3, stride=arch.space.stem_stride)
        self.layers = nn.ModuleList()
        self.reductions = nn.ModuleDict()
        for layer in range(arch.space.num_layers):
            self.layers.append(FixedMacroLayer(arch, layer, width))
            if layer in self.needed:
                for t in self.needed[layer]:
                    self.reductions[f"{layer}_{t}"] = FactorizedReduction(width, 2 * width)
                width *= 2
        self.out_channels = width
        self.head = GlobalAvgPoolHead(
            width, num_classes, dropout, bands=arch.space.head_bands, pool=arch.space.head_pool
        )
