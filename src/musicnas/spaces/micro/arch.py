"""The ENAS micro (cell) search space: a normal and a reduction cell of B nodes each.

A node is ``[index_1, op_1, index_2, op_2]``: it adds ``op_1`` applied to tensor ``index_1`` and ``op_2``
applied to tensor ``index_2``, where tensors ``0`` and ``1`` are the cell's two inputs (outputs of the
two previous cells) and ``2 + j`` is node ``j`` of the same cell. The flat integer form is the
reference's: the normal cell's ``4B`` integers, then the reduction cell's ``4B`` integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from musicnas.runtime import MusicnasError, make_generator
from musicnas.spaces.fields import (
    ARCH_FORMAT,
    ARCH_VERSION,
    as_int,
    check_arch_header,
    fields_from_options,
    soft_int,
)

# Op id -> name. The order is the reference's and is part of the on-disk format.
OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
NUM_OPS = len(OPS)
SEP_CONV_3X3, SEP_CONV_5X5, AVG_POOL_3X3, MAX_POOL_3X3, IDENTITY = range(NUM_OPS)

# Number of nodes in the reduction/normal cell each tensor index can point at, before the nodes.
NUM_CELL_INPUTS = 2


@dataclass(frozen=True)
class MicroSpace:
    """Cell search space: ``num_cells`` (N) normal cells, 2 reduction cells, ``num_nodes`` (B) nodes per
    cell, ``channels`` (C) channels in the first cells (the stem has 3C).

    ``layer_base`` gives every cell of the *fixed* network the authors' extra ReLU -> conv1x1 -> BN on
    the previous cell's output after calibration (``micro_child.py``, ``_fixed_layer``); with it their
    published CIFAR-10 cell builds with their 3,894,372 parameters. Their search network has no such
    layer, and neither has ours."""

    num_cells: int = 2
    num_nodes: int = 5
    channels: int = 16
    layer_base: bool = False
    type: ClassVar[str] = "micro"

    def __post_init__(self):
        # upper bounds far beyond the reference (N=6, B=5, 36-512 channels): larger come from edited files
        for name, low, high in (("num_cells", 1, 32), ("num_nodes", 1, 16), ("channels", 1, 1024)):
            value = as_int(getattr(self, name), f"micro space {name}")
            if value < low:
                raise MusicnasError(f"micro space {name} must be >= {low}, got {value}")
            if value > high:
                raise MusicnasError(f"micro space {name} must be <= {high}, got {value}")
        if not isinstance(self.layer_base, bool):
            raise MusicnasError(f"micro space layer_base must be true or false, got {self.layer_base!r}")

    # --- layout -------------------------------------------------------------------------------
    @property
    def total_cells(self) -> int:
        """N normal cells plus the two reduction cells."""
        return self.num_cells + 2

    @property
    def reduction_cells(self) -> tuple[int, int]:
        """Positions of the two reduction cells: ``[N//3, 2N//3 + 1]`` (enas-reference.md §2)."""
        n = self.num_cells
        return (n // 3, 2 * n // 3 + 1)

    @property
    def flat_length(self) -> int:
        return 2 * 4 * self.num_nodes

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {
            "type": self.type,
            "num_cells": self.num_cells,
            "num_nodes": self.num_nodes,
            "channels": self.channels,
        }
        if self.layer_base:  # written only when on, so records without it stay as they were
            out["layer_base"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict) -> MicroSpace:
        if not isinstance(d, dict):
            raise MusicnasError(f"micro space description must be an object, got {type(d).__name__}")
        if d.get("type", "micro") != "micro":
            raise MusicnasError(f"expected a micro space description, got type {d.get('type')!r}")
        fields = ("num_cells", "num_nodes", "channels", "layer_base")
        unknown = set(d) - {"type", *fields}
        if unknown:
            raise MusicnasError(f"micro space description has unknown keys: {', '.join(sorted(unknown))}")
        kwargs = {k: d[k] for k in fields if k in d}
        return cls(**kwargs)

    # CLI option -> field (the one mapping: `musicnas search`, `musicnas arch` and the benchmark use it)
    OPTIONS: ClassVar[dict[str, str]] = {"cells": "num_cells", "nodes": "num_nodes", "channels": "channels"}

    @classmethod
    def from_options(cls, **options) -> MicroSpace:
        """Builds the space from CLI options; options of the macro space are rejected, not ignored."""
        return cls(**fields_from_options(options, cls.OPTIONS, _foreign_options))

    # --- counting and sampling -----------------------------------------------------------------
    def cell_size(self) -> int:
        """Number of distinct encodings of one cell: node j picks 2 (input, op) pairs from
        ``(j + 2) * NUM_OPS`` choices, in order (the encoding distinguishes the two slots)."""
        size = 1
        for j in range(self.num_nodes):
            size *= ((j + NUM_CELL_INPUTS) * NUM_OPS) ** 2
        return size

    def size(self) -> int:
        """Number of distinct architectures (encodings: normal cell times reduction cell)."""
        return self.cell_size() ** 2

    def sample(self, generator: torch.Generator | int) -> MicroArch:
        """A uniformly random architecture; an int is taken as a seed for a fresh generator."""
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = make_generator(generator)
        cells = []
        for _ in range(2):
            nodes = []
            for j in range(self.num_nodes):
                hi = j + NUM_CELL_INPUTS
                ints = torch.stack(
                    [
                        torch.randint(hi, (), generator=generator),
                        torch.randint(NUM_OPS, (), generator=generator),
                        torch.randint(hi, (), generator=generator),
                        torch.randint(NUM_OPS, (), generator=generator),
                    ]
                ).tolist()
                nodes.append(tuple(int(v) for v in ints))
            cells.append(tuple(nodes))
        return MicroArch(space=self, normal=cells[0], reduction=cells[1])


def _cell_errors(cell, space: MicroSpace, name: str) -> None:
    if not isinstance(cell, (tuple, list)):
        raise MusicnasError(f"{name} cell must be a list of nodes, got {type(cell).__name__}")
    if len(cell) != space.num_nodes:
        raise MusicnasError(
            f"{name} cell has {len(cell)} nodes but the space has num_nodes={space.num_nodes}; "
            "use an architecture made for this space"
        )
    for j, node in enumerate(cell):
        if not isinstance(node, (tuple, list)) or len(node) != 4:
            raise MusicnasError(f"{name} cell node {j} must be [index_1, op_1, index_2, op_2], got {node!r}")
        for slot in range(2):
            index = as_int(node[2 * slot], f"{name} cell node {j} index_{slot + 1}")
            op = as_int(node[2 * slot + 1], f"{name} cell node {j} op_{slot + 1}")
            if not 0 <= index < j + NUM_CELL_INPUTS:
                raise MusicnasError(
                    f"{name} cell node {j} index_{slot + 1}={index} is out of range: node {j} can only read "
                    f"the 2 cell inputs and earlier nodes (0..{j + NUM_CELL_INPUTS - 1})"
                )
            if not 0 <= op < NUM_OPS:
                raise MusicnasError(
                    f"{name} cell node {j} op_{slot + 1}={op} is not an op id (0..{NUM_OPS - 1}: "
                    f"{', '.join(f'{i} {n}' for i, n in enumerate(OPS))})"
                )


@dataclass(frozen=True)
class MicroArch:
    """A normal and a reduction cell, each a tuple of ``num_nodes`` nodes ``(i1, op1, i2, op2)``."""

    space: MicroSpace
    normal: tuple[tuple[int, int, int, int], ...]
    reduction: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self):
        # Normalise lists to tuples so that equal architectures hash equal, then validate.
        for name in ("normal", "reduction"):
            cell = getattr(self, name)
            if isinstance(cell, (list, tuple)):
                cell = tuple(
                    tuple(soft_int(v) for v in node) if isinstance(node, (list, tuple)) else node
                    for node in cell
                )
                object.__setattr__(self, name, cell)
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.space, MicroSpace):
            raise MusicnasError(f"a micro architecture needs a MicroSpace, got {type(self.space).__name__}")
        _cell_errors(self.normal, self.space, "normal")
        _cell_errors(self.reduction, self.space, "reduction")

    def cells(self) -> tuple[tuple, tuple]:
        return (self.normal, self.reduction)

    @staticmethod
    def unused(cell) -> list[int]:
        """Indices (0, 1 = inputs, 2 + j = node j) that no node of ``cell`` reads: the cell's output."""
        used = {node[0] for node in cell} | {node[2] for node in cell}
        return [i for i in range(len(cell) + NUM_CELL_INPUTS) if i not in used]

    # --- flat form ----------------------------------------------------------------------------
    def to_flat(self) -> list[int]:
        return [v for cell in self.cells() for node in cell for v in node]

    @classmethod
    def from_flat(cls, ints, space: MicroSpace) -> MicroArch:
        if not isinstance(space, MicroSpace):
            raise MusicnasError(f"a micro architecture needs a MicroSpace, got {type(space).__name__}")
        ints = list(ints)
        if len(ints) != space.flat_length:
            raise MusicnasError(
                f"a flat micro architecture for num_nodes={space.num_nodes} has {space.flat_length} integers "
                f"(normal cell 4B, then reduction cell 4B), got {len(ints)}"
            )
        for k, v in enumerate(ints):
            as_int(v, f"flat architecture entry {k}")
        half = 4 * space.num_nodes
        cells = [
            tuple(tuple(ints[start + 4 * j : start + 4 * j + 4]) for j in range(space.num_nodes))
            for start in (0, half)
        ]
        return cls(space=space, normal=cells[0], reduction=cells[1])

    # --- JSON -----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": ARCH_FORMAT,
            "version": ARCH_VERSION,
            "space": self.space.to_dict(),
            "normal": [list(node) for node in self.normal],
            "reduction": [list(node) for node in self.reduction],
            "ops": list(OPS),
            "flat": self.to_flat(),
        }

    @classmethod
    def from_json(cls, d: dict) -> MicroArch:
        check_arch_header(d)
        space = MicroSpace.from_dict(d.get("space"))
        if "flat" in d:
            arch = cls.from_flat(d["flat"], space)
            for name in ("normal", "reduction"):
                if name in d and [list(n) for n in getattr(arch, name)] != d[name]:
                    raise MusicnasError(f"architecture JSON is inconsistent: '{name}' does not match 'flat'")
            return arch
        if "normal" not in d or "reduction" not in d:
            raise MusicnasError("micro architecture JSON needs 'flat' or both 'normal' and 'reduction'")
        return cls(space=space, normal=d["normal"], reduction=d["reduction"])

    # --- identity and display -----------------------------------------------------------------
    def key(self) -> str:
        s = self.space
        base = "-LB" if s.layer_base else ""
        return f"micro-N{s.num_cells}-B{s.num_nodes}-C{s.channels}{base}:" + ",".join(
            map(str, self.to_flat())
        )

    def __str__(self) -> str:
        lines = [
            f"micro architecture (N={self.space.num_cells}, B={self.space.num_nodes}, C={self.space.channels})"
        ]
        for name, cell in (("normal", self.normal), ("reduction", self.reduction)):
            lines.append(f"{name} cell:")
            for j, (i1, o1, i2, o2) in enumerate(cell):
                lines.append(
                    f"  node {j + NUM_CELL_INPUTS}: {OPS[o1]}({_tensor_name(i1)}) + {OPS[o2]}({_tensor_name(i2)})"
                )
            lines.append(f"  output: concat({', '.join(_tensor_name(i) for i in self.unused(cell))})")
        return "\n".join(lines)


def _foreign_options(flags: list[str]) -> str:
    return (
        f"{', '.join(flags)} only {'applies' if len(flags) == 1 else 'apply'} to the macro space; the micro "
        "space takes --cells, --nodes and --channels"
    )


def _tensor_name(index: int) -> str:
    return ("prev_prev", "prev")[index] if index < NUM_CELL_INPUTS else f"node {index}"
