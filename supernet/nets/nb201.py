"""NAS-Bench-201 networks: the standalone network of one cell and the weight-sharing supernet.

Follows the macro skeleton of Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible
Neural Architecture Search" (ICLR 2020): a 3x3 conv + BN stem, three stages of N cells with C, 2C
and 4C channels, a residual reduction block (ResNet basic block with stride 2, shortcut avg-pool +
1x1 conv) between stages, then BN + ReLU, global average pooling and a linear classifier. Inside a
cell, node j is the sum over i < j of op_(j<-i)(node i); `nor_conv_kxk` is ReLU-Conv-BN with an
affine BN, as in the benchmark's trained networks, so the parameter counts equal its published ones.

The supernet holds one module per (cell, edge, op) and runs only the chosen op of each edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in NAS-Bench-201's order


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BN, the `nor_conv` op and the halves of the reduction block."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),  # not in place: a node feeds several edges
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The `none` op. Cells skip it; it exists so a standalone cell keeps one module per edge."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """One candidate op at stride 1 with `channels` in and out."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise AssertionError(f"unknown op {name}")  # the space validates names before we get here


def run_cell(x: torch.Tensor, arch: Sequence[str], ops: Sequence[nn.Module | None]) -> torch.Tensor:
    """Evaluate one cell; `ops[e]` is the module of edge e (None for `none`, which adds nothing).

    Shared by the supernet and the standalone network so both sum in the same order and give
    bit-identical outputs.
    """
    nodes = [x]
    for j in (1, 2, 3):
        total = None
        for e, (to, frm) in enumerate(EDGES):
            if to != j or arch[e] == "none":
                continue
            out = ops[e](nodes[frm])
            total = out if total is None else total + out
        nodes.append(x.mul(0.0) if total is None else total)  # a node with only `none` inputs is zero
    return nodes[3]


class ResBlock(nn.Module):
    """NAS-Bench-201's reduction block: a stride-2 ResNet basic block, shortcut avg-pool + 1x1 conv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Cell(nn.Module):
    """A standalone cell: one module per edge."""

    def __init__(self, arch: Sequence[str], channels: int) -> None:
        super().__init__()
        self.arch = tuple(arch)
        self.edges = nn.ModuleList(make_op(op, channels) for op in self.arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_cell(x, self.arch, list(self.edges))


class SuperCell(nn.Module):
    """A supernet cell: every op with weights, or without, on every edge (`none` has no module)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: make_op(op, channels) for op in OPS if op != "none"}) for _ in EDGES
        )

    def forward(self, x: torch.Tensor, arch: Sequence[str]) -> torch.Tensor:
        ops = [None if op == "none" else self.edges[e][op] for e, op in enumerate(arch)]
        return run_cell(x, arch, ops)


def stage_channels(channels: int, cells: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction) for each layer after the stem, as NAS-Bench-201 stacks them."""
    out: list[tuple[int, bool]] = []
    for s in range(3):
        if s > 0:
            out.append((channels * 2**s, True))
        out.extend([(channels * 2**s, False)] * cells)
    return out


class _Macro(nn.Module):
    """Stem, cells with reductions, head; subclasses choose the cell type."""

    def __init__(self, channels: int, cells: int, num_classes: int, cell_fn: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c_prev = channels
        for c, is_red in stage_channels(channels, cells):
            layers.append(ResBlock(c_prev, c) if is_red else cell_fn(c))
            c_prev = c
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.lastact(x)), 1))


class NB201Net(_Macro):
    """The standalone NAS-Bench-201 network for one cell (the same cell in every stage)."""

    def __init__(self, arch: Sequence[str], channels: int = 16, cells: int = 5, num_classes: int = 10) -> None:
        super().__init__(channels, cells, num_classes, lambda c: Cell(arch, c))
        self.arch = tuple(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x)
        return self.head(x)


class NB201Supernet(_Macro):
    """Weight-sharing supernet: `net(x, arch)` runs only the chosen op of each edge."""

    def __init__(self, channels: int = 16, cells: int = 5, num_classes: int = 10) -> None:
        super().__init__(channels, cells, num_classes, SuperCell)
        self.active: tuple[str, ...] | None = None

    def set_active(self, arch: Sequence[str]) -> None:
        """The arch that `net(x)` runs (for DDP wrappers and hooks that cannot pass one)."""
        self.active = tuple(arch)

    def forward(self, x: torch.Tensor, arch: Sequence[str] | None = None) -> torch.Tensor:
        arch = self.active if arch is None else arch
        if arch is None:
            raise RuntimeError("NB201Supernet: pass an arch or call set_active(arch) first")
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x, arch) if isinstance(layer, SuperCell) else layer(x)
        return self.head(x)


@torch.no_grad()
def extract_weights(supernet: NB201Supernet, net: NB201Net) -> NB201Net:
    """Copy the supernet's weights for `net.arch` into `net` (built with the same macro options)."""
    for name in ("stem", "lastact", "classifier"):
        getattr(net, name).load_state_dict(getattr(supernet, name).state_dict())
    for sup_layer, layer in zip(supernet.cells, net.cells, strict=True):
        if isinstance(layer, ResBlock):
            layer.load_state_dict(sup_layer.state_dict())
            continue
        for e, op in enumerate(net.arch):
            if op != "none":
                layer.edges[e].load_state_dict(sup_layer.edges[e][op].state_dict())
    return net
