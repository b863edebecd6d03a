"""Architecture JSON -> a plain description the diagrams and tables draw from.

The space packages own validation: when they are importable, the JSON goes through
``musicnas.spaces.load_arch`` (which raises a specific MusicnasError for a bad architecture) and the
drawing uses the validated ``to_flat()`` and ``space.to_dict()``. The drawing itself only needs the
reference's flat integer form (docs/enas-reference.md sections 1 and 2), which is part of the contract,
so it does not depend on any attribute of the Arch classes beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from musicnas.runtime import MusicnasError

# Op ids of the reference (docs/enas-reference.md): macro 0..5, micro 0..4.
MACRO_OPS = ("conv 3x3", "sep-conv 3x3", "conv 5x5", "sep-conv 5x5", "avg-pool 3x3", "max-pool 3x3")
MICRO_OPS = ("sep-conv 3x3", "sep-conv 5x5", "avg-pool 3x3", "max-pool 3x3", "identity")
MACRO_SHORT = ("conv3", "sep3", "conv5", "sep5", "avg", "max")
MICRO_SHORT = ("sep3", "sep5", "avg", "max", "id")


@dataclass(frozen=True)
class MacroLayer:
    op: int | None  # None in channel-range mode
    branches: tuple[tuple[int, int], ...]  # (start, count) per branch in channel-range mode, else ()
    skips: tuple[int, ...]  # indices into [stem, L0, L1, ...]

    def label(self) -> str:
        if self.op is not None:
            return MACRO_OPS[self.op] if self.op < len(MACRO_OPS) else f"op {self.op}"
        parts = [
            f"{MACRO_SHORT[b] if b < len(MACRO_SHORT) else b}[{s}:{s + c}]"
            for b, (s, c) in enumerate(self.branches)
        ]
        return " ".join(parts)


@dataclass(frozen=True)
class MicroNode:
    inputs: tuple[int, int]  # 0, 1 = the cell's two inputs; 2.. = earlier nodes
    ops: tuple[int, int]


@dataclass
class ArchInfo:
    type: str  # "macro" | "micro"
    space: dict
    flat: list[int]
    layers: list[MacroLayer] = field(default_factory=list)
    pool_layers: tuple[int, ...] = ()
    cells: dict[str, list[MicroNode]] = field(default_factory=dict)  # "normal"/"reduction" -> nodes
    text: str | None = None  # the space's own __str__, when the space package is available

    def short_lines(self) -> list[str]:
        """A compact description for tables: one line for macro, one per cell for micro."""
        if self.type == "macro":
            ops = " ".join(
                (MACRO_SHORT[layer.op] if layer.op is not None and layer.op < len(MACRO_SHORT) else "mix")
                for layer in self.layers
            )
            n_skips = sum(len(layer.skips) for layer in self.layers)
            return [f"{ops} | {n_skips} skips"]
        return [
            f"{name}: "
            + " ".join(
                f"({n.inputs[0]}:{_short_micro(n.ops[0])},{n.inputs[1]}:{_short_micro(n.ops[1])})"
                for n in nodes
            )
            for name, nodes in self.cells.items()
        ]

    def short(self) -> str:
        return "; ".join(self.short_lines())


def _short_micro(op: int) -> str:
    return MICRO_SHORT[op] if 0 <= op < len(MICRO_SHORT) else str(op)


def _validated(arch_json: dict) -> tuple[list[int], dict, str | None]:
    """Flat form, space dict and readable text, through the space package when it exists."""
    try:
        from musicnas.spaces import load_arch

        arch = load_arch(arch_json)
    except (ModuleNotFoundError, AttributeError):
        # The space package is not built (or lacks Arch): fall back to the JSON's own flat form,
        # checked below against the reference layout.
        return _raw_flat(arch_json), dict(arch_json["space"]), None
    return [int(v) for v in arch.to_flat()], dict(arch.space.to_dict()), str(arch)


def _raw_flat(arch_json: dict) -> list[int]:
    flat = arch_json.get("flat")
    if not isinstance(flat, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        raise MusicnasError("architecture JSON has no integer 'flat' list; was it written by musicnas?")
    return list(flat)


def describe_arch(arch_json: dict) -> ArchInfo:
    """Decodes an architecture JSON for drawing; raises MusicnasError when it does not parse."""
    if not isinstance(arch_json, dict) or not isinstance(arch_json.get("space"), dict):
        raise MusicnasError("architecture JSON must be an object with a 'space' object (written by musicnas)")
    kind = arch_json["space"].get("type")
    if kind not in ("macro", "micro"):
        raise MusicnasError(f"architecture JSON names unknown space type {kind!r}")
    flat, space, text = _validated(arch_json)
    info = ArchInfo(type=kind, space=space, flat=flat, text=text)
    if kind == "macro":
        _decode_macro(info)
    else:
        _decode_micro(info)
    return info


def _int_option(space: dict, names: tuple[str, ...], default=None):
    for name in names:
        value = space.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def _decode_macro(info: ArchInfo) -> None:
    flat, space = info.flat, info.space
    whole = space.get("whole_channels", True)
    branches = _int_option(space, ("num_branches",), 6)
    per_layer_head = 1 if whole else 2 * branches
    n = _int_option(space, ("num_layers",))
    if n is None:  # infer from the length: sum over l of (head + l) = n*head + n(n-1)/2
        n = 0
        while n * per_layer_head + n * (n - 1) // 2 < len(flat):
            n += 1
    expected = n * per_layer_head + n * (n - 1) // 2
    if len(flat) != expected:
        raise MusicnasError(
            f"macro architecture has {len(flat)} integers; {n} layers in "
            f"{'whole-channel' if whole else 'channel-range'} mode need {expected}"
        )
    pos = 0
    for layer in range(n):
        head = flat[pos : pos + per_layer_head]
        pos += per_layer_head
        bits = flat[pos : pos + layer]
        pos += layer
        if whole:
            op, ranges = head[0], ()
            if not 0 <= op < branches:
                raise MusicnasError(f"macro layer {layer} has op {op}, outside 0..{branches - 1}")
        else:
            op, ranges = None, tuple((head[2 * b], head[2 * b + 1]) for b in range(branches))
        if any(b not in (0, 1) for b in bits):
            raise MusicnasError(f"macro layer {layer} has skip bits {bits}; each must be 0 or 1")
        # Bit i selects tensor i of [stem, L0, L1, ...] (the direct predecessor is the input already).
        info.layers.append(
            MacroLayer(op=op, branches=ranges, skips=tuple(i for i, b in enumerate(bits) if b))
        )
    # Reduction follows these layers (reference: [N//3 - 1, 2N//3 - 1]).
    info.pool_layers = tuple(sorted({i for i in (n // 3 - 1, 2 * n // 3 - 1) if 0 <= i < n}))


def _decode_micro(info: ArchInfo) -> None:
    flat, space = info.flat, info.space
    nodes = _int_option(space, ("num_nodes", "nodes", "num_cell_nodes"))
    if nodes is None:
        if len(flat) % 8:
            raise MusicnasError(f"micro architecture has {len(flat)} integers; expected 8 per node")
        nodes = len(flat) // 8
    if len(flat) != 8 * nodes:
        raise MusicnasError(
            f"micro architecture has {len(flat)} integers; {nodes} nodes per cell need {8 * nodes}"
        )
    for c, name in enumerate(("normal", "reduction")):
        cell = []
        for j in range(nodes):
            i1, o1, i2, o2 = flat[4 * (c * nodes + j) : 4 * (c * nodes + j) + 4]
            for idx in (i1, i2):
                if not 0 <= idx < j + 2:
                    raise MusicnasError(f"micro {name} cell node {j} reads input {idx}, outside 0..{j + 1}")
            cell.append(MicroNode(inputs=(i1, i2), ops=(o1, o2)))
        info.cells[name] = cell


def cell_outputs(nodes: list[MicroNode]) -> list[int]:
    """Ids that no node uses, the cell's two inputs included (reference section 2): they are concatenated
    into the cell output."""
    used = {i for node in nodes for i in node.inputs}
    return [i for i in range(len(nodes) + 2) if i not in used]
