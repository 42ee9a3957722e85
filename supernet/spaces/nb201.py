"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 4 nodes, 6 edges, 5 ops, 15,625 cells.

An architecture is a tuple of six op names for the edges (1<-0), (2<-0), (2<-1), (3<-0), (3<-1),
(3<-2). Its string form is NAS-Bench-201's own, `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`, so a cell is
looked up in the benchmark table by string. The linear view for LaNAS is a one-hot vector per edge.

`canonical` maps every cell to one representative of its NATS-Bench `iso_key` class (6,466 classes).
The key is a string built bottom-up: node 0 is `0`; an edge term is `#` for `none` or a `#` input,
the input's own string for `skip_connect`, and `(input)@op` otherwise; a node is its terms sorted
and joined with `+`. Sorting captures that a node's sum commutes; terms that never reach node 3
vanish. It is conservative: `(#)@nor_conv_3x3` stays apart from `#`, which is right, because a BN
with affine parameters turns a zero input into a constant.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from core.config import number
from core.errors import ArchError, UserError
from core.safejson import brief
from supernet.nets.nb201 import EDGES, OPS, NB201Net, NB201Supernet, extract_weights, make_op, stage_channels
from supernet.spaces import drawing
from supernet.spaces.base import Cost, Space, check_choice, register_space

NB201Arch = tuple[str, ...]  # one op name per edge of EDGES
_OP_INDEX = {op: i for i, op in enumerate(OPS)}


def iso_key(arch: NB201Arch) -> str:
    """NATS-Bench's canonical string of a cell: equal keys mean the same network."""
    nodes = ["0"]
    for j in (1, 2, 3):
        terms = []
        for (to, frm), op in zip(EDGES, arch):
            if to != j:
                continue
            src = nodes[frm]
            if op == "none" or src == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(src)
            else:
                terms.append(f"({src})@{op}")
        nodes.append("+".join(sorted(terms)))
    return nodes[3]


@functools.cache
def _representatives() -> dict[str, NB201Arch]:
    # All 15,625 keys take ~50 ms once; the representative is the first cell in op-index order.
    reps: dict[str, NB201Arch] = {}
    for arch in itertools.product(OPS, repeat=len(EDGES)):
        reps.setdefault(iso_key(arch), arch)
    return reps


@register_space("nb201")
class NB201Space(Space):
    """NAS-Bench-201 topology space with its macro network (`channels` C, `cells` N per stage)."""

    name = "nb201"

    def __init__(self, channels: int = 16, cells: int = 5, resolution: int = 32) -> None:
        channels = number(channels, "nb201 options: channels", int, 1, 4096)
        cells = number(cells, "nb201 options: cells", int, 1, 64)
        resolution = number(resolution, "nb201 options: resolution", int, 4, 4096)
        if resolution % 4:
            raise UserError("nb201 options: channels and cells must be >= 1, resolution a multiple of 4")
        self.channels, self.cells, self.resolution = channels, cells, resolution
        self._tables: dict[int, tuple[float, float, np.ndarray]] = {}

    # ---- architectures -------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> NB201Arch:
        return tuple(OPS[i] for i in rng.integers(len(OPS), size=len(EDGES)))

    def validate(self, arch: NB201Arch) -> None:
        if not isinstance(arch, tuple) or len(arch) != len(EDGES):
            raise ArchError(f"nb201 arch must be a tuple of {len(EDGES)} op names, got {brief(arch)}")
        for (to, frm), op in zip(EDGES, arch):
            check_choice(op, OPS, f"nb201 edge {to}<-{frm}")

    def encode(self, arch: NB201Arch) -> np.ndarray:
        self.validate(arch)
        vec = np.zeros(self.encoding_dim, dtype=np.float32)
        for e, op in enumerate(arch):
            vec[e * len(OPS) + _OP_INDEX[op]] = 1.0
        return vec

    def decode(self, vec: np.ndarray) -> NB201Arch:
        vec = np.asarray(vec, dtype=np.float64)
        if vec.shape != (self.encoding_dim,):
            raise ArchError(f"nb201 encoding must have shape ({self.encoding_dim},), got {vec.shape}")
        return tuple(OPS[int(i)] for i in vec.reshape(len(EDGES), len(OPS)).argmax(axis=1))

    @property
    def encoding_dim(self) -> int:
        return len(EDGES) * len(OPS)

    def mutate(self, arch: NB201Arch, rng: np.random.Generator) -> NB201Arch:
        self.validate(arch)
        e = int(rng.integers(len(EDGES)))
        others = [op for op in OPS if op != arch[e]]
        return arch[:e] + (others[int(rng.integers(len(others)))],) + arch[e + 1 :]

    def fair_archs(self, rng: np.random.Generator) -> list[NB201Arch]:
        """len(OPS) archs in which every op of every edge appears exactly once (FairNAS's strict fairness)."""
        perms = [rng.permutation(len(OPS)) for _ in EDGES]
        return [tuple(OPS[int(p[k])] for p in perms) for k in range(len(OPS))]

    def to_json(self, arch: NB201Arch) -> dict[str, Any]:
        self.validate(arch)
        return {"space": self.name, "ops": list(arch), "str": self.to_str(arch)}

    def from_json(self, data: dict[str, Any]) -> NB201Arch:
        if not isinstance(data, dict) or data.get("space") != self.name or "ops" not in data:
            raise ArchError(f"nb201 JSON must be a dict with space='nb201' and an 'ops' list, got {brief(data)}")
        if not isinstance(data["ops"], list):
            raise ArchError(f"nb201 JSON 'ops' must be a list of {len(EDGES)} op names")
        arch = tuple(data["ops"])
        self.validate(arch)
        return arch

    def to_str(self, arch: NB201Arch) -> str:
        self.validate(arch)
        groups = []
        for j in (1, 2, 3):
            groups.append("|" + "|".join(f"{op}~{frm}" for (to, frm), op in zip(EDGES, arch) if to == j) + "|")
        return "+".join(groups)

    def from_str(self, text: str) -> NB201Arch:
        if not isinstance(text, str):
            raise ArchError(f"nb201 string must be a str, got {type(text).__name__}")
        groups = text.strip().split("+")
        if len(groups) != 3:
            raise ArchError(f"nb201 string {text!r}: expected 3 node groups joined by '+'")
        ops: list[str] = []
        for j, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
                raise ArchError(f"nb201 string {text!r}: node {j} group {group!r} must look like |op~0|...|")
            items = group[1:-1].split("|")
            if len(items) != j:
                raise ArchError(f"nb201 string {text!r}: node {j} needs {j} inputs, got {len(items)}")
            for frm, item in enumerate(items):
                op, sep, src = item.partition("~")
                if not sep or src != str(frm):
                    raise ArchError(f"nb201 string {text!r}: node {j} input {frm} must be 'op~{frm}', got {item!r}")
                check_choice(op, OPS, f"nb201 edge {j}<-{frm}")
                ops.append(op)
        return tuple(ops)

    def canonical(self, arch: NB201Arch) -> NB201Arch:
        self.validate(arch)
        return _representatives()[iso_key(arch)]

    def size(self) -> int:
        return len(OPS) ** len(EDGES)

    def largest(self) -> NB201Arch:
        return ("nor_conv_3x3",) * len(EDGES)

    def smallest(self) -> NB201Arch:
        return ("none",) * len(EDGES)

    def decisions(self) -> dict[str, tuple[list[Any], Any]]:
        """`edge0`..`edge5`: the op of each edge (in EDGES order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
        return {f"edge{e}": (list(OPS), lambda a, e=e: a[e]) for e in range(len(EDGES))}

    def options(self) -> dict[str, Any]:
        return {"channels": self.channels, "cells": self.cells, "resolution": self.resolution}

    @property
    def input_size(self) -> int:
        return self.resolution

    def draw(self, arch: NB201Arch, path: str | Path) -> None:
        """The cell as a DAG of its four nodes, edges labelled by op ('none' edges left out)."""
        fig, ax = drawing.figure((7, 4))
        drawing.nb201_cell(ax, arch, EDGES)
        drawing.save(fig, path)

    # ---- models ---------------------------------------------------------------------------
    def supernet(self, num_classes: int) -> nn.Module:
        return NB201Supernet(self.channels, self.cells, num_classes)

    def build(self, arch: NB201Arch, num_classes: int) -> nn.Module:
        self.validate(arch)
        return NB201Net(arch, self.channels, self.cells, num_classes)

    def extract(self, supernet: nn.Module, arch: NB201Arch) -> nn.Module:
        if not isinstance(supernet, NB201Supernet):
            raise ArchError(f"nb201 extract needs an NB201Supernet, got {type(supernet).__name__}")
        num_classes = supernet.classifier.out_features
        if len(supernet.cells) != len(stage_channels(self.channels, self.cells)) or supernet.stem[0].out_channels != (
            self.channels
        ):
            raise ArchError("nb201 extract: the supernet was built with other channels/cells options")
        net = self.build(arch, num_classes).to(supernet.stem[0].weight.device)
        return extract_weights(supernet, net)

    def cost(self, arch: NB201Arch, num_classes: int = 10) -> Cost:
        base_macs, base_params, per_op = self._cost_table(num_classes)
        try:  # a dict lookup per edge is the fast path; validate only to explain a failure
            idx = [_OP_INDEX[op] for op in arch]
        except (KeyError, TypeError):
            idx = []
        if len(idx) != len(EDGES):
            self.validate(arch)
        extra = per_op[idx].sum(axis=0)
        return Cost(mflops=float(base_macs + extra[0]) / 1e6, params=float(base_params + extra[1]) / 1e6)

    # ---- latency units ---------------------------------------------------------------------
    def _cell_shapes(self) -> list[tuple[int, int]]:
        """(channels, spatial size) of every cell; reduction blocks and the rest are fixed overhead."""
        out, h = [], self.resolution
        for ch, is_red in stage_channels(self.channels, self.cells):
            if is_red:
                h //= 2
            else:
                out.append((ch, h))
        return out

    def latency_units(self, arch: NB201Arch, num_classes: int = 10) -> list[tuple]:
        """One unit per edge of every cell that runs an op (`none` adds nothing)."""
        ops = [op for op in arch if op != "none"]
        return [("nb", op, ch, h) for ch, h in self._cell_shapes() for op in ops]

    def latency_unit_choices(self, num_classes: int = 10) -> list[tuple]:
        shapes = dict.fromkeys(self._cell_shapes())
        return [("nb", op, ch, h) for ch, h in shapes for op in OPS if op != "none"]

    def latency_unit_module(self, key: tuple) -> tuple[nn.Module, tuple[int, ...]]:
        if key[0] != "nb" or key[1] not in OPS[1:]:
            raise UserError(f"nb201: unknown latency unit {key!r}")
        _, op, ch, h = key
        return make_op(op, ch), (ch, h, h)

    def _cost_table(self, num_classes: int) -> tuple[float, float, np.ndarray]:
        """Fixed MACs and params, and per-op (MACs, params) summed over every cell that repeats it.

        Counted as `supernet.flops.count_thop` does: conv and linear MACs only, all parameters.
        """
        if num_classes in self._tables:
            return self._tables[num_classes]
        c, hw = self.channels, self.resolution**2
        macs, params = 3 * c * 9 * hw, 3 * c * 9 + 2 * c  # stem conv + BN
        per_op = np.zeros((len(OPS), 2))
        c_prev = c
        for ch, is_red in stage_channels(c, self.cells):
            if is_red:
                hw //= 4
                macs += (c_prev * ch * 9 + ch * ch * 9 + c_prev * ch) * hw
                params += c_prev * ch * 9 + ch * ch * 9 + c_prev * ch + 4 * ch
            else:  # one cell: each of the six edges costs what its op costs at this width
                for k, op in ((1, "nor_conv_1x1"), (3, "nor_conv_3x3")):
                    per_op[_OP_INDEX[op]] += (ch * ch * k * k * hw, ch * ch * k * k + 2 * ch)
            c_prev = ch
        macs += c_prev * num_classes
        params += 2 * c_prev + c_prev * num_classes + num_classes  # last BN + classifier
        self._tables[num_classes] = (float(macs), float(params), per_op)
        return self._tables[num_classes]
