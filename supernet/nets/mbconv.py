"""EfficientNet-style MBConv networks: the standalone network and the elastic (OFA-style) supernet.

Layout (EfficientNet-B0, Tan & Le 2019): stem 3x3 conv, one fixed depthwise-separable block
(expand 1, kernel 3), searchable stages of MBConv blocks, a 1x1 head conv, global pooling and a
linear classifier. The supernet (Once-for-All, Cai et al. 2020) keeps the largest block of every
position and runs the first `depth` blocks of each stage with the chosen kernel, expand ratio and
width; the input is expected at the architecture's resolution (the data pipeline resizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ops.mbconv import DynamicMBConv, MBConv


@dataclass(frozen=True)
class Layout:
    """Fixed parts of the macro network, derived from the space's options."""

    stem_ch: int
    stem_stride: int
    first_ch: int  # output of the fixed expand-1 block
    stage_ch: tuple[int, ...]  # base output channels of the searchable stages (width 1.0)
    strides: tuple[int, ...]
    head_ch: int
    se_ratio: float


def stem_layers(layout: Layout) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, layout.stem_ch, 3, layout.stem_stride, 1, bias=False),
        nn.BatchNorm2d(layout.stem_ch),
        nn.SiLU(inplace=True),
        MBConv(layout.stem_ch, layout.first_ch, 3, 1, 1, layout.se_ratio),
    )


class MBConvNet(nn.Module):
    """A standalone network: `blocks` is a list of (in, out, kernel, stride, expand) per block."""

    def __init__(
        self,
        layout: Layout,
        blocks: list[tuple[int, int, int, int, int]],
        num_classes: int,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = stem_layers(layout)
        self.blocks = nn.Sequential(*(MBConv(i, o, k, s, e, layout.se_ratio) for i, o, k, s, e in blocks))
        c_last = blocks[-1][1] if blocks else layout.first_ch
        self.conv_head = nn.Conv2d(c_last, layout.head_ch, 1, bias=False)
        self.bn_head = nn.BatchNorm2d(layout.head_ch)
        self.act = nn.SiLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(layout.head_ch, num_classes)
        self.drop_path_prob = drop_path

    @property
    def drop_path_prob(self) -> float:
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        # Stochastic depth grows linearly with block index, as in EfficientNet.
        self._drop_path_prob = value
        n = max(1, len(self.blocks))
        for i, block in enumerate(self.blocks):
            block.drop_path_prob = value * i / n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn_head(self.conv_head(self.blocks(self.stem(x)))))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


class MBConvSupernet(nn.Module):
    """Largest network of the space; `net(x, arch)` runs the sub-network that `planner(arch)` lists.

    `planner(arch)` returns ((stage, block index, kernel, expand, out channels), ...) for active blocks.
    """

    def __init__(
        self,
        layout: Layout,
        max_ch: tuple[int, ...],
        max_depth: int,
        kernels: tuple[int, ...],
        max_expand: int,
        num_classes: int,
        planner: object,
        kernel_transform: bool = False,
    ) -> None:
        super().__init__()
        self.planner = planner
        self.stem = stem_layers(layout)
        self.stages = nn.ModuleList()
        c_in = layout.first_ch
        for c_out, stride in zip(max_ch, layout.strides):
            self.stages.append(
                nn.ModuleList(
                    DynamicMBConv(c_in if d == 0 else c_out, c_out, kernels, max_expand, stride if d == 0 else 1,
                                  layout.se_ratio, kernel_transform)
                    for d in range(max_depth)
                )
            )  # fmt: skip
            c_in = c_out
        self.conv_head = nn.Conv2d(c_in, layout.head_ch, 1, bias=False)
        self.bn_head = nn.BatchNorm2d(layout.head_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(layout.head_ch, num_classes)
        self._active = None
        self._plans: dict = {}

    def set_active(self, arch: object) -> None:
        self._active = arch

    def plan(self, arch: object) -> tuple:
        if arch not in self._plans:
            if len(self._plans) > 4096:  # bounded: archs are sampled anew each step
                self._plans.clear()
            self._plans[arch] = tuple(self.planner(arch))
        return self._plans[arch]

    def forward(self, x: torch.Tensor, arch: object = None) -> torch.Tensor:
        arch = self._active if arch is None else arch
        size = int(getattr(arch, "resolution", 0) or 0)
        # a subnet sees its own resolution, whatever the batch: the worker path crops at it (MultiRes),
        # the in-memory path (small data at one stored size) is resized here
        if size and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
        x = self.stem(x)
        for stage, d, k, e, c in self.plan(arch):
            x = self.stages[stage][d](x, k, e, c)
        x = F.conv2d(x, self.conv_head.weight[:, : x.shape[1]])
        x = F.silu(self.bn_head(x), True)
        return self.classifier(torch.flatten(self.pool(x), 1))


@torch.no_grad()
def copy_into(net: MBConvNet, sup: MBConvSupernet, arch: object) -> MBConvNet:
    """Load the supernet's weights of `arch` into `net`, built for the same arch."""
    net.stem.load_state_dict(sup.stem.state_dict())
    for block, (stage, d, k, e, c) in zip(net.blocks, sup.plan(arch)):
        sup.stages[stage][d].export_into(block, block.conv_dw.in_channels // e, k, e, c)
    net.conv_head.weight.copy_(sup.conv_head.weight[:, : net.conv_head.in_channels])
    net.bn_head.load_state_dict(sup.bn_head.state_dict())
    net.classifier.load_state_dict(sup.classifier.state_dict())
    return net
