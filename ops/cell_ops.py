"""Candidate operations of the NASNet / DARTS cell space (Liu et al., "DARTS", ICLR 2019).

Each op maps C channels to C channels; at stride 2 it halves the spatial size. The same modules are
used by the weight-sharing supernet and by the standalone network, so that `extract` only copies
state dicts. BatchNorm is affine in both (DARTS's search uses affine=False, but then the supernet's
weights could not be carried into a retrainable network unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.errors import UserError

__all__ = ["OPS", "OP_SETS", "FactorizedReduce", "ReLUConvBN", "SepConv", "DilConv", "Zero", "make_op", "resolve_ops"]


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN, the DARTS pre-processing and 1x1 projection block."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = 0) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions (the first one strided), as in NASNet/DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1),
            DilConv(c_in, c_out, kernel, 1, padding, 1),
        )


class FactorizedReduce(nn.Module):
    """Stride-2 1x1 projection from two pixel-shifted grids (keeps information of odd pixels)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise UserError(f"FactorizedReduce needs an even channel count, got {c_out}: use an even `channels`")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The `none` op: zeros of the output shape (only meaningful in DARTS-style relaxations)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


OpFactory = Callable[[int, int], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda c, s: Zero(s),
    "avg_pool_3x3": lambda c, s: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda c, s: nn.MaxPool2d(3, stride=s, padding=1),
    "skip_connect": lambda c, s: nn.Identity() if s == 1 else FactorizedReduce(c, c),
    "sep_conv_3x3": lambda c, s: SepConv(c, c, 3, s, 1),
    "sep_conv_5x5": lambda c, s: SepConv(c, c, 5, s, 2),
    "sep_conv_7x7": lambda c, s: SepConv(c, c, 7, s, 3),
    "dil_conv_3x3": lambda c, s: DilConv(c, c, 3, s, 2, 2),
    "dil_conv_5x5": lambda c, s: DilConv(c, c, 5, s, 4, 2),
}

# Named op lists. "lanas" is the 4-op space of one-shot LaNAS / LaNet.
OP_SETS: dict[str, tuple[str, ...]] = {
    "darts": (
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    ),
    "lanas": ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5"),
}


def resolve_ops(ops: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """An op list from a set name ("darts", "lanas"), a comma-separated string or a list of op names."""
    if ops is None:
        return OP_SETS["darts"]
    if isinstance(ops, str):
        ops = OP_SETS[ops] if ops in OP_SETS else tuple(o.strip() for o in ops.split(",") if o.strip())
    ops = tuple(ops)
    unknown = [o for o in ops if o not in OPS]
    if unknown or not ops or len(set(ops)) != len(ops):
        raise UserError(
            f"bad cell op list {list(ops)}: give distinct names from {sorted(OPS)} or a set in {sorted(OP_SETS)}"
        )
    return ops


def make_op(name: str, channels: int, stride: int) -> nn.Module:
    """A fresh candidate op `name` on `channels` channels."""
    return OPS[name](channels, stride)
