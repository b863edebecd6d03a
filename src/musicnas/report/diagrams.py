"""Architecture diagrams drawn with matplotlib patches (no graphviz): a macro network as a column of
layers with skip connections as arcs, a micro architecture as its two cells drawn as small DAGs."""

from __future__ import annotations

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from musicnas.report.archinfo import ArchInfo, MicroNode, cell_outputs
from musicnas.report.figures import new_figure, to_png

# One colour per kind of op, shared by both spaces so a reader learns it once.
KIND_COLOURS = {
    "conv": "#9ecae1",
    "sep": "#a1d99b",
    "pool": "#fdd0a2",
    "identity": "#dadaeb",
    "io": "#eeeeee",
}


def _kind(op_name: str) -> str:
    if "sep" in op_name:
        return "sep"
    if "pool" in op_name or op_name.startswith(("avg", "max")):
        return "pool"
    if "identity" in op_name:
        return "identity"
    return "conv"


def draw_arch(info: ArchInfo) -> bytes:
    return draw_macro(info) if info.type == "macro" else draw_micro(info)


def _box(ax, x, y, w, h, text, colour, fontsize=9, weight="normal"):
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=colour,
            ec="#444444",
            lw=1,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight=weight)


def _arrow(ax, start, end, rad=0.0, colour="#333333", lw=1.0, style="-|>", alpha=1.0):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle=style,
            mutation_scale=9,
            color=colour,
            lw=lw,
            alpha=alpha,
            shrinkA=0,
            shrinkB=0,
        )
    )


def draw_macro(info: ArchInfo) -> bytes:
    """Stem at the top, one box per layer below it, the head at the bottom. Skip connections leave the
    right edge of their source and enter the right edge of the layer that concatenates them."""
    layers = info.layers
    n = len(layers)
    step, box_w, box_h = 1.0, 3.2, 0.62
    rows = n + 3  # input, stem, layers, head
    fig = new_figure(7.0, max(3.0, 0.5 * rows + 0.8))
    ax = fig.add_subplot()
    ax.set_xlim(-2.6, 6.6)
    ax.set_ylim(-(rows - 1) * step - 0.6, 0.6)
    ax.set_axis_off()

    def y_of(row):  # row 0 = input
        return -row * step

    _box(ax, 0, y_of(0), box_w, box_h, "input (log-mel)", KIND_COLOURS["io"])
    _box(ax, 0, y_of(1), box_w, box_h, "stem: conv 3x3", KIND_COLOURS["conv"])
    for i, layer in enumerate(layers):
        label = layer.label()
        colour = KIND_COLOURS[_kind(label)] if layer.op is not None else KIND_COLOURS["conv"]
        _box(
            ax,
            0,
            y_of(i + 2),
            box_w,
            box_h,
            f"L{i}  {label}",
            colour,
            fontsize=9 if layer.op is not None else 6.5,
        )
        if i in info.pool_layers:
            ax.text(
                -box_w / 2 - 0.15,
                y_of(i + 2) - 0.5 * step,
                "reduce x2",
                ha="right",
                va="center",
                fontsize=7.5,
                color="#a63603",
            )
    _box(ax, 0, y_of(n + 2), box_w, box_h, "global pool -> linear", KIND_COLOURS["io"])
    for row in range(n + 2):
        _arrow(ax, (0, y_of(row) - box_h / 2), (0, y_of(row + 1) + box_h / 2))
    # Skip arcs: tensor index s of [stem, L0, ...] sits on row s + 1.
    right = box_w / 2
    for i, layer in enumerate(layers):
        for s in layer.skips:
            span = (i + 2) - (s + 1)
            _arrow(
                ax,
                (right, y_of(s + 1)),
                (right, y_of(i + 2) + 0.08),
                rad=-min(0.9, 0.25 + 0.6 / span),
                colour="#d94801",
                lw=0.9,
                alpha=0.8,
            )
    n_skips = sum(len(layer.skips) for layer in layers)
    ax.set_title(f"macro architecture: {n} layers, {n_skips} skip connections", fontsize=10)
    return to_png(fig)


def _node_depths(nodes: list[MicroNode]) -> list[int]:
    depths = [0, 0]
    for node in nodes:
        depths.append(1 + max(depths[i] for i in node.inputs))
    return depths


CELL_LABELS = ("sep 3x3", "sep 5x5", "avg 3x3", "max 3x3", "identity")
X_STEP, Y_STEP, NODE_W, NODE_H = 2.8, 1.25, 1.3, 0.55


def _bezier_point(p0, control, p2, t):
    return tuple(
        (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t**2 * b for a, c, b in zip(p0, control, p2, strict=True)
    )


def _draw_cell(ax, name: str, nodes: list[MicroNode]) -> None:
    """Columns by depth (longest path from the inputs); each edge carries its op, labelled close to the
    node it feeds, where only two edges arrive, so labels do not pile up at busy sources."""
    depths = _node_depths(nodes)
    out_depth = max(depths) + 1
    columns: dict[int, list[int]] = {}
    for i, d in enumerate(depths):
        columns.setdefault(d, []).append(i)
    pos: dict[object, tuple[float, float]] = {}
    for d, ids in columns.items():
        for k, i in enumerate(ids):
            pos[i] = (d * X_STEP, ((len(ids) - 1) / 2 - k) * Y_STEP)
    pos["out"] = (out_depth * X_STEP, 0.0)
    max_rows = max(len(ids) for ids in columns.values())
    ax.set_aspect("equal")  # arc3 bends in display space; equal scales keep label positions on the curve
    ax.set_xlim(-NODE_W, out_depth * X_STEP + NODE_W)
    half = max(max_rows / 2 * Y_STEP, 1.5)
    ax.set_ylim(-half - 0.3, half + 0.3)
    ax.set_axis_off()
    names = {0: "c[k-2]", 1: "c[k-1]"}
    for i, (x, y) in pos.items():
        if i == "out":
            continue
        colour = KIND_COLOURS["io"] if i < 2 else "#ffffff"
        _box(ax, x, y, NODE_W, NODE_H, names.get(i, f"node {i - 2}"), colour, fontsize=8)
    _box(ax, *pos["out"], NODE_W, NODE_H, "concat", KIND_COLOURS["io"], fontsize=8, weight="bold")

    def edge(src, dst, text, rad, colour):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        start, end = (x0 + NODE_W / 2, y0), (x1 - NODE_W / 2, y1)
        _arrow(ax, start, end, rad=rad, colour=colour, lw=1.0)
        if text:
            dx, dy = end[0] - start[0], end[1] - start[1]
            control = ((start[0] + end[0]) / 2 + rad * dy, (start[1] + end[1]) / 2 - rad * dx)
            lx, ly = _bezier_point(start, control, end, 0.68)
            ax.text(
                lx,
                ly,
                text,
                fontsize=7,
                ha="center",
                va="center",
                bbox={
                    "boxstyle": "round,pad=0.15",
                    "fc": KIND_COLOURS[_kind(text)],
                    "ec": "none",
                    "alpha": 0.92,
                },
            )

    for j, node in enumerate(nodes):
        same_source = node.inputs[0] == node.inputs[1]
        for k in (0, 1):
            op = node.ops[k]
            text = CELL_LABELS[op] if 0 <= op < len(CELL_LABELS) else f"op {op}"
            rad = (0.3 if k == 0 else -0.3) if same_source else 0.0
            edge(node.inputs[k], j + 2, text, rad, "#333333")
    for i in cell_outputs(nodes):
        edge(i, "out", "", 0.0, "#999999")
    ax.set_title(f"{name} cell", fontsize=10)


def draw_micro(info: ArchInfo) -> bytes:
    """The normal cell above the reduction cell; a node's two edges carry the ops applied before their sum."""
    fig = new_figure(10.0, 3.2 * len(info.cells))
    axes = fig.subplots(len(info.cells), 1, squeeze=False)[:, 0]
    for ax, (name, nodes) in zip(axes, info.cells.items(), strict=True):
        _draw_cell(ax, name, nodes)
    return to_png(fig)
