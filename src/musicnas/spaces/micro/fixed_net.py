"""The fixed micro network: one architecture, trained from scratch.

Cells output the concatenation of their unused tensors as is (no 1x1 combine); the next cell calibrates
its inputs. Training extras (enas-reference.md §2): an auxiliary head after the second reduction cell
(loss weight 0.4, trained: the reference built it but left it out of training) and scheduled
drop-path on every non-identity op.
"""

from __future__ import annotations

import torch
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.spaces import ops as blocks
from musicnas.spaces.micro.arch import IDENTITY, NUM_CELL_INPUTS, MicroArch
from musicnas.spaces.micro.layout import STEM_MULTIPLIER, CellPlan, cell_plans
from musicnas.spaces.micro.search_net import calibration, make_op, stride_for


def drop_path(x: torch.Tensor, keep_prob: float) -> torch.Tensor:
    """Zeroes whole samples of ``x`` with probability ``1 - keep_prob`` and rescales the rest.

    The mask comes from torch's default generator, like ``nn.Dropout``: the trainer seeds it, and a
    custom generator would have to follow the model across devices."""
    if keep_prob >= 1.0:
        return x
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x * mask / keep_prob


class FixedCell(nn.Module):
    def __init__(self, plan: CellPlan, cell_arch, layer_base: bool = False):
        super().__init__()
        c = plan.channels
        self.plan = plan
        self.calibrate0 = calibration(plan.prev_prev_channels, c, plan.prev_prev_larger)
        self.calibrate1 = calibration(plan.prev_channels, c, False)
        # the authors' "layer_base": one more ReLU -> conv1x1 -> BN on the calibrated previous output
        self.layer_base = blocks.ReLUConvBN(c, c, 1) if layer_base else blocks.Identity()
        self.node_inputs = [(i1, i2) for i1, _, i2, _ in cell_arch]
        # drop-path skips identities (reference), including an identity that is a factorized reduction
        self.node_droppable = [(o1 != IDENTITY, o2 != IDENTITY) for _, o1, _, o2 in cell_arch]
        self.node_ops = nn.ModuleList(
            nn.ModuleList(
                [
                    make_op(o1, c, stride_for(plan.reduction, i1)),
                    make_op(o2, c, stride_for(plan.reduction, i2)),
                ]
            )
            for i1, o1, i2, o2 in cell_arch
        )
        self.output_indices = MicroArch.unused(cell_arch)
        self.output_modules = nn.ModuleList(
            blocks.FactorizedReduction(c, c) if plan.reduction and i < NUM_CELL_INPUTS else blocks.Identity()
            for i in self.output_indices
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, keep_prob: float = 1.0) -> torch.Tensor:
        states = [self.calibrate0(s0), self.layer_base(self.calibrate1(s1))]
        drop = self.training and keep_prob < 1.0
        for (i1, i2), (op1, op2), (d1, d2) in zip(
            self.node_inputs, self.node_ops, self.node_droppable, strict=True
        ):
            a, b = op1(states[i1]), op2(states[i2])
            if drop:
                a = drop_path(a, keep_prob) if d1 else a
                b = drop_path(b, keep_prob) if d2 else b
            states.append(a + b)
        return torch.cat(
            [m(states[i]) for i, m in zip(self.output_indices, self.output_modules, strict=True)], dim=1
        )


class AuxHead(nn.Module):
    """ReLU -> pool to 2x2 -> conv1x1 (128) -> BN -> ReLU -> conv2x2 (768) -> BN -> ReLU -> linear.

    The reference pooled 8x8 CIFAR maps with a 5x5/stride-3 window to 2x2; spectrogram maps are
    non-square and of any size, so an adaptive pool to 2x2 takes its place."""

    def __init__(self, c_in: int, num_classes: int, hidden: int = 128, width: int = 768):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, width, 2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.linear = nn.Linear(width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.features(x), 1))


class FixedMicroNet(nn.Module):
    """Stem -> N + 2 fixed cells -> ReLU -> global pool -> dropout -> linear.

    ``forward(x) -> logits``; ``forward_train(x) -> (logits, aux_logits | None)``; ``aux_weight``;
    ``set_progress(p)`` advances the drop-path schedule (``p`` = share of training done).
    """

    # Modules used only in training. The reference counted parameters without the aux head; a cost
    # counter can leave these out (the aux head's 128/768-wide convs outweigh a small network).
    TRAINING_ONLY_MODULES = ("aux_head",)

    def __init__(
        self,
        arch: MicroArch,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: int | None = None,
        dropout: float = 0.1,
        aux_weight: float = 0.4,
        drop_path_keep_prob: float = 0.6,
        aux_hidden: int = 128,
        aux_width: int = 768,
    ):
        super().__init__()
        if not isinstance(arch, MicroArch):
            raise MusicnasError(f"FixedMicroNet needs a micro architecture, got {type(arch).__name__}")
        arch.validate()
        if not 0.0 < drop_path_keep_prob <= 1.0:
            raise MusicnasError(f"drop_path_keep_prob must be in (0, 1], got {drop_path_keep_prob}")
        if aux_weight < 0:
            raise MusicnasError(
                f"aux_weight must be >= 0 (0 switches the auxiliary head off), got {aux_weight}"
            )
        self.arch = arch
        self.in_channels, self.num_classes, self.dropout = in_channels, num_classes, dropout
        self.channels = channels or arch.space.channels
        self.drop_path_keep_prob = float(drop_path_keep_prob)
        self.progress = 0.0
        c = self.channels
        widths = {False: len(MicroArch.unused(arch.normal)), True: len(MicroArch.unused(arch.reduction))}
        self.plans = cell_plans(arch.space, c, lambda width, reduction: width * widths[reduction])
        self.stem = blocks.ConvBN(in_channels, STEM_MULTIPLIER * c, 3)
        self.cells = nn.ModuleList(
            FixedCell(plan, arch.reduction if plan.reduction else arch.normal, arch.space.layer_base)
            for plan in self.plans
        )
        self.aux_index = arch.space.reduction_cells[1]
        self.aux_weight = float(aux_weight)
        self.aux_head = (
            AuxHead(self.plans[self.aux_index].out_channels, num_classes, aux_hidden, aux_width)
            if aux_weight > 0
            else None
        )
        self.head = blocks.GlobalAvgPoolHead(self.plans[-1].out_channels, num_classes, dropout, relu=True)

    def set_progress(self, p: float) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise MusicnasError(f"training progress must be in [0, 1], got {p}")
        self.progress = float(p)

    def keep_prob(self, cell_index: int) -> float:
        """Drop-path keep probability of a cell: falls linearly with depth to the configured value at the
        last cell, and from 1 at the start of training to that at the end (reference schedule)."""
        depth = (cell_index + 1) / len(self.cells)
        keep = 1.0 - depth * (1.0 - self.drop_path_keep_prob)
        return 1.0 - self.progress * (1.0 - keep)

    def _run(self, x: torch.Tensor, want_aux: bool):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.keep_prob(i))
            if want_aux and i == self.aux_index and self.aux_head is not None:
                aux = self.aux_head(s1)
        return self.head(s1), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, want_aux=False)[0]

    def forward_train(self, x: torch.Tensor):
        return self._run(x, want_aux=True)
