"""NASNet / DARTS cell networks: the standalone network and the weight-sharing supernet.

Macro structure follows DARTS's CIFAR network (Liu et al., ICLR 2019): a 3x3 stem with 3C channels,
then stages of normal cells with a reduction cell (stride 2, channels doubled) between stages, each
cell reading the outputs of the two previous cells. A cell output is the concat of its intermediate
nodes: all of them ("all", DARTS) or those no other node consumes ("loose", NASNet / LaNet).

The supernet holds one module per (cell, node, input, op) and runs only the chosen ones. With
"loose" concat the width of a cell's output depends on the arch; the next cell's 1x1 projection
then uses the weight columns of the chosen nodes (a gather of a small 1x1 weight, not of features).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ops.cell_ops import FactorizedReduce, ReLUConvBN, make_op
from ops.drop_path import drop_path

Edge = tuple[int, str]  # one edge of a cell: (input state, op name); the NASNet space's CellArch is made of them


@dataclass(frozen=True)
class CellSlot:
    """Where one cell sits in the network."""

    reduction: bool
    arch_index: int  # index into the arch's normal (or reduce) cells; 0 when one pair is shared
    channels: int  # C of the cell's ops
    reduction_prev: bool
    size: int  # spatial size of the cell's inputs s1 (s0 is twice that after a reduction)


def cell_layout(channels: int, blocks: tuple[int, ...], per_stage: bool, resolution: int) -> list[CellSlot]:
    """The cell sequence: blocks[s] normal cells per stage, one reduction cell between stages."""
    slots, c, size, red_prev = [], channels, resolution, False
    for stage, n in enumerate(blocks):
        if stage > 0:
            c *= 2
            slots.append(CellSlot(True, stage - 1 if per_stage else 0, c, red_prev, size))
            size //= 2
            red_prev = True
        for _ in range(n):
            slots.append(CellSlot(False, stage if per_stage else 0, c, red_prev, size))
            red_prev = False
    return slots


def concat_nodes(edges: tuple[Edge, ...], nodes: int, mode: str) -> tuple[int, ...]:
    """State indices concatenated into the cell output (2.. are intermediate nodes)."""
    if mode == "all":
        return tuple(range(2, nodes + 2))
    used = {inp for inp, _ in edges}
    return tuple(j for j in range(2, nodes + 2) if j not in used)


def _preprocess(c_in: int, c_out: int, reduction_prev: bool) -> nn.Module:
    return FactorizedReduce(c_in, c_out) if reduction_prev else ReLUConvBN(c_in, c_out, 1, 1, 0)


class Cell(nn.Module):
    """A standalone cell: two inputs, `len(edges) // 2` nodes, one op per node input."""

    def __init__(self, edges: tuple[Edge, ...], concat: tuple[int, ...], c_pp: int, c_p: int, slot: CellSlot) -> None:
        super().__init__()
        c = slot.channels
        self.inputs = tuple(inp for inp, _ in edges)
        # An input that no edge reads gets no projection (the supernet skips it too).
        self.preprocess0 = _preprocess(c_pp, c, slot.reduction_prev) if 0 in self.inputs else None
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0) if 1 in self.inputs else None
        self.ops = nn.ModuleList(make_op(op, c, 2 if slot.reduction and inp < 2 else 1) for inp, op in edges)
        self.concat = concat
        self.out_channels = len(concat) * c

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [
            None if self.preprocess0 is None else self.preprocess0(s0),
            None if self.preprocess1 is None else self.preprocess1(s1),
        ]
        for k in range(0, len(self.ops), 2):
            h = [self.ops[k + j](states[self.inputs[k + j]]) for j in (0, 1)]
            if drop_prob > 0.0 and self.training:
                h = [
                    x if isinstance(op, nn.Identity) else drop_path(x, drop_prob, True)
                    for x, op in zip(h, (self.ops[k], self.ops[k + 1]))
                ]
            states.append(h[0] + h[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Sequential):
    """DARTS's CIFAR auxiliary classifier (for 8x8 inputs; adaptive pooling keeps other sizes working)."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        super().__init__(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(768, num_classes),
        )


def make_stem(channels: int, multiplier: int = 3) -> nn.Sequential:
    c = channels * multiplier
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


def preprocess_unit(c_in: int, c_out: int, reduction_prev: bool) -> nn.Module:
    """The projection of one cell input, as `Cell` builds it (a latency unit of the NASNet space)."""
    return _preprocess(c_in, c_out, reduction_prev)


class CellJoin(nn.Module):
    """What a cell computes besides its ops and projections: one sum per node and the concatenation.

    A latency unit of the NASNet space: `nodes` additions of two (C, H, W) states, then the
    concatenation of `concat` of them, as `Cell.forward` does after its ops.
    """

    def __init__(self, nodes: int, concat: int) -> None:
        super().__init__()
        self.nodes, self.concat = nodes, concat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x + x for _ in range(self.nodes)]
        return torch.cat(states[: self.concat], dim=1)


def head_unit(c_in: int, num_classes: int, head_bn: bool) -> nn.Sequential:
    """The network's head as one module (BN + ReLU when `head_bn`, global pool, classifier)."""
    bn = [nn.BatchNorm2d(c_in), nn.ReLU()] if head_bn else []
    return nn.Sequential(*bn, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c_in, num_classes))


class NasNetwork(nn.Module):
    """Standalone cell network for one architecture (`cells` maps a CellSlot to its edges)."""

    def __init__(
        self,
        slots: list[CellSlot],
        cell_edges: list[tuple[Edge, ...]],
        concat_mode: str,
        channels: int,
        num_classes: int,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
        head_bn: bool = True,
    ) -> None:
        super().__init__()
        self.drop_path_prob = drop_path_prob  # the trainer ramps this up over epochs
        self.stem = make_stem(channels)
        c_pp = c_p = 3 * channels
        self.cells = nn.ModuleList()
        self.aux_pos = max(i for i, s in enumerate(slots) if s.reduction) if auxiliary else -1
        self.auxiliary_head = None
        for i, (slot, edges) in enumerate(zip(slots, cell_edges)):
            nodes = len(edges) // 2
            cell = Cell(edges, concat_nodes(edges, nodes, concat_mode), c_pp, c_p, slot)
            self.cells.append(cell)
            c_pp, c_p = c_p, cell.out_channels
            if i == self.aux_pos:
                self.auxiliary_head = AuxiliaryHead(c_p, num_classes)
        self.head_bn = nn.BatchNorm2d(c_p) if head_bn else None
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_pos and self.training:
                aux = self.auxiliary_head(s1)
        if self.head_bn is not None:
            s1 = F.relu(self.head_bn(s1))
        logits = self.classifier(torch.flatten(self.global_pool(s1), 1))
        return (logits, aux) if aux is not None else logits


def _project(mod: nn.Module, x: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
    """Run a 1x1 projection (ReLUConvBN or FactorizedReduce) on the weight columns `cols` only."""
    if cols is None:
        return mod(x)
    x = F.relu(x)
    if isinstance(mod, FactorizedReduce):
        y = torch.cat(
            [
                F.conv2d(x, mod.conv_1.weight[:, cols], stride=2),
                F.conv2d(x[:, :, 1:, 1:], mod.conv_2.weight[:, cols], stride=2),
            ],
            dim=1,
        )
        return mod.bn(y)
    return mod[2](F.conv2d(x, mod[1].weight[:, cols]))


class SuperCell(nn.Module):
    """All candidate ops of one cell: `edges[node][input][op]`; a forward runs only the chosen ones."""

    def __init__(self, nodes: int, ops: tuple[str, ...], c_pp: int, c_p: int, slot: CellSlot) -> None:
        super().__init__()
        c = slot.channels
        self.preprocess0 = _preprocess(c_pp, c, slot.reduction_prev)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.edges = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleList(make_op(op, c, 2 if slot.reduction and inp < 2 else 1) for op in ops)
                for inp in range(node + 2)
            )
            for node in range(nodes)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, plan: tuple, drop_prob: float = 0.0) -> torch.Tensor:
        choice, concat, cols0, cols1, reads = plan
        states = [
            _project(self.preprocess0, s0, cols0) if 0 in reads else None,
            _project(self.preprocess1, s1, cols1) if 1 in reads else None,
        ]
        for node in range(len(self.edges)):
            out = None
            for inp, op_idx in choice[2 * node : 2 * node + 2]:
                op = self.edges[node][inp][op_idx]
                h = op(states[inp])
                if drop_prob > 0.0 and self.training and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob, True)
                out = h if out is None else out + h
            states.append(out)
        return torch.cat([states[i] for i in concat], dim=1)


class NasSupernet(nn.Module):
    """Weight-sharing DARTS-style network; `net(x, arch)` or `net.set_active(arch); net(x)`.

    `planner(arch)` (given by the space) returns per cell: ((input, op index) per edge, concat).
    """

    def __init__(
        self,
        slots: list[CellSlot],
        nodes: int,
        ops: tuple[str, ...],
        concat_mode: str,
        channels: int,
        num_classes: int,
        planner: object,
        head_bn: bool = True,
    ) -> None:
        super().__init__()
        self.slots, self.nodes, self.concat_mode, self.planner = slots, nodes, concat_mode, planner
        self.drop_path_prob = 0.0
        self.stem = make_stem(channels)
        c_pp = c_p = 3 * channels
        self.cells = nn.ModuleList()
        for slot in slots:
            self.cells.append(SuperCell(nodes, ops, c_pp, c_p, slot))
            # The widest output: every intermediate node concatenated.
            c_pp, c_p = c_p, nodes * slot.channels
        self.head_bn = nn.BatchNorm2d(c_p) if head_bn else None
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self._active = None
        self._plans: dict = {}

    def set_active(self, arch: object) -> None:
        self._active = arch

    def plan(self, arch: object) -> list[tuple]:
        """Per cell (choices, concat, cols0, cols1); cols are weight columns of the inputs or None."""
        key = (arch, self.classifier.weight.device)
        if key not in self._plans:
            if len(self._plans) > 4096:  # bounded cache: archs are sampled anew each step
                self._plans.clear()
            self._plans[key] = self._make_plan(arch)
        return self._plans[key]

    def _make_plan(self, arch: object) -> list[tuple]:
        dev = self.classifier.weight.device
        cells = self.planner(arch)
        plans, prev_cols, cols_pp = [], None, None
        for slot, (choice, concat) in zip(self.slots, cells):
            plans.append((choice, concat, cols_pp, prev_cols, {inp for inp, _ in choice}))
            cols_pp = prev_cols
            if self.concat_mode == "all":
                prev_cols = None
            else:
                c = slot.channels
                prev_cols = torch.cat([torch.arange((j - 2) * c, (j - 1) * c) for j in concat]).to(dev)
        plans.append(prev_cols)  # columns of the classifier
        return plans

    def forward(self, x: torch.Tensor, arch: object = None) -> torch.Tensor:
        plans = self.plan(self._active if arch is None else arch)
        s0 = s1 = self.stem(x)
        for cell, plan in zip(self.cells, plans):
            s0, s1 = s1, cell(s0, s1, plan, self.drop_path_prob)
        cols = plans[-1]
        if self.head_bn is not None:
            s1 = F.relu(sliced_batch_norm(self.head_bn, s1, cols))
        pooled = torch.flatten(self.global_pool(s1), 1)
        if cols is None:
            return self.classifier(pooled)
        return F.linear(pooled, self.classifier.weight[:, cols], self.classifier.bias)


@torch.no_grad()
def copy_into(net: NasNetwork, sup: NasSupernet, arch: object) -> NasNetwork:
    """Load the supernet weights of `arch` into the standalone `net` (built for the same arch)."""
    plans = sup.plan(arch)
    net.stem.load_state_dict(sup.stem.state_dict())
    for cell, scell, (choice, _, cols0, cols1, _) in zip(net.cells, sup.cells, plans):
        for dst, src, cols in (
            (cell.preprocess0, scell.preprocess0, cols0),
            (cell.preprocess1, scell.preprocess1, cols1),
        ):
            if dst is None:
                continue
            state = src.state_dict()
            if cols is not None:
                state = {k: (v[:, cols.to(v.device)] if v.dim() == 4 else v) for k, v in state.items()}
            dst.load_state_dict(state)
        for k, (inp, op_idx) in enumerate(choice):
            cell.ops[k].load_state_dict(scell.edges[k // 2][inp][op_idx].state_dict())
    w, cols = sup.classifier.weight, plans[-1]
    net.classifier.weight.copy_(w if cols is None else w[:, cols])
    net.classifier.bias.copy_(sup.classifier.bias)
    if net.head_bn is not None:
        for name, value in sup.head_bn.state_dict().items():
            src = value if cols is None or value.dim() == 0 else value[cols]
            getattr(net.head_bn, name).copy_(src)
    return net


def sliced_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
    """`bn` on the channels `cols` of its full width (all of them when None), running stats kept in place."""
    if cols is None:
        return bn(x)
    mean, var = bn.running_mean[cols], bn.running_var[cols]  # copies: written back below
    momentum = bn.momentum if bn.momentum is not None else 0.1
    out = F.batch_norm(x, mean, var, bn.weight[cols], bn.bias[cols], bn.training, momentum, bn.eps)
    if bn.training:
        with torch.no_grad():
            bn.running_mean[cols] = mean
            bn.running_var[cols] = var
            bn.num_batches_tracked += 1
    return out
