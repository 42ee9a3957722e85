"""Pictures of architectures for the report: cell DAGs (NASNet, NAS-Bench-201) and MBConv stages."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from supernet.spaces.base import Space


def draw_arch(space: Space, arch: Hashable, path: str) -> None:
    """Draw `arch` into a PNG: a DAG per cell for cell spaces, a block strip for MBConv/ResNet spaces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if hasattr(arch, "normal") and hasattr(arch, "reduce"):
        cells = [("normal cell", arch.normal), ("reduction cell", arch.reduce)]
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        for ax, (title, edges) in zip(axes, cells):
            _draw_nasnet_cell(ax, list(edges), title)
    elif isinstance(arch, tuple) and len(arch) == 6 and all(isinstance(o, str) for o in arch):
        fig, ax = plt.subplots(figsize=(7, 4))
        _draw_nb201_cell(ax, arch)
    else:
        fig, ax = plt.subplots(figsize=(12, 2.8))
        _draw_blocks(ax, space, arch)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arrow(ax: Any, a: tuple[float, float], b: tuple[float, float], label: str, color: str) -> None:
    ax.annotate(
        "",
        xy=b,
        xytext=a,
        arrowprops={
            "arrowstyle": "->",
            "color": color,
            "lw": 1.4,
            "shrinkA": 14,
            "shrinkB": 14,
            "connectionstyle": "arc3,rad=0.12",
        },
    )
    mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    ax.text(
        mx,
        my,
        label,
        fontsize=7,
        ha="center",
        va="center",
        color=color,
        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
    )


def _node(ax: Any, xy: tuple[float, float], text: str, color: str) -> None:
    ax.text(
        *xy, text, ha="center", va="center", fontsize=9, bbox={"boxstyle": "round,pad=0.35", "fc": color, "ec": "black"}
    )


_OP_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray", "tab:olive"]


def _op_color(op: str) -> str:
    return _OP_COLORS[sum(map(ord, op)) % len(_OP_COLORS)]


def _draw_nasnet_cell(ax: Any, edges: list[tuple[int, str]], title: str) -> None:
    nodes = len(edges) // 2
    pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for i in range(nodes):
        pos[i + 2] = (1.0 + i, 1.2 * ((i % 2) * 2 - 1) * 0.6)
    out = (nodes + 1.2, 0.0)
    _node(ax, pos[0], "c_{k-2}", "lightgreen")
    _node(ax, pos[1], "c_{k-1}", "lightgreen")
    used = set()
    for i in range(nodes):
        _node(ax, pos[i + 2], str(i), "lightblue")
        for inp, op in edges[2 * i : 2 * i + 2]:
            used.add(inp)
            _arrow(ax, pos[inp], pos[i + 2], op, _op_color(op))
    _node(ax, out, "c_{k}", "khaki")
    for i in range(nodes):
        ax.annotate(
            "",
            xy=out,
            xytext=pos[i + 2],
            arrowprops={"arrowstyle": "->", "color": "lightgray", "shrinkA": 12, "shrinkB": 14},
        )
    ax.set_xlim(-0.6, nodes + 1.8)
    ax.set_ylim(-1.6, 1.6)
    ax.set_title(title)
    ax.axis("off")


def _draw_nb201_cell(ax: Any, ops: tuple[str, ...]) -> None:
    edges = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    pos = {0: (0.0, 0.0), 1: (1.0, 1.0), 2: (2.0, -1.0), 3: (3.0, 0.0)}
    for n, xy in pos.items():
        _node(ax, xy, str(n), "lightgreen" if n in (0, 3) else "lightblue")
    for (to, frm), op in zip(edges, ops):
        if op != "none":
            _arrow(ax, pos[frm], pos[to], op, _op_color(op))
    ax.set_xlim(-0.5, 3.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_title("NAS-Bench-201 cell (edges labelled by op; 'none' edges omitted)")
    ax.axis("off")


def _draw_blocks(ax: Any, space: Space, arch: Hashable) -> None:
    """One box per block, labelled with the fields of the arch's JSON that vary per block."""
    data = space.to_json(arch)
    per_block = {k: v for k, v in data.items() if isinstance(v, list) and v and not isinstance(v[0], (list, dict))}
    flat: dict[str, list] = {}
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], list):  # per stage lists
            flat[key] = [x for stage in value for x in stage]
    per_block.update(flat)
    n = max((len(v) for v in per_block.values()), default=0)
    for i in range(n):
        label = "\n".join(f"{k[:6]} {v[i]}" for k, v in per_block.items() if i < len(v))
        ax.add_patch(
            __import__("matplotlib.patches", fromlist=["FancyBboxPatch"]).FancyBboxPatch(
                (i * 1.1, 0), 1.0, 1.0, boxstyle="round,pad=0.03", fc="lightblue", ec="black"
            )
        )
        ax.text(i * 1.1 + 0.5, 0.5, label, ha="center", va="center", fontsize=6)
    ax.set_xlim(-0.2, max(n, 1) * 1.1 + 0.1)
    ax.set_ylim(-0.2, 1.2)
    ax.set_title(space.to_str(arch)[:150], fontsize=8)
    ax.axis("off")
