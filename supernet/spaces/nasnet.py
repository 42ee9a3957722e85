"""NASNet / DARTS cell search space (Zoph et al. 2018; Liu et al., "DARTS", 2019; LaNet, Wang et al.).

A cell has two inputs (states 0 and 1: the outputs of the two previous cells) and `nodes`
intermediate nodes (states 2, 3, ...); node i sums two edges, each an (input state, op) pair with
input < i + 2. An architecture is a normal cell and a reduction cell (or, with `per_stage`, one
normal cell per stage and one reduction cell per stage transition), stored as flat tuples of edges:
cell k of `normal` is `normal[k * 2 * nodes:(k + 1) * 2 * nodes]`, node i's edges at 2i and 2i + 1.

Encoding (LaNAS's linear view): per edge, a one-hot of the input state followed by a one-hot of
the op. Ops and inputs are categorical, so integers (as the public LaNAS code uses) would impose an
order that a linear partition would read as meaningful; one-hots let each choice get its own weight.

canonical(): sorts the two edges of each node (the sum is commutative, and the supernet shares
weights per (node, input, op), so both orders are the same network). Isomorphic relabellings of
nodes are not merged: doing so safely needs a graph canonicaliser, and the duplicates are rare.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from core.config import number
from core.errors import ArchError, UserError
from core.safejson import brief, first_line
from ops.cell_ops import make_op, resolve_ops
from supernet.nets.nasnet import (
    CellJoin,
    CellSlot,
    Edge,
    NasNetwork,
    NasSupernet,
    cell_layout,
    concat_nodes,
    copy_into,
    head_unit,
    make_stem,
    preprocess_unit,
)
from supernet.spaces import drawing
from supernet.spaces.base import Cost, Space, check_choice, register_space
from supernet.spaces.cell_text import genotype_edges, genotype_fields

log = logging.getLogger(__name__)

# Op order of the public one-shot LaNAS / LaNet code, used only to read LaNet integer lists.
LANET_OPS = ("sep_conv_3x3", "max_pool_3x3", "skip_connect", "sep_conv_5x5")
LANET = (2, 2, 0, 2, 1, 2, 0, 2, 2, 3, 2, 1, 2, 0, 0, 1, 1, 1, 2, 1, 1, 0, 3, 4, 3, 0, 3, 1)


@dataclass(frozen=True)
class CellArch:
    """Normal and reduction cells as flat tuples of (input state, op name) edges, 2 per node."""

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]


@register_space("nasnet")
class NasnetSpace(Space):
    """DARTS-style cell space with configurable ops, nodes and macro layout."""

    name = "nasnet"
    # The panel (and so which epoch's checkpoint is "best") stays random cells unless the sandwich rule
    # trains the extremes: its all-pooling and all-sep_conv_5x5 cells are far from what uniform and fair
    # sampling train, and runs made before the extremes were declared select the same checkpoints.
    panel_extremes = False

    def __init__(
        self,
        nodes: int = 5,
        ops: str | list[str] | None = None,
        channels: int = 16,
        blocks: list[int] | tuple[int, ...] | str = (2, 2, 2),
        per_stage: bool = False,
        concat: str = "all",
        auxiliary: bool = False,
        drop_path: float = 0.0,
        resolution: int = 32,
        head_bn: bool = True,
    ) -> None:
        if isinstance(blocks, str):
            blocks = [b for b in blocks.split(",") if b.strip()]
        if not isinstance(blocks, (list, tuple)) or len(blocks) > 16:
            raise UserError(f"nasnet space: blocks={brief(blocks, 40)}; give 2 to 16 stage depths, e.g. blocks=[2,2,2]")
        self.blocks = tuple(number(b, "nasnet space option blocks", int, 0, 64) for b in blocks)
        self.nodes = number(nodes, "nasnet space option nodes", int, 1, 16)
        self.channels = number(channels, "nasnet space option channels", int, 2, 4096)
        self.ops = resolve_ops(ops)
        self.per_stage, self.concat, self.auxiliary = bool(per_stage), concat, bool(auxiliary)
        self.drop_path = number(drop_path, "nasnet space option drop_path", float, 0.0, 1.0)
        self.resolution = number(resolution, "nasnet space option resolution", int, 1, 4096)
        # BN + ReLU before the global pool: a cell's output scale varies with the arch (sums of skip and
        # pooling paths), and a shared classifier trained on many archs diverges without it.
        self.head_bn = bool(head_bn)
        if self.nodes < 1 or len(self.blocks) < 2 or min(self.blocks) < 0:
            raise UserError("nasnet space: need nodes >= 1 and blocks with >= 2 stages, e.g. blocks=[2,2,2]")
        if not isinstance(concat, str) or concat not in ("all", "loose"):
            raise UserError(f"nasnet space: concat={concat!r}; use 'all' (DARTS) or 'loose' (NASNet/LaNet)")
        if self.resolution % 2 ** (len(self.blocks) - 1) or self.channels % 2:
            raise UserError("nasnet space: resolution must halve evenly at each reduction and channels be even")
        self.slots = cell_layout(self.channels, self.blocks, self.per_stage, self.resolution)
        self._aux_pos = max(i for i, s in enumerate(self.slots) if s.reduction)
        self.n_normal = len(self.blocks) if self.per_stage else 1
        self.n_reduce = len(self.blocks) - 1 if self.per_stage else 1
        self._op_index = {op: i for i, op in enumerate(self.ops)}
        # Encoding offsets: per edge, (node + 2) input slots then len(ops) op slots.
        self._cell_dim = sum(2 * (i + 2 + len(self.ops)) for i in range(self.nodes))

    def options(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "ops": list(self.ops),
            "channels": self.channels,
            "blocks": list(self.blocks),
            "per_stage": self.per_stage,
            "concat": self.concat,
            "auxiliary": self.auxiliary,
            "drop_path": self.drop_path,
            "resolution": self.resolution,
            "head_bn": self.head_bn,
        }

    @property
    def input_size(self) -> int:
        return self.resolution

    def draw(self, arch: CellArch, path: str | Path) -> None:
        """The normal and the reduction cell side by side, as DAGs with op-labelled edges."""
        fig, axes = drawing.figure((13, 4.5), ncols=2)
        for ax, (title, edges) in zip(axes, (("normal cell", arch.normal), ("reduction cell", arch.reduce))):
            drawing.nasnet_cell(ax, edges, title)
        drawing.save(fig, path)

    # ---- architectures -------------------------------------------------------------------
    def _cells(self, arch: CellArch) -> list[tuple[Edge, ...]]:
        """All cells, normal ones first, each a tuple of 2 * nodes edges."""
        e = 2 * self.nodes
        return [arch.normal[k * e : (k + 1) * e] for k in range(self.n_normal)] + [
            arch.reduce[k * e : (k + 1) * e] for k in range(self.n_reduce)
        ]

    def _join(self, cells: list[tuple[Edge, ...]]) -> CellArch:
        return CellArch(sum(cells[: self.n_normal], ()), sum(cells[self.n_normal :], ()))

    def sample(self, rng: np.random.Generator) -> CellArch:
        cells = []
        for _ in range(self.n_normal + self.n_reduce):
            cells.append(
                tuple(
                    (int(rng.integers(i // 2 + 2)), self.ops[int(rng.integers(len(self.ops)))])
                    for i in range(2 * self.nodes)
                )
            )
        return self._join(cells)

    def fair_archs(self, rng: np.random.Generator) -> list[CellArch]:
        """len(ops) archs in which every op of every edge slot appears exactly once (FairNAS's strict
        fairness); each slot's input is drawn once and shared by the len(ops) archs."""
        slots = (self.n_normal + self.n_reduce) * 2 * self.nodes
        inputs = [int(rng.integers((i % (2 * self.nodes)) // 2 + 2)) for i in range(slots)]
        perms = [rng.permutation(len(self.ops)) for _ in range(slots)]
        archs = []
        for k in range(len(self.ops)):
            edges = [(inputs[i], self.ops[int(perms[i][k])]) for i in range(slots)]
            e = 2 * self.nodes
            archs.append(self._join([tuple(edges[c * e : (c + 1) * e]) for c in range(slots // e)]))
        return archs

    def validate(self, arch: CellArch) -> None:
        if not isinstance(arch, CellArch):
            raise ArchError(f"nasnet: expected a CellArch, got {type(arch).__name__}")
        e = 2 * self.nodes
        for kind, edges, n in (("normal", arch.normal, self.n_normal), ("reduce", arch.reduce, self.n_reduce)):
            if not isinstance(edges, tuple) or len(edges) != n * e:
                raise ArchError(f"nasnet: {kind} has {len(edges)} edges, expected {n * e} ({n} cell(s) x {e})")
            for k, edge in enumerate(edges):
                where = f"{kind} cell {k // e} node {(k % e) // 2} edge {k % 2}"
                if not (isinstance(edge, tuple) and len(edge) == 2 and type(edge[0]) is int):
                    raise ArchError(f"nasnet: {where}: expected (input index, op name), got {brief(edge, 60)}")
                check_choice(edge[0], range((k % e) // 2 + 2), f"nasnet: {where} input")
                check_choice(edge[1], self.ops, f"nasnet: {where} op")

    def canonical(self, arch: CellArch) -> CellArch:
        key = self._op_index.__getitem__
        return self._join(
            [
                sum((tuple(sorted(c[i : i + 2], key=lambda ed: (ed[0], key(ed[1])))) for i in range(0, len(c), 2)), ())
                for c in self._cells(arch)
            ]
        )

    @property
    def encoding_dim(self) -> int:
        return self._cell_dim * (self.n_normal + self.n_reduce)

    def encode(self, arch: CellArch) -> np.ndarray:
        vec, pos = np.zeros(self.encoding_dim, dtype=np.float32), 0
        for cell in self._cells(arch):
            for k, (inp, op) in enumerate(cell):
                vec[pos + inp] = 1.0
                pos += k // 2 + 2
                vec[pos + self._op_index[op]] = 1.0
                pos += len(self.ops)
        return vec

    def decode(self, vec: np.ndarray) -> CellArch:
        vec = np.asarray(vec, dtype=np.float64).reshape(-1)
        if vec.shape[0] != self.encoding_dim:
            raise ArchError(f"nasnet: encoding has length {vec.shape[0]}, expected {self.encoding_dim}")
        cells, pos = [], 0
        for _ in range(self.n_normal + self.n_reduce):
            cell = []
            for k in range(2 * self.nodes):
                n_in = k // 2 + 2
                inp = int(np.argmax(vec[pos : pos + n_in]))
                pos += n_in
                cell.append((inp, self.ops[int(np.argmax(vec[pos : pos + len(self.ops)]))]))
                pos += len(self.ops)
            cells.append(tuple(cell))
        return self._join(cells)

    def mutate(self, arch: CellArch, rng: np.random.Generator) -> CellArch:
        cells = [list(c) for c in self._cells(arch)]
        c, k = int(rng.integers(len(cells))), int(rng.integers(2 * self.nodes))
        inp, op = cells[c][k]
        if len(self.ops) > 1 and rng.random() < 0.5:
            op = self.ops[(self._op_index[op] + 1 + int(rng.integers(len(self.ops) - 1))) % len(self.ops)]
        else:
            n_in = k // 2 + 2
            inp = (inp + 1 + int(rng.integers(n_in - 1))) % n_in
        cells[c][k] = (inp, op)
        return self._join([tuple(x) for x in cells])

    def decisions(self) -> dict[str, tuple[list[Any], Any]]:
        """`normalK` / `reduceK`: the op of edge K (node K // 2) of the first normal / reduction cell."""
        out: dict[str, tuple[list[Any], Any]] = {}
        for kind in ("normal", "reduce"):
            for k in range(2 * self.nodes):
                out[f"{kind}{k}"] = (list(self.ops), lambda a, kind=kind, k=k: getattr(a, kind)[k][1])
        return out

    # ---- the extremes (sandwich sampling): by MFLOPs, as `cost` counts them ------------------------
    def largest(self) -> CellArch:
        """The arch of most MFLOPs (and params): every node reads both cell inputs (so both projections
        run, every node is a loose end and, in a reduction cell, every edge is strided), each edge with
        the op that costs most there (sep_conv_5x5 > sep_conv_3x3 > dil_conv_5x5 > ... > skip, pools)."""
        cells = []
        for reduction in [False] * self.n_normal + [True] * self.n_reduce:
            edges = []
            for k in range(2 * self.nodes):
                inp = k % 2  # the two edges of a node read inputs 0 and 1
                edges.append((inp, max(self.ops, key=lambda op: self._edge_cost(op, reduction, inp, -1))))
            cells.append(tuple(edges))
        return self._join(cells)

    def smallest(self) -> CellArch:
        """The arch of fewest MFLOPs (then params): the cheapest op on every edge, one cell input read
        (the cheaper projection, found by `cost`), and each node reading the previous one, so that with
        concat="loose" only the last node is concatenated (the narrowest output)."""
        best: CellArch | None = None
        n = self.n_normal + self.n_reduce
        for first in range(4 if n > 1 else 2):  # which input node 0 reads, per kind of cell
            cells = []
            for reduction in [False] * self.n_normal + [True] * self.n_reduce:
                inp0 = (first >> (1 if reduction else 0)) & 1
                edges = []
                for k in range(2 * self.nodes):
                    inp = inp0 if k < 2 else k // 2 + 1  # node i (>= 1) reads node i - 1 (state i + 1)
                    edges.append((inp, min(self.ops, key=lambda op: self._edge_cost(op, reduction, inp, 1))))
                cells.append(tuple(edges))
            arch = self._join(cells)
            if best is None or _cost_key(self.cost(arch)) < _cost_key(self.cost(best)):
                best = arch
        assert best is not None
        return best

    def _edge_cost(self, op: str, reduction: bool, inp: int, order: int) -> tuple[int, int, int]:
        """(MACs, params, tie-break) of `op` on an edge from state `inp`, at the first cell of its kind;
        `order` makes ties go to the op listed first (1 for a min, -1 for a max)."""
        slot = next((s for s in self.slots if s.reduction == reduction), self.slots[0])
        macs, params = _op_table(self.ops, slot.channels, slot.size, slot.reduction)[self._op_index[op]][inp < 2]
        return macs, params, order * self._op_index[op]

    def size(self) -> int:
        per_cell = math.prod(((i + 2) * len(self.ops)) ** 2 for i in range(self.nodes))
        return per_cell ** (self.n_normal + self.n_reduce)

    # ---- serialisation ---------------------------------------------------------------------
    def to_json(self, arch: CellArch) -> dict[str, Any]:
        return {"space": self.name, "normal": [list(e) for e in arch.normal], "reduce": [list(e) for e in arch.reduce]}

    def from_json(self, data: dict[str, Any]) -> CellArch:
        if not isinstance(data, dict) or data.get("space", self.name) != self.name:
            raise ArchError(f"nasnet: not a nasnet arch: {brief(data)}")
        try:
            arch = CellArch(*(tuple((int(i), str(o)) for i, o in data[k]) for k in ("normal", "reduce")))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArchError(
                f"nasnet: malformed JSON arch ({first_line(exc, 80)}); expected normal/reduce lists of [input, op]"
            ) from None
        self.validate(arch)
        return arch

    def to_str(self, arch: CellArch) -> str:
        def cell(c: tuple[Edge, ...]) -> str:
            return "|".join(f"{c[i][1]}~{c[i][0]}+{c[i + 1][1]}~{c[i + 1][0]}" for i in range(0, len(c), 2))

        cells = self._cells(arch)
        return (
            "normal="
            + "/".join(map(cell, cells[: self.n_normal]))
            + " reduce="
            + "/".join(map(cell, cells[self.n_normal :]))
        )

    def from_str(self, text: str) -> CellArch:
        try:
            parts = dict(p.split("=", 1) for p in text.split())
            cells = [
                tuple((int(e.split("~")[1]), e.split("~")[0]) for node in c.split("|") for e in node.split("+"))
                for k in ("normal", "reduce")
                for c in parts[k].split("/")
            ]
            arch = self._join(cells) if len(cells) == self.n_normal + self.n_reduce else None
        except (ValueError, KeyError, IndexError):
            arch = None
        if arch is None:
            raise ArchError(f"nasnet: cannot parse {text[:80]!r}; expected 'normal=op~in+op~in|... reduce=...'")
        self.validate(arch)
        return arch

    # ---- imports from DARTS genotypes and LaNet lists ---------------------------------------
    def from_genotype(self, genotype: Any) -> CellArch:
        """A DARTS `Genotype` (namedtuple, its repr string, a dict or [normal, concat, reduce, concat])."""
        g = genotype_fields(genotype)
        cells = []
        for kind in ("normal", "reduce"):
            edges = genotype_edges(g.get(kind), f"nasnet: genotype {kind}")
            if len(edges) != 2 * self.nodes:
                raise ArchError(
                    f"nasnet: genotype {kind} has {len(edges) // 2} nodes; make the space with nodes={len(edges) // 2}"
                )
            concat = g.get(f"{kind}_concat")
            if concat is not None and not isinstance(concat, (list, tuple, range)):
                raise ArchError(f"nasnet: genotype {kind}_concat must be a list of node indices, e.g. range(2, 6)")
            if concat is not None and tuple(concat) != concat_nodes(edges, self.nodes, self.concat):
                other = "loose" if self.concat == "all" else "all"
                raise ArchError(
                    f"nasnet: genotype {kind}_concat={list(concat)} does not follow concat={self.concat!r}; "
                    f"try concat={other!r}"
                )
            cells.append(edges)
        arch = self._join([cells[0]] * self.n_normal + [cells[1]] * self.n_reduce)
        self.validate(arch)
        return arch

    def from_lanet(self, code: list[int] | tuple[int, ...] = LANET, nodes: int = 7) -> CellArch:
        """A LaNet integer list: 2*nodes ops (two per node), then 2*nodes input indices (two per node).

        This layout (ops first, then inputs) and the op order `LANET_OPS` are those of the public
        one-shot LaNAS code; the same cell serves as normal and reduction cell. LaNet concatenates
        the loose ends, so build it in a space with nodes=7, ops="lanas" (or a superset), concat="loose".
        """
        arch = self._join([self._lanet_cell(code, nodes)] * (self.n_normal + self.n_reduce))
        self.validate(arch)
        return arch

    def from_lanet_lists(self, lists: Sequence[Sequence[int]]) -> CellArch:
        """LaNet lists as `read_lanet` returns them: one for every cell (`from_lanet`), or one per stage.

        With one list per stage (a `per_stage` space), stage s runs list s as its normal cell, and the
        reduction cell entering stage s + 1 runs that stage's list too.
        """
        nodes = len(lists[0]) // 4 if lists else 0
        if len(lists) == 1:
            return self.from_lanet(lists[0], nodes)
        if not self.per_stage or len(lists) != len(self.blocks):
            raise ArchError(
                f"--lanet has {len(lists)} per-stage lists but the space has {len(self.blocks)} stages; set blocks"
                + ("" if self.per_stage else " and per_stage=True")
            )
        cells = [self._lanet_cell(code, nodes) for code in lists]
        arch = CellArch(normal=sum(cells, ()), reduce=sum(cells[1:], ()))
        self.validate(arch)
        return arch

    def _lanet_cell(self, code: Sequence[int], nodes: int) -> tuple[Edge, ...]:
        """One cell's edges from a LaNet list (ops first, then inputs); inputs are checked by `validate`."""
        code = [int(c) for c in code]
        if len(code) != 4 * nodes:
            raise ArchError(f"nasnet: a LaNet list for {nodes} nodes has {4 * nodes} integers, got {len(code)}")
        if nodes != self.nodes:
            raise ArchError(f"nasnet: LaNet list has {nodes} nodes but the space has nodes={self.nodes}")
        edges = []
        for i in range(nodes):
            for j in (0, 1):
                op, inp = code[2 * i + j], code[2 * nodes + 2 * i + j]
                check_choice(op, range(len(LANET_OPS)), f"nasnet: LaNet node {i} op {j}")
                edges.append((inp, LANET_OPS[op]))
        if self.concat != "loose":
            log.warning("LaNet concatenates loose ends; this space uses concat=%r, so the network differs", self.concat)
        return tuple(edges)

    # ---- models ---------------------------------------------------------------------------
    def _plan_cells(self, arch: CellArch) -> list[tuple]:
        """Per network cell: ((input, op index) per edge, concat states)."""
        cells = self._cells(arch)
        out = []
        for slot in self.slots:
            edges = cells[self.n_normal + slot.arch_index] if slot.reduction else cells[slot.arch_index]
            out.append((tuple((i, self._op_index[o]) for i, o in edges), concat_nodes(edges, self.nodes, self.concat)))
        return out

    def _slot_edges(self, arch: CellArch) -> list[tuple[Edge, ...]]:
        cells = self._cells(arch)
        return [cells[self.n_normal + s.arch_index] if s.reduction else cells[s.arch_index] for s in self.slots]

    def supernet(self, num_classes: int) -> nn.Module:
        return NasSupernet(
            self.slots, self.nodes, self.ops, self.concat, self.channels, num_classes, self._plan_cells, self.head_bn
        )

    def build(self, arch: CellArch, num_classes: int) -> nn.Module:
        self.validate(arch)
        return NasNetwork(
            self.slots,
            self._slot_edges(arch),
            self.concat,
            self.channels,
            num_classes,
            self.auxiliary,
            self.drop_path,
            self.head_bn,
        )

    def extract(self, supernet: nn.Module, arch: CellArch) -> nn.Module:
        net = self.build(arch, supernet.classifier.out_features)
        net.to(supernet.classifier.weight.device)
        return copy_into(net, supernet, arch)

    def cost(self, arch: CellArch, num_classes: int = 10) -> Cost:
        macs, params = _stem_cost(self.channels, self.resolution)
        c_pp = c_p = 3 * self.channels
        for slot, (choice, concat) in zip(self.slots, self._plan_cells(arch)):
            table = _op_table(self.ops, slot.channels, slot.size, slot.reduction)
            for inp, op in choice:
                m, p = table[op][inp < 2]
                macs += m
                params += p
            reads = {inp for inp, _ in choice}
            for c_in, state in ((c_pp, 0), (c_p, 1)):
                if state in reads:  # build() has no projection for an unread input
                    macs += c_in * slot.channels * slot.size * slot.size
                    params += c_in * slot.channels + 2 * slot.channels
            c_pp, c_p = c_p, len(concat) * slot.channels
        macs += c_p * num_classes
        params += c_p * num_classes + num_classes + (2 * c_p if self.head_bn else 0)
        if self.auxiliary:  # a module of the built network, so counted in its params (not in MACs)
            c_aux = len(self._plan_cells(arch)[self._aux_pos][1]) * self.slots[self._aux_pos].channels
            params += c_aux * 128 + 256 + 128 * 768 * 4 + 2 * 768 + 768 * num_classes + num_classes
        return Cost(macs / 1e6, params / 1e6)

    # ---- latency units ---------------------------------------------------------------------
    # Keys, each naming the shape its module reads (channels C, spatial size H of the input):
    #   ("stem", 3C, H)                   the 3x3 stem convolution and BN
    #   ("pre", C_in, C, H, stride)       the projection of a cell input that an edge reads: a 1x1
    #                                     ReLUConvBN, or (stride 2) FactorizedReduce after a reduction
    #   ("op", op, C, H, stride)          one edge's op; stride 2 on a reduction cell's inputs
    #   ("join", C, H, nodes, concat)     the cell's node sums and the concat of `concat` nodes
    #   ("head", C_in, H, num_classes)    head BN + ReLU (when head_bn), global pool, classifier
    # Cells of the same kind, width and size share their units, whatever their position.
    def latency_units(self, arch: CellArch, num_classes: int = 10) -> list[tuple]:
        """Stem; per cell its read projections, one op per edge and its join; the head."""
        keys: list[tuple] = [("stem", 3 * self.channels, self.resolution)]
        c_pp = c_p = 3 * self.channels
        for slot, edges in zip(self.slots, self._slot_edges(arch)):
            c, inner = slot.channels, slot.size // 2 if slot.reduction else slot.size
            reads = {inp for inp, _ in edges}
            if 0 in reads:
                keys.append(self._pre0_key(c_pp, slot))
            if 1 in reads:
                keys.append(("pre", c_p, c, slot.size, 1))
            for inp, op in edges:
                keys.append(("op", op, c, slot.size, 2) if slot.reduction and inp < 2 else ("op", op, c, inner, 1))
            concat = len(concat_nodes(edges, self.nodes, self.concat))
            keys.append(("join", c, inner, self.nodes, concat))
            c_pp, c_p = c_p, concat * c
        keys.append(("head", c_p, self.slots[-1].size // (2 if self.slots[-1].reduction else 1), num_classes))
        return keys

    def latency_unit_choices(self, num_classes: int = 10) -> list[tuple]:
        keys: list[tuple] = [("stem", 3 * self.channels, self.resolution)]
        # With concat="loose" a cell concatenates 1 to `nodes` loose ends (node i reading node i - 1
        # consumes it), so the next cells' projections see any of those widths.
        widths = range(1, self.nodes + 1) if self.concat == "loose" else (self.nodes,)
        c_pps = c_ps = (3 * self.channels,)
        for slot in self.slots:
            c, inner = slot.channels, slot.size // 2 if slot.reduction else slot.size
            keys.extend(self._pre0_key(c_in, slot) for c_in in c_pps)
            keys.extend(("pre", c_in, c, slot.size, 1) for c_in in c_ps)
            for op in self.ops:
                if slot.reduction:
                    keys.append(("op", op, c, slot.size, 2))
                    if self.nodes > 1:  # only later nodes read intermediate states
                        keys.append(("op", op, c, inner, 1))
                else:
                    keys.append(("op", op, c, inner, 1))
            keys.extend(("join", c, inner, self.nodes, k) for k in widths)
            c_pps, c_ps = c_ps, tuple(k * c for k in widths)
        h = self.slots[-1].size // (2 if self.slots[-1].reduction else 1)
        keys.extend(("head", c_in, h, num_classes) for c_in in c_ps)
        return list(dict.fromkeys(keys))

    def latency_unit_module(self, key: tuple) -> tuple[nn.Module, tuple[int, ...]]:
        kind = key[0] if isinstance(key, tuple) and key else None
        try:
            if kind == "stem":
                _, c, h = key
                return make_stem(c, multiplier=1), (3, h, h)
            if kind == "pre":
                _, c_in, c, h, stride = key
                return preprocess_unit(c_in, c, stride == 2), (c_in, h, h)
            if kind == "op" and key[1] in self.ops:
                _, op, c, h, stride = key
                return make_op(op, c, stride), (c, h, h)
            if kind == "join":
                _, c, h, nodes, concat = key
                return CellJoin(nodes, concat), (c, h, h)
            if kind == "head":
                _, c, h, num_classes = key
                return head_unit(c, num_classes, self.head_bn), (c, h, h)
        except (TypeError, ValueError):  # wrong number of fields
            pass
        raise UserError(f"nasnet: unknown latency unit {key!r}")

    @staticmethod
    def _pre0_key(c_in: int, slot: CellSlot) -> tuple:
        """The projection of input 0: after a reduction, it halves a state twice the cell's size."""
        if slot.reduction_prev:
            return ("pre", c_in, slot.channels, 2 * slot.size, 2)
        return ("pre", c_in, slot.channels, slot.size, 1)


# ---- analytic cost: supernet.flops.count_thop's convention (conv + linear MACs; all params) ------
@cache
def _op_table(ops: tuple[str, ...], c: int, size: int, reduction: bool) -> tuple:
    """Per op: ((macs, params) on a non-strided input, (macs, params) on a cell input)."""
    # In a reduction cell, edges from intermediate nodes already run at the halved size.
    inner = size // 2 if reduction else size
    return tuple((_op_cost(op, c, inner, 1), _op_cost(op, c, size, 2 if reduction else 1)) for op in ops)


def _op_cost(op: str, c: int, size: int, stride: int) -> tuple[int, int]:
    h = size // stride
    if op.startswith("sep_conv_"):
        k = int(op[-1])
        return 2 * (c * h * h * k * k + c * c * h * h), 2 * (c * k * k + c * c) + 4 * c
    if op.startswith("dil_conv_"):
        k = int(op[-1])
        return c * h * h * k * k + c * c * h * h, c * k * k + c * c + 2 * c
    if op == "skip_connect" and stride == 2:
        return c * c * h * h, c * c + 2 * c
    return 0, 0  # max pool, identity, none


def _cost_key(cost: Cost) -> tuple[float, float]:
    return cost.mflops, cost.params


def _stem_cost(channels: int, resolution: int) -> tuple[int, int]:
    c = 3 * channels
    return c * 27 * resolution * resolution, 27 * c + 2 * c
