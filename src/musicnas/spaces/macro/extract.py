"""Sub-network extraction: ship a searched macro architecture without retraining.

:func:`extract_subnet` copies exactly the weights (and BN statistics) one architecture uses out of a
:class:`MacroSearchNet` into a standalone :class:`ExtractedMacroNet`, whose ``forward(x)`` equals
``search_net(x, arch)`` in eval mode. The extracted network is fully determined by the architecture and
the input/output sizes, so ``ExtractedMacroNet(arch, ...)`` plus its state dict (safetensors) rebuilds it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.spaces.macro.arch import OP_NAMES, MacroArch
from musicnas.spaces.macro.fixed_net import MacroLayerChain
from musicnas.spaces.macro.search_net import BRANCHES, MacroSearchNet
from musicnas.spaces.ops import ConvBN, FactorizedReduction, GlobalAvgPoolHead, conv2d


class ExtractedMacroLayer(nn.Module):
    """The parts of one :class:`MacroSearchLayer` that one architecture uses."""

    def __init__(self, arch: MacroArch, layer: int):
        super().__init__()
        space, c = arch.space, arch.space.channels
        self.whole_channels = space.whole_channels
        if space.whole_channels:
            self.branch = BRANCHES[OP_NAMES[arch.ops[layer]]](c)
        else:
            counts = [n for _, n in arch.ranges[layer]]
            self.branches = nn.ModuleList(
                BRANCHES[name](c, c_out=n) for name, n in zip(space.op_names, counts, strict=True)
            )
            self.mix = conv2d(sum(counts), c, 1)
            self.mix_bn = nn.BatchNorm2d(c)
        self.skip_bn = nn.BatchNorm2d(c) if layer > 0 else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        if self.whole_channels:
            out = self.branch(x)
        else:
            out = F.relu(self.mix_bn(self.mix(torch.cat([b(x) for b in self.branches], dim=1))))
        if self.skip_bn is not None:
            for s in skips:
                out = out + s
            out = self.skip_bn(out)
        return out


class ExtractedMacroNet(MacroLayerChain):
    """A standalone network computing what the search network computes for one architecture."""

    def __init__(self, arch: MacroArch, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        self.arch, self.in_channels, self.num_classes = arch, in_channels, num_classes
        c = arch.space.channels
        self.stem = ConvBN(in_channels, c, 3, stride=arch.space.stem_stride)
        self.layers = nn.ModuleList(
            ExtractedMacroLayer(arch, layer) for layer in range(arch.space.num_layers)
        )
        self.needed = arch.reductions_needed()
        self.reductions = nn.ModuleDict(
            {f"{p}_{t}": FactorizedReduction(c, c) for p, ts in self.needed.items() for t in ts}
        )
        self.head = GlobalAvgPoolHead(
            c, num_classes, dropout, bands=arch.space.head_bands, pool=arch.space.head_pool
        )
        self.aux_weight = 0.0


def extract_subnet(search_net: MacroSearchNet, arch: MacroArch) -> ExtractedMacroNet:
    """Copies the weights ``arch`` uses out of ``search_net`` (copies, not shared tensors)."""
    if not isinstance(search_net, MacroSearchNet):
        raise MusicnasError(f"extract_subnet needs a MacroSearchNet, got {type(search_net).__name__}")
    search_net.check_arch(arch)
    sub = ExtractedMacroNet(arch, search_net.in_channels, search_net.num_classes, search_net.head.dropout.p)
    state: dict[str, torch.Tensor] = {}

    def take(prefix: str, module: nn.Module, module_state: dict | None = None) -> None:
        items = module.state_dict() if module_state is None else module_state
        for key, value in items.items():
            state[f"{prefix}.{key}"] = value.detach().clone()

    take("stem", search_net.stem)
    take("head", search_net.head)
    for layer, module in enumerate(search_net.layers):
        if arch.space.whole_channels:
            take(f"layers.{layer}.branch", module.branches[arch.ops[layer]])
        else:
            ranges = arch.ranges[layer]
            for b, (start, count) in enumerate(ranges):
                take(
                    f"layers.{layer}.branches.{b}",
                    module.branches[b],
                    module.branches[b].range_state(start, count),
                )
            cols = module.mix_columns(ranges)
            state[f"layers.{layer}.mix.weight"] = (
                torch.cat([module.mix.weight[:, a:z] for a, z in cols], 1).detach().clone()
            )
            take(f"layers.{layer}.mix_bn", module.mix_bn)
        if module.skip_bn is not None:
            take(f"layers.{layer}.skip_bn", module.skip_bn)
    for p, ts in sub.needed.items():
        for t in ts:
            take(f"reductions.{p}_{t}", search_net.reductions[str(p)][t])
    sub.load_state_dict(state, strict=True)
    ref = next(search_net.parameters())
    sub.to(device=ref.device, dtype=ref.dtype)
    return sub.train(search_net.training)
