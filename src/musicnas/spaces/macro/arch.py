"""The ENAS macro search space and its architectures (enas-reference.md §1).

Whole-channels mode: each layer picks one op (branch) and a set of skip sources. Channel-range mode: every
branch runs, each contributing the output channels ``[start, start + count)``. Both modes share the
reference's flat integer encoding, per layer ``l``:

* whole channels: ``[op, skip_0 .. skip_{l-1}]``
* channel ranges: ``[start_0, count_0, .., start_{B-1}, count_{B-1}, skip_0 .. skip_{l-1}]``

Skip bit ``i`` of layer ``l`` selects tensor ``i`` of ``[stem, L0, L1, ...]``: the stem can be a skip
source, the direct predecessor never is (it is already the layer's input).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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
from musicnas.spaces.ops import HEAD_POOLS

OP_NAMES = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")

# Defaults sized for a 2-core CPU (the reference searched 12 layers x 36 channels on a GPU).
DEFAULT_LAYERS = 6
DEFAULT_CHANNELS = 24
DEFAULT_BRANCHES = 6
# Far beyond the reference (24 layers, 512 channels at most); larger values only come from edited files.
MAX_LAYERS, MAX_CHANNELS = 128, 1024
MAX_HEAD_BANDS = 64


@dataclass(frozen=True)
class MacroSpace:
    """The macro space: ``num_layers`` layers, ops limited to the first ``num_branches`` (4-6),
    whole-channels or channel-range mode, ``channels`` feature maps per layer in the search network.

    ``stem_stride`` 2 makes the stem conv halve the spectrogram (ceil sizes) before the first layer. The
    reference's stem has stride 1 (the default, kept for its 32x32 CIFAR images); on a 64x94 log-mel a
    stride-2 stem cuts the network's work about 4x, which is what lets a search run on 2 CPU cores (the
    ``cpu`` search preset uses it).

    ``head_bands`` > 1 makes the classifier head keep that many frequency bands instead of one global
    average (see :class:`~musicnas.spaces.ops.GlobalAvgPoolHead`); 1 is the reference's head.
    ``head_pool`` "avg_std" adds each channel's standard deviation over time to the head's average."""

    num_layers: int = DEFAULT_LAYERS
    num_branches: int = DEFAULT_BRANCHES
    whole_channels: bool = True
    channels: int = DEFAULT_CHANNELS
    stem_stride: int = 1
    head_bands: int = 1
    head_pool: str = "avg"

    type: ClassVar[str] = "macro"

    def __post_init__(self) -> None:
        layers = as_int(self.num_layers, "macro space: layers")
        branches = as_int(self.num_branches, "macro space: branches")
        channels = as_int(self.channels, "macro space: channels")
        if layers < 1:
            raise MusicnasError(f"macro space: layers must be at least 1, got {layers}")
        if layers > MAX_LAYERS or channels > MAX_CHANNELS:
            raise MusicnasError(
                f"macro space: at most {MAX_LAYERS} layers and {MAX_CHANNELS} channels, got {layers} and {channels}"
            )
        if not 4 <= branches <= 6:
            raise MusicnasError(
                f"macro space: branches must be 4, 5 or 6 (ops {', '.join(OP_NAMES)}), got {branches}"
            )
        if channels < 2:
            raise MusicnasError(
                f"macro space: channels must be at least 2 (factorized reductions halve them), got {channels}"
            )
        if not isinstance(self.whole_channels, bool):
            raise MusicnasError(
                f"macro space: whole_channels must be true or false, got {self.whole_channels!r}"
            )
        stem_stride = as_int(self.stem_stride, "macro space: stem_stride")
        if stem_stride not in (1, 2):
            raise MusicnasError(f"macro space: stem_stride must be 1 or 2, got {stem_stride}")
        object.__setattr__(self, "num_layers", layers)
        object.__setattr__(self, "num_branches", branches)
        object.__setattr__(self, "channels", channels)
        head_bands = as_int(self.head_bands, "macro space: head_bands")
        if not 1 <= head_bands <= MAX_HEAD_BANDS:
            raise MusicnasError(f"macro space: head_bands must be 1 to {MAX_HEAD_BANDS}, got {head_bands}")
        object.__setattr__(self, "stem_stride", stem_stride)
        object.__setattr__(self, "head_bands", head_bands)
        if self.head_pool not in HEAD_POOLS:
            raise MusicnasError(
                f"macro space: head_pool must be one of {', '.join(HEAD_POOLS)}, got {self.head_pool!r}"
            )

    # ----- structure ---------------------------------------------------------------------------------
    @property
    def op_names(self) -> tuple[str, ...]:
        return OP_NAMES[: self.num_branches]

    @property
    def pool_layers(self) -> tuple[int, ...]:
        """Layers after which every tensor is reduced: ``[N//3 - 1, 2N//3 - 1]`` (those >= 0, distinct)."""
        n = self.num_layers
        return tuple(sorted({p for p in (n // 3 - 1, 2 * n // 3 - 1) if p >= 0}))

    @property
    def range_choices(self) -> int:
        """Distinct ``(start, count)`` pairs for one branch: ``0 <= start < C``, ``1 <= count <= C - start``."""
        return self.channels * (self.channels + 1) // 2

    def layer_length(self, layer: int) -> int:
        """Integers that encode layer ``layer`` in the flat form."""
        return (1 if self.whole_channels else 2 * self.num_branches) + layer

    @property
    def flat_length(self) -> int:
        return sum(self.layer_length(layer) for layer in range(self.num_layers))

    def size(self) -> int:
        """Number of distinct architectures (an exact Python int)."""
        n = self.num_layers
        skips = 2 ** (n * (n - 1) // 2)
        if self.whole_channels:
            return self.num_branches**n * skips
        return self.range_choices ** (self.num_branches * n) * skips

    # ----- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "type": self.type,
            "num_layers": self.num_layers,
            "num_branches": self.num_branches,
            "whole_channels": self.whole_channels,
            "channels": self.channels,
            "stem_stride": self.stem_stride,
            # written only when set, so architectures of the reference head keep their JSON and keys
            **({"head_bands": self.head_bands} if self.head_bands != 1 else {}),
            **({"head_pool": self.head_pool} if self.head_pool != "avg" else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> MacroSpace:
        if not isinstance(data, dict):
            raise MusicnasError(f"macro space must be a JSON object, got {type(data).__name__}")
        if data.get("type", "macro") != "macro":
            raise MusicnasError(f"expected a macro space, got space type {data.get('type')!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"type"})
        if unknown:
            raise MusicnasError(f"macro space: unknown keys {unknown}; expected {sorted(fields)}")
        return cls(**{k: v for k, v in data.items() if k in fields})

    # CLI option -> field (the one mapping: `musicnas search`, `musicnas arch` and the benchmark use it)
    OPTIONS: ClassVar[dict[str, str]] = {"layers": "num_layers", "branches": "num_branches",
        "whole_channels": "whole_channels", "channels": "channels", "stem_stride": "stem_stride",
        "head_bands": "head_bands", "head_pool": "head_pool"}  # fmt: skip

    @classmethod
    def from_options(cls, **options: Any) -> MacroSpace:
        """Builds the space from CLI options (None = not given = default). Options of other spaces
        (``cells``, ``nodes``) are rejected when given, so a typo'd command line does not silently
        search a different space."""
        return cls(**fields_from_options(options, cls.OPTIONS, _foreign_options))

    # ----- sampling ----------------------------------------------------------------------------------
    def sample(self, generator: torch.Generator | int) -> MacroArch:
        """A uniformly random architecture of this space, drawn from ``generator`` (or a seed)."""
        gen = make_generator(generator) if isinstance(generator, int) else generator

        def randint(high: int) -> int:
            return int(torch.randint(high, (1,), generator=gen).item())

        ops: list[int] = []
        ranges: list[tuple[tuple[int, int], ...]] = []
        skips: list[tuple[int, ...]] = []
        for layer in range(self.num_layers):
            if self.whole_channels:
                ops.append(randint(self.num_branches))
            else:  # uniform over the (start, count) pairs, not start then count (that is not uniform)
                ranges.append(tuple(_decode_range(randint(self.range_choices), self.channels)
                                    for _ in range(self.num_branches)))  # fmt: skip
            skips.append(tuple(randint(2) for _ in range(layer)))
        return MacroArch(self, ops=tuple(ops), skips=tuple(skips), ranges=tuple(ranges))

    def enumerate(self) -> Iterable[MacroArch]:
        """Every architecture of the space (only sensible for tiny spaces; used by tests)."""
        import itertools

        per_layer = []
        for layer in range(self.num_layers):
            choices = (
                [(op,) for op in range(self.num_branches)]
                if self.whole_channels
                else [
                    tuple(x for pair in combo for x in pair)
                    for combo in itertools.product(
                        [_decode_range(i, self.channels) for i in range(self.range_choices)],
                        repeat=self.num_branches,
                    )
                ]
            )
            per_layer.append(
                [head + bits for head in choices for bits in itertools.product((0, 1), repeat=layer)]
            )
        for combo in itertools.product(*per_layer):
            yield MacroArch.from_flat([x for part in combo for x in part], self)


def _decode_range(index: int, channels: int) -> tuple[int, int]:
    """Maps 0 .. C(C+1)/2 - 1 onto the pairs (start, count), start-major."""
    for start in range(channels):
        n = channels - start
        if index < n:
            return start, index + 1
        index -= n
    raise ValueError("range index out of bounds")


@dataclass(frozen=True)
class MacroArch:
    """One macro architecture. ``ops[l]`` is layer l's op id (whole-channels mode, else empty);
    ``ranges[l][b] = (start, count)`` is branch b's channel range (channel-range mode, else empty);
    ``skips[l]`` holds ``l`` bits over ``[stem, L0, .., L(l-2)]``. Validated on construction."""

    space: MacroSpace
    ops: tuple[int, ...] = ()
    skips: tuple[tuple[int, ...], ...] = ()
    ranges: tuple[tuple[tuple[int, int], ...], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.space, MacroSpace):
            raise MusicnasError(f"macro architecture needs a MacroSpace, got {type(self.space).__name__}")
        try:
            object.__setattr__(self, "ops", tuple(soft_int(v) for v in self.ops))
            object.__setattr__(self, "skips", tuple(tuple(soft_int(v) for v in s) for s in self.skips))
            object.__setattr__(
                self, "ranges", tuple(tuple(tuple(soft_int(v) for v in p) for p in r) for r in self.ranges)
            )
        except TypeError as exc:
            raise MusicnasError(f"macro architecture: ops, skips and ranges must be lists: {exc}") from exc
        self.validate()

    def validate(self) -> None:
        """Raises :class:`MusicnasError` naming the first problem found."""
        space = self.space
        n = space.num_layers
        if len(self.skips) != n:
            raise MusicnasError(
                f"macro architecture has skips for {len(self.skips)} layers but the space has {n} layers"
            )
        if space.whole_channels:
            if len(self.ops) != n:
                raise MusicnasError(
                    f"macro architecture has {len(self.ops)} ops but the space has {n} layers"
                )
            if self.ranges:
                raise MusicnasError("macro architecture has channel ranges but its space uses whole channels")
            for layer, op in enumerate(self.ops):
                op = as_int(op, f"layer {layer}: op")
                if not 0 <= op < space.num_branches:
                    raise MusicnasError(
                        f"layer {layer}: op {op} is out of range: the space has {space.num_branches} branches "
                        f"(0..{space.num_branches - 1} = {', '.join(space.op_names)})"
                    )
        else:
            if self.ops:
                raise MusicnasError(
                    "macro architecture has whole-channel ops but its space uses channel ranges"
                )
            if len(self.ranges) != n:
                raise MusicnasError(
                    f"macro architecture has channel ranges for {len(self.ranges)} layers, space has {n}"
                )
            c = space.channels
            for layer, branches in enumerate(self.ranges):
                if len(branches) != space.num_branches:
                    raise MusicnasError(
                        f"layer {layer}: {len(branches)} channel ranges given, expected one per branch ({space.num_branches})"
                    )
                for b, pair in enumerate(branches):
                    if len(pair) != 2:
                        raise MusicnasError(
                            f"layer {layer}, branch {b}: a channel range is (start, count), got {pair!r}"
                        )
                    start = as_int(pair[0], f"layer {layer}, branch {b}: start")
                    count = as_int(pair[1], f"layer {layer}, branch {b}: count")
                    if not 0 <= start < c:
                        raise MusicnasError(
                            f"layer {layer}, branch {b}: start {start} must be in 0..{c - 1} ({c} channels)"
                        )
                    if not 1 <= count <= c - start:
                        raise MusicnasError(
                            f"layer {layer}, branch {b}: count {count} must be in 1..{c - start} "
                            f"(start {start} + count may not exceed {c} channels)"
                        )
        for layer, bits in enumerate(self.skips):
            if len(bits) != layer:
                raise MusicnasError(
                    f"layer {layer}: expected {layer} skip bits (one per earlier tensor), got {len(bits)}"
                )
            for i, bit in enumerate(bits):
                if isinstance(bit, bool) or bit not in (0, 1):
                    raise MusicnasError(f"layer {layer}: skip bit {i} must be 0 or 1, got {bit!r}")

    # ----- derived structure -------------------------------------------------------------------------
    @property
    def skip_rate(self) -> float:
        """Share of the possible skip connections this architecture uses."""
        total = sum(len(bits) for bits in self.skips)
        return sum(int(bool(b)) for bits in self.skips for b in bits) / total if total else 0.0

    def skip_sources(self, layer: int) -> list[int]:
        """Indices into ``[stem, L0, L1, ...]`` that layer ``layer`` adds (search) or concatenates (fixed)."""
        return [i for i, bit in enumerate(self.skips[layer]) if bit]

    def reductions_needed(self) -> dict[int, list[int]]:
        """For each pool layer p, the tensors (indices into ``[stem, L0, ..]``) whose factorized reduction
        after p is ever consumed later. Tensor t comes from layer t-1 and a consumer at layer l (the
        head counts as layer N) needs it reduced at every pool layer p with ``t - 1 <= p < l``. The
        reference reduced every tensor; the unused ones cannot change the output, so they are skipped."""
        consumers: dict[int, int] = {}  # tensor -> last layer that reads it
        for layer in range(self.space.num_layers):
            for t in [layer, *self.skip_sources(layer)]:
                consumers[t] = max(consumers.get(t, -1), layer)
        consumers[self.space.num_layers] = self.space.num_layers
        return {
            p: [t for t in range(p + 2) if t in consumers and consumers[t] > p]
            for p in self.space.pool_layers
        }

    # ----- encodings ---------------------------------------------------------------------------------
    def to_flat(self) -> list[int]:
        flat: list[int] = []
        for layer in range(self.space.num_layers):
            if self.space.whole_channels:
                flat.append(int(self.ops[layer]))
            else:
                for start, count in self.ranges[layer]:
                    flat += [int(start), int(count)]
            flat += [int(b) for b in self.skips[layer]]
        return flat

    @classmethod
    def from_flat(cls, ints: Sequence[int], space: MacroSpace) -> MacroArch:
        """Reads the reference's flat integer list for ``space``."""
        ints = list(ints)
        if len(ints) != space.flat_length:
            hint = ""
            if space.whole_channels:
                for n in range(1, 64):
                    if n + n * (n - 1) // 2 == len(ints):
                        hint = f"; {len(ints)} integers fit a {n}-layer whole-channels space (--layers {n})"
            raise MusicnasError(
                f"a flat macro architecture for {space.num_layers} layers "
                f"({'whole channels' if space.whole_channels else f'channel ranges, {space.num_branches} branches'}) "
                f"has {space.flat_length} integers, got {len(ints)}{hint}"
            )
        pos = 0
        ops, ranges, skips = [], [], []
        for layer in range(space.num_layers):
            if space.whole_channels:
                ops.append(ints[pos])
                pos += 1
            else:
                b = space.num_branches
                ranges.append(tuple((ints[pos + 2 * i], ints[pos + 2 * i + 1]) for i in range(b)))
                pos += 2 * b
            skips.append(tuple(ints[pos : pos + layer]))
            pos += layer
        return cls(space, ops=tuple(ops), skips=tuple(skips), ranges=tuple(ranges))

    def to_json(self) -> dict:
        layers = []
        for layer in range(self.space.num_layers):
            entry: dict[str, Any] = {}
            if self.space.whole_channels:
                entry["op"] = self.ops[layer]
                entry["op_name"] = OP_NAMES[self.ops[layer]]
            else:
                entry["branches"] = [
                    {"op_name": OP_NAMES[b], "start": s, "count": c}
                    for b, (s, c) in enumerate(self.ranges[layer])
                ]
            entry["skips"] = list(self.skips[layer])
            layers.append(entry)
        return {
            "format": ARCH_FORMAT,
            "version": ARCH_VERSION,
            "space": self.space.to_dict(),
            "layers": layers,
            "flat": self.to_flat(),
        }

    @classmethod
    def from_json(cls, data: dict) -> MacroArch:
        """Reads :meth:`to_json` output. ``flat`` is the source of truth; ``layers``, when present, must
        agree with it (so a hand edit of one but not the other is caught)."""
        check_arch_header(data)
        space = MacroSpace.from_dict(data.get("space"))
        flat = data.get("flat")
        if not isinstance(flat, list):
            raise MusicnasError("architecture JSON has no 'flat' list of integers")
        arch = cls.from_flat([as_int(v, "flat entry") for v in flat], space)
        if "layers" in data and data["layers"] != arch.to_json()["layers"]:
            raise MusicnasError(
                "architecture JSON: 'layers' and 'flat' describe different architectures; fix or drop 'layers'"
            )
        return arch

    def key(self) -> str:
        s = self.space
        mode = "w" if s.whole_channels else "r"
        return f"macro-L{s.num_layers}-B{s.num_branches}-C{s.channels}-{mode}:" + ",".join(
            map(str, self.to_flat())
        )

    def __str__(self) -> str:
        names = ["stem"] + [f"L{i}" for i in range(self.space.num_layers)]
        mode = "whole channels" if self.space.whole_channels else "channel ranges"
        lines = [
            f"macro architecture: {self.space.num_layers} layers, {self.space.num_branches} branches, "
            f"{mode}, {self.space.channels} channels"
        ]
        width = max(len(n) for n in OP_NAMES)
        for layer in range(self.space.num_layers):
            if self.space.whole_channels:
                what = OP_NAMES[self.ops[layer]].ljust(width)
            else:
                what = " ".join(f"{OP_NAMES[b]}[{s}:{s + c}]" for b, (s, c) in enumerate(self.ranges[layer]))
            sources = ", ".join(names[i] for i in self.skip_sources(layer)) or "-"
            pool = "  | reduce after" if layer in self.space.pool_layers else ""
            lines.append(f"  L{layer:<2d} {what}  skips: {sources}{pool}")
        return "\n".join(lines)


def _foreign_options(flags: list[str]) -> str:
    return (
        f"{', '.join(flags)} {'does' if len(flags) == 1 else 'do'} not apply to the macro space (it takes --layers, "
        "--channels, --branches, --whole-channels/--channel-ranges); drop them or choose --space micro"
    )


def log10_size(space: MacroSpace) -> float:
    """log10 of the space size (for display; the size itself can have thousands of digits)."""
    n = space.num_layers
    per_layer = (
        math.log10(space.num_branches)
        if space.whole_channels
        else space.num_branches * math.log10(space.range_choices)
    )
    return n * per_layer + n * (n - 1) / 2 * math.log10(2)
