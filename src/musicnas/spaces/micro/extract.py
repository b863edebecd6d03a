"""Sub-network extraction: a standalone copy of exactly the search-network weights one architecture
uses. Its ``forward(x)`` equals ``search_net(x, arch)`` in eval mode (same modules, same cell program)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from musicnas.spaces.micro.arch import MicroArch
from musicnas.spaces.micro.search_net import CellProgram, MicroSearchNet, SearchCell, run_cell


class ExtractedCell(nn.Module):
    """One search cell frozen to one architecture, with its own copies of the weights it uses."""

    def __init__(self, cell: SearchCell, cell_arch):
        super().__init__()
        program = cell.program(cell_arch)
        self.calibrate = nn.ModuleList(copy.deepcopy(m) for m in program.calibrate)
        self.node_inputs = [(i1, i2) for i1, _, i2, _ in program.nodes]
        self.node_ops = nn.ModuleList(
            nn.ModuleList([copy.deepcopy(op1), copy.deepcopy(op2)]) for _, op1, _, op2 in program.nodes
        )
        self.output_indices = [i for i, _ in program.outputs]
        self.output_modules = nn.ModuleList(copy.deepcopy(m) for _, m in program.outputs)
        weight = cell.combine_weight_for(self.output_indices).detach().clone()
        self.combine = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
        with torch.no_grad():
            self.combine.weight.copy_(weight)
        self.combine_bn = copy.deepcopy(cell.combine_bn)

    def program(self) -> CellProgram:
        nodes = [
            (i1, ops[0], i2, ops[1]) for (i1, i2), ops in zip(self.node_inputs, self.node_ops, strict=True)
        ]
        return CellProgram(
            tuple(self.calibrate), nodes, list(zip(self.output_indices, self.output_modules, strict=True))
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        out = torch.cat(run_cell(s0, s1, self.program()), dim=1)
        return self.combine_bn(self.combine(F.relu(out)))


class ExtractedMicroNet(nn.Module):
    """The sub-network of a :class:`MicroSearchNet` for one architecture; ``forward(x) -> logits``."""

    def __init__(self, search_net: MicroSearchNet, arch: MicroArch):
        super().__init__()
        search_net.check_arch(arch)
        self.arch = arch
        self.stem = copy.deepcopy(search_net.stem)
        self.cells = nn.ModuleList(
            ExtractedCell(cell, arch.reduction if plan.reduction else arch.normal)
            for plan, cell in zip(search_net.plans, search_net.cells, strict=True)
        )
        self.head = copy.deepcopy(search_net.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(s1)


def extract_subnet(search_net: MicroSearchNet, arch: MicroArch) -> ExtractedMicroNet:
    """A standalone module holding copies of exactly the weights ``arch`` uses in ``search_net``
    (in the search network's train/eval mode)."""
    subnet = ExtractedMicroNet(search_net, arch)
    subnet.train(search_net.training)
    return subnet
