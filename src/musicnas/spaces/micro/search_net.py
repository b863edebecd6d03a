"""The micro search network: every cell holds the weights of every op at every node; a forward pass
runs only the ops of the architecture it is given (one architecture per minibatch).

Weight sharing (enas-reference.md §2): one module per (node, slot, op) — finer than "per (node, op)",
coarser than the reference's per (node, slot, op, chosen input). In a reduction cell an op reading a
cell input runs at stride 2 and one reading an earlier node at stride 1; the two hold separate weights.

Deliberate difference from the reference: its search network reduced the previous cell's output with a
factorized reduction and then ran the reduction cell at stride 1. Here the reduction cell itself works at
stride 2 on its inputs, exactly like the fixed network, so the search and the retrained network compute
the same kind of cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from musicnas.runtime import MusicnasError
from musicnas.spaces import ops as blocks
from musicnas.spaces.micro.arch import NUM_CELL_INPUTS, OPS, MicroArch, MicroSpace
from musicnas.spaces.micro.layout import STEM_MULTIPLIER, CellPlan, cell_plans


def calibration(c_in: int, c_out: int, larger: bool) -> nn.Module:
    """Brings a cell input to the cell's width and resolution: ReLU -> factorized reduction when it has
    twice the resolution, ReLU -> conv1x1 -> BN when only the channels differ, else nothing."""
    if larger:
        return blocks.ReLUFactorizedReduction(c_in, c_out)
    if c_in != c_out:
        return blocks.ReLUConvBN(c_in, c_out, 1)
    return blocks.Identity()


def make_op(op: int, channels: int, stride: int) -> nn.Module:
    return blocks.OPS[OPS[op]](channels, channels, stride)


# Tensors that already have the output resolution pass through this (it holds no weights).
PASS_THROUGH = blocks.Identity()


def stride_for(reduction: bool, index: int) -> int:
    """Ops that read a cell input of a reduction cell halve the resolution; all others keep it."""
    return 2 if reduction and index < NUM_CELL_INPUTS else 1


@dataclass
class CellProgram:
    """What one cell computes for one architecture: the modules to run, in order.

    Both the search network (modules picked from its shared pool) and an extracted sub-network (its own
    copies of those modules) run a cell through :func:`run_cell`, so the two compute the same thing."""

    calibrate: tuple[nn.Module, nn.Module]
    nodes: list[tuple[int, nn.Module, int, nn.Module]]  # (index_1, op_1, index_2, op_2)
    outputs: list[tuple[int, nn.Module]]  # (tensor index, module bringing it to the output resolution)


def run_cell(s0: torch.Tensor, s1: torch.Tensor, program: CellProgram) -> list[torch.Tensor]:
    """Runs the nodes of a cell and returns the tensors of its output, in index order (not combined)."""
    states = [program.calibrate[0](s0), program.calibrate[1](s1)]
    for i1, op1, i2, op2 in program.nodes:
        states.append(op1(states[i1]) + op2(states[i2]))
    return [module(states[i]) for i, module in program.outputs]


class SearchCell(nn.Module):
    """A cell with shared weights for every (node, slot, op) and a combine over any subset of tensors."""

    def __init__(self, plan: CellPlan, num_nodes: int):
        super().__init__()
        c = plan.channels
        self.plan = plan
        self.num_nodes = num_nodes
        self.calibrate0 = calibration(plan.prev_prev_channels, c, plan.prev_prev_larger)
        self.calibrate1 = calibration(plan.prev_channels, c, False)
        # ops[node][slot][stride key][op id]; only the strides a node can actually use are built
        self.ops = nn.ModuleList()
        for node in range(num_nodes):
            strides = sorted({stride_for(plan.reduction, i) for i in range(node + NUM_CELL_INPUTS)})
            slots = nn.ModuleList()
            for _slot in range(2):
                slots.append(
                    nn.ModuleDict(
                        {
                            f"stride{s}": nn.ModuleList(make_op(op, c, s) for op in range(len(OPS)))
                            for s in strides
                        }
                    )
                )
            self.ops.append(slots)
        # Unused cell inputs of a reduction cell still have the input resolution: reduce them for output.
        self.output_reduce = nn.ModuleList(
            blocks.FactorizedReduction(c, c) if plan.reduction else blocks.Identity()
            for _ in range(NUM_CELL_INPUTS)
        )
        # ReLU -> 1x1 conv -> BN from the concatenated unused tensors back to C channels. The weight covers
        # every tensor a cell can output (2 inputs + B nodes); a pass uses only the rows of its tensors.
        total = (num_nodes + NUM_CELL_INPUTS) * c
        self.combine_weight = nn.Parameter(torch.empty(c, total, 1, 1))
        # initialised as a 1x1 conv over all C*(B+2) inputs would be (kaiming uniform, a=sqrt(5))
        nn.init.kaiming_uniform_(self.combine_weight, a=math.sqrt(5))
        self.combine_bn = nn.BatchNorm2d(c)

    def program(self, cell) -> CellProgram:
        nodes = []
        for node, (i1, o1, i2, o2) in enumerate(cell):
            pick = [
                self.ops[node][slot][f"stride{stride_for(self.plan.reduction, index)}"][op]
                for slot, (index, op) in enumerate(((i1, o1), (i2, o2)))
            ]
            nodes.append((i1, pick[0], i2, pick[1]))
        outputs = [
            (i, self.output_reduce[i] if i < NUM_CELL_INPUTS else PASS_THROUGH)
            for i in MicroArch.unused(cell)
        ]
        return CellProgram((self.calibrate0, self.calibrate1), nodes, outputs)

    def combine_weight_for(self, unused: list[int]) -> torch.Tensor:
        c = self.plan.channels
        return torch.cat([self.combine_weight[:, i * c : (i + 1) * c] for i in unused], dim=1)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, cell) -> torch.Tensor:
        program = self.program(cell)
        out = torch.cat(run_cell(s0, s1, program), dim=1)
        weight = self.combine_weight_for([i for i, _ in program.outputs])
        return self.combine_bn(F.conv2d(blocks.relu_of_temporary(out), weight))


class MicroSearchNet(nn.Module):
    """Stem -> N + 2 search cells -> ReLU -> global pool -> dropout -> linear; ``forward(x, arch)``."""

    def __init__(self, space: MicroSpace, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        if not isinstance(space, MicroSpace):
            raise MusicnasError(f"MicroSearchNet needs a MicroSpace, got {type(space).__name__}")
        self.space = space
        self.in_channels, self.num_classes, self.dropout = in_channels, num_classes, dropout
        c = space.channels
        self.stem = blocks.ConvBN(in_channels, STEM_MULTIPLIER * c, 3)
        self.plans = cell_plans(space, c, lambda width, _reduction: width)
        self.cells = nn.ModuleList(SearchCell(plan, space.num_nodes) for plan in self.plans)
        self.head = blocks.GlobalAvgPoolHead(self.plans[-1].out_channels, num_classes, dropout, relu=True)

    def check_arch(self, arch) -> None:
        if not isinstance(arch, MicroArch):
            raise MusicnasError(
                f"the micro search network runs micro architectures, got {type(arch).__name__}"
            )
        if arch.space.num_nodes != self.space.num_nodes:
            raise MusicnasError(
                f"architecture has {arch.space.num_nodes} nodes per cell but this search network has "
                f"{self.space.num_nodes}; sample architectures from the network's own space"
            )

    def subnet(self, arch: MicroArch) -> nn.Module:
        """The extracted sub-network of ``arch`` (``count_cost`` counts its parameters)."""
        from musicnas.spaces.micro.extract import extract_subnet  # extract.py imports this module

        return extract_subnet(self, arch)

    def forward(self, x: torch.Tensor, arch: MicroArch) -> torch.Tensor:
        self.check_arch(arch)
        s0 = s1 = self.stem(x)
        for plan, cell in zip(self.plans, self.cells, strict=True):
            cell_arch = arch.reduction if plan.reduction else arch.normal
            s0, s1 = s1, cell(s0, s1, cell_arch)
        return self.head(s1)
