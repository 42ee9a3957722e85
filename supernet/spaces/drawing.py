"""Drawing helpers for `Space.draw`: cell DAGs and block strips, as PNGs for the report.

Each space decides what its architecture looks like (`NasnetSpace.draw`, `NB201Space.draw`, the
block strip of `Space.draw`); this module holds only how to draw it, and knows no space. matplotlib
is imported when a picture is made, so importing a space never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

_OP_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray", "tab:olive"]


def figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib figure (Agg backend) and its axes: one, or a row of `ncols`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=figsize) if ncols > 1 else plt.subplots(figsize=figsize)


def save(fig: Any, path: str | Path) -> None:
    """Write `fig` as a PNG at `path` and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def op_color(op: str) -> str:
    """A colour per op name, stable across runs and figures."""
    return _OP_COLORS[sum(map(ord, op)) % len(_OP_COLORS)]


def arrow(ax: Any, a: tuple[float, float], b: tuple[float, float], label: str, color: str) -> None:
    """An edge from `a` to `b` labelled with its op."""
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


def node(ax: Any, xy: tuple[float, float], text: str, color: str) -> None:
    """A state of a cell: a rounded box with its name."""
    ax.text(
        *xy, text, ha="center", va="center", fontsize=9, bbox={"boxstyle": "round,pad=0.35", "fc": color, "ec": "black"}
    )


def nasnet_cell(ax: Any, edges: Sequence[tuple[int, str]], title: str) -> None:
    """A NASNet/DARTS cell: inputs c_{k-2}, c_{k-1}, then node i summing edges 2i and 2i + 1."""
    nodes = len(edges) // 2
    pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for i in range(nodes):
        pos[i + 2] = (1.0 + i, 1.2 * ((i % 2) * 2 - 1) * 0.6)
    out = (nodes + 1.2, 0.0)
    node(ax, pos[0], "c_{k-2}", "lightgreen")
    node(ax, pos[1], "c_{k-1}", "lightgreen")
    for i in range(nodes):
        node(ax, pos[i + 2], str(i), "lightblue")
        for inp, op in edges[2 * i : 2 * i + 2]:
            arrow(ax, pos[inp], pos[i + 2], op, op_color(op))
    node(ax, out, "c_{k}", "khaki")
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


def nb201_cell(ax: Any, ops: Sequence[str], edges: Sequence[tuple[int, int]]) -> None:
    """A NAS-Bench-201 cell: 4 nodes, op k on edge `edges[k]` = (to, from); 'none' edges are left out."""
    pos = {0: (0.0, 0.0), 1: (1.0, 1.0), 2: (2.0, -1.0), 3: (3.0, 0.0)}
    for n, xy in pos.items():
        node(ax, xy, str(n), "lightgreen" if n in (0, 3) else "lightblue")
    for (to, frm), op in zip(edges, ops):
        if op != "none":
            arrow(ax, pos[frm], pos[to], op, op_color(op))
    ax.set_xlim(-0.5, 3.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_title("NAS-Bench-201 cell (edges labelled by op; 'none' edges omitted)")
    ax.axis("off")


def blocks(ax: Any, data: dict[str, Any], title: str) -> None:
    """One box per block, labelled with the fields of an arch's JSON form (`data`) that vary per block.

    Per-block lists are read as they are; lists of per-stage lists are flattened into blocks.
    """
    from matplotlib.patches import FancyBboxPatch

    per_block = {k: v for k, v in data.items() if isinstance(v, list) and v and not isinstance(v[0], (list, dict))}
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], list):
            per_block[key] = [x for stage in value for x in stage]
    n = max((len(v) for v in per_block.values()), default=0)
    for i in range(n):
        label = "\n".join(f"{k[:6]} {v[i]}" for k, v in per_block.items() if i < len(v))
        ax.add_patch(FancyBboxPatch((i * 1.1, 0), 1.0, 1.0, boxstyle="round,pad=0.03", fc="lightblue", ec="black"))
        ax.text(i * 1.1 + 0.5, 0.5, label, ha="center", va="center", fontsize=6)
    ax.set_xlim(-0.2, max(n, 1) * 1.1 + 0.1)
    ax.set_ylim(-0.2, 1.2)
    ax.set_title(title[:150], fontsize=8)
    ax.axis("off")
