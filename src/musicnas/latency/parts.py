"""An architecture's deployed network as a list of parts, the units of the latency lookup table.

A part is one piece of the fixed network at one place in it: its kind and op, its input shape (channels
x height x width, batch 1), its output channels and stride; its key names all of them, e.g.
``op/sep_conv_3x3/c48/16x24``. Parts of different architectures with the same key are the same
computation, so one measurement per key serves every architecture (the lookup-table model of
ProxylessNAS, Cai et al. 2019). The parts of a network, run one after another, are the network; what the
sum misses (moving tensors between parts, the runtime's per-call work) is left to the table's fitted
scale and overhead.

Macro space, whole-channels mode (``FixedMacroNet``), per architecture:

* ``stem``: the stem conv + BN on the input;
* ``op``: each layer's op (1x1 conv, then the op) at its stage's width and size;
* ``skip_mix``: each layer after the first: concatenation of its skip tensors and its op's output, ReLU,
  1x1 conv, BN (its key counts the concatenated tensors);
* ``reduce``: each factorized reduction after a pool layer (one per tensor still used later);
* ``head``: global average pool and the linear classifier.

The channel-range macro mode and the micro space are not decomposed yet: their latency is measured
(``musicnas latency ARCH.json``), not predicted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from musicnas.runtime import MusicnasError

PartBuilder = Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]


@dataclass(frozen=True)
class Part:
    """One table entry's computation: ``build()`` gives a fresh module and its batch-1 example inputs."""

    key: str
    build: PartBuilder


def check_supported(space) -> None:
    if space.type != "macro" or not space.whole_channels:
        what = "the micro space" if space.type == "micro" else "the macro space's channel-range mode"
        raise MusicnasError(
            f"the latency table does not cover {what} yet (only the macro space in whole-channels mode); "
            "measure such architectures directly with `musicnas latency ARCH.json`"
        )


def _randn(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, *shape, generator=g)


class SkipMix(nn.Module):
    """A macro layer's skip combination as FixedMacroLayer computes it: concatenate, then ReLU-conv1x1-BN."""

    def __init__(self, n_inputs: int, width: int):
        super().__init__()
        from musicnas.spaces.ops import ReLUConvBN

        self.mix = ReLUConvBN(n_inputs * width, width, 1)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.cat(tensors, dim=1))


@dataclass(frozen=True)
class MacroGeometry:
    """Widths and sizes of a macro fixed network's stages for one input shape."""

    space: object
    input_shape: tuple[int, int, int]

    def stage_of(self, layer: int) -> int:
        return sum(1 for p in self.space.pool_layers if p < layer)

    def width(self, stage: int) -> int:
        return self.space.channels * 2**stage

    def size(self, stage: int) -> tuple[int, int]:
        from musicnas.spaces.ops import reduced_size

        _, h, w = self.input_shape
        extra = 1 if self.space.stem_stride == 2 else 0
        return reduced_size(h, stage + extra), reduced_size(w, stage + extra)

    def stages(self) -> int:
        return len(self.space.pool_layers) + 1


def _shape_text(c: int, hw: tuple[int, int]) -> str:
    return f"c{c}/{hw[0]}x{hw[1]}"


def stem_part(geo: MacroGeometry) -> Part:
    from musicnas.spaces.ops import ConvBN

    c_in, h, w = geo.input_shape
    width, stride = geo.space.channels, geo.space.stem_stride
    return Part(
        f"stem/c{c_in}-{width}/k3/s{stride}/{h}x{w}",
        lambda: (ConvBN(c_in, width, 3, stride=stride), (_randn(c_in, h, w),)),
    )


def op_part(geo: MacroGeometry, op_name: str, stage: int) -> Part:
    from musicnas.spaces.macro.fixed_net import FIXED_OPS

    c, hw = geo.width(stage), geo.size(stage)
    return Part(f"op/{op_name}/{_shape_text(c, hw)}", lambda: (FIXED_OPS[op_name](c, c), (_randn(c, *hw),)))


def skip_mix_part(geo: MacroGeometry, n_inputs: int, stage: int) -> Part:
    c, hw = geo.width(stage), geo.size(stage)
    return Part(
        f"skip_mix/n{n_inputs}/{_shape_text(c, hw)}",
        lambda: (SkipMix(n_inputs, c), tuple(_randn(c, *hw) for _ in range(n_inputs))),
    )


def reduce_part(geo: MacroGeometry, stage: int) -> Part:
    from musicnas.spaces.ops import FactorizedReduction

    c, hw = geo.width(stage), geo.size(stage)
    return Part(
        f"reduce/c{c}-{2 * c}/{hw[0]}x{hw[1]}", lambda: (FactorizedReduction(c, 2 * c), (_randn(c, *hw),))
    )


def head_part(geo: MacroGeometry, num_classes: int) -> Part:
    from musicnas.spaces.ops import GlobalAvgPoolHead

    stage = geo.stages() - 1
    c, hw = geo.width(stage), geo.size(stage)
    bands, pool = geo.space.head_bands, geo.space.head_pool
    # the key names a head other than the reference's global average (keys of existing tables unchanged)
    extra = ("" if bands == 1 else f"/b{bands}") + ("" if pool == "avg" else f"/{pool}")
    return Part(
        f"head/{_shape_text(c, hw)}/k{num_classes}{extra}",
        lambda: (GlobalAvgPoolHead(c, num_classes, 0.1, bands=bands, pool=pool), (_randn(c, *hw),)),
    )


def arch_parts(arch, input_shape, num_classes: int) -> list[Part]:
    """The parts of ``arch``'s fixed network (default width), in the order the network runs them."""
    from musicnas.spaces.macro.arch import OP_NAMES

    check_supported(arch.space)
    geo = MacroGeometry(arch.space, tuple(int(v) for v in input_shape))
    parts = [stem_part(geo)]
    needed = arch.reductions_needed()
    for layer in range(arch.space.num_layers):
        stage = geo.stage_of(layer)
        parts.append(op_part(geo, OP_NAMES[arch.ops[layer]], stage))
        if layer > 0:
            parts.append(skip_mix_part(geo, len(arch.skip_sources(layer)) + 1, stage))
        for _ in needed.get(layer, ()):
            parts.append(reduce_part(geo, stage))
    parts.append(head_part(geo, num_classes))
    return parts


def arch_part_keys(arch, input_shape, num_classes: int) -> list[str]:
    """Keys of :func:`arch_parts` (what a prediction sums; no module is built)."""
    return [part.key for part in arch_parts(arch, input_shape, num_classes)]


def space_parts(space, input_shape, num_classes: int) -> list[Part]:
    """Every distinct part any architecture of ``space`` can have (the table to measure)."""
    check_supported(space)
    geo = MacroGeometry(space, tuple(int(v) for v in input_shape))
    parts: dict[str, Part] = {}

    def add(part: Part) -> None:
        parts.setdefault(part.key, part)

    add(stem_part(geo))
    for layer in range(space.num_layers):
        stage = geo.stage_of(layer)
        for name in space.op_names:
            add(op_part(geo, name, stage))
        if layer > 0:
            for n_skips in range(layer + 1):  # layer l has l skip bits
                add(skip_mix_part(geo, n_skips + 1, stage))
        if layer in space.pool_layers:
            add(reduce_part(geo, stage))
    add(head_part(geo, num_classes))
    return list(parts.values())
