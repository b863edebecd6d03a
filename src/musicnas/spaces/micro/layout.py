"""Where the cells of a micro network sit and how wide they are (shared by the search and fixed nets).

Stem conv3x3 -> 3C channels; ``N + 2`` cells with reduction cells at ``[N//3, 2N//3 + 1]``; the width
doubles at each reduction cell. Each cell reads the outputs of the two cells before it (the stem output
stands in for both before the first cell).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from musicnas.spaces.micro.arch import MicroSpace

STEM_MULTIPLIER = 3


@dataclass(frozen=True)
class CellPlan:
    index: int
    reduction: bool
    channels: int  # width of the cell's nodes
    prev_prev_channels: int  # channels of input 0 (the older one)
    prev_channels: int  # channels of input 1
    prev_prev_larger: bool  # input 0 has twice the resolution of input 1 (a reduction came between)
    out_channels: int


def cell_plans(space: MicroSpace, channels: int, out_width: Callable[[int, bool], int]) -> list[CellPlan]:
    """Plans every cell; ``out_width(cell_channels, is_reduction)`` gives a cell's output channels."""
    reductions = set(space.reduction_cells)
    c = channels
    c_pp = c_p = STEM_MULTIPLIER * channels
    level_pp = level_p = 0  # number of reductions each input has been through
    plans = []
    for i in range(space.total_cells):
        reduction = i in reductions
        if reduction:
            c *= 2
        out = out_width(c, reduction)
        plans.append(CellPlan(i, reduction, c, c_pp, c_p, level_pp < level_p, out))
        c_pp, c_p = c_p, out
        level_pp, level_p = level_p, level_p + int(reduction)
    return plans
