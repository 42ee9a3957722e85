"""CIFAR ResNet-20 with searchable channel counts: the standalone network and the slicing supernet.

The network is He et al.'s CIFAR ResNet ("Deep Residual Learning for Image Recognition", 2016,
section 4.2): a 3x3 conv stem, three stages of `blocks` basic blocks (base widths 16/32/64, stride 2
at the first block of stages 2 and 3), global average pooling and a linear classifier. Because
channel counts change freely between stages, the downsampling shortcuts are 1x1 conv + BN
projections (the paper's option B) rather than zero padding.

The supernet holds the widest weights; a subnet uses the leading slice of every weight along the
output and input channels and the matching slice of each BN's parameters and running statistics,
as in slimmable networks and Once-for-All. The slices are views, so training a subnet updates the
supernet's shared weights (and BN running statistics) in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def block_plan(stages: Sequence[int], inner: Sequence[int], blocks: int) -> list[tuple[int, int, int, int]]:
    """(in, inner, out, stride) for every block, from the stage widths and the inner widths."""
    plan = []
    c_in = stages[0]  # the stem's output, tied to stage 1 by the identity shortcuts
    for s, c_out in enumerate(stages):
        for b in range(blocks):
            stride = 2 if s > 0 and b == 0 else 1
            plan.append((c_in, inner[s * blocks + b], c_out, stride))
            c_in = c_out
    return plan


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU; the shortcut projects when shapes change."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.conv2 = nn.Conv2d(c_mid, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """A standalone CIFAR ResNet with the given stage and inner widths."""

    def __init__(self, stages: Sequence[int], inner: Sequence[int], blocks: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, stages[0], 3, 1, 1, bias=False), nn.BatchNorm2d(stages[0]), nn.ReLU(inplace=True)
        )
        self.blocks = nn.Sequential(*(BasicBlock(*p) for p in block_plan(stages, inner, blocks)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(stages[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class SlicedConv2d(nn.Conv2d):
    """A conv at its widest; `forward(x, c_out)` uses the leading `c_out` x `x.shape[1]` filters."""

    def forward(self, x: torch.Tensor, c_out: int) -> torch.Tensor:  # type: ignore[override]
        weight = self.weight[:c_out, : x.shape[1]]
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """BN over the leading `x.shape[1]` channels; running statistics are updated through views."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.track_running_stats else None,
            self.running_var[:c] if self.track_running_stats else None,
            self.weight[:c],
            self.bias[:c],
            use_batch,
            momentum,
            self.eps,
        )


class SuperBlock(nn.Module):
    """A basic block at its widest widths; `forward(x, c_mid, c_out)` runs the slices."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = SlicedConv2d(c_in, c_mid, 3, stride, 1, bias=False)
        self.bn1 = SlicedBatchNorm2d(c_mid)
        self.conv2 = SlicedConv2d(c_mid, c_out, 3, 1, 1, bias=False)
        self.bn2 = SlicedBatchNorm2d(c_out)
        # Projection exactly where the standalone network has one: the stride-2 blocks. Elsewhere the
        # space ties a block's input and output widths, so the shortcut is the identity.
        self.proj = stride != 1
        if self.proj:
            self.sc_conv = SlicedConv2d(c_in, c_out, 1, stride, 0, bias=False)
            self.sc_bn = SlicedBatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, c_mid: int, c_out: int) -> torch.Tensor:
        # In-place ReLUs where the standalone block has them, so both hold the same activations.
        out = F.relu(self.bn1(self.conv1(x, c_mid)), inplace=True)
        out = self.bn2(self.conv2(out, c_out))
        short = self.sc_bn(self.sc_conv(x, c_out)) if self.proj else x
        return F.relu(out + short, inplace=True)


class ResNet20Supernet(nn.Module):
    """Channel supernet: `net(x, arch)` slices every layer to the widths of `arch`."""

    def __init__(self, stages: Sequence[int], inner: Sequence[int], blocks: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.n_blocks = blocks
        self.stem_conv = SlicedConv2d(3, stages[0], 3, 1, 1, bias=False)
        self.stem_bn = SlicedBatchNorm2d(stages[0])
        self.blocks = nn.ModuleList(SuperBlock(*p) for p in block_plan(stages, inner, blocks))
        self.classifier = nn.Linear(stages[-1], num_classes)
        self.active: object | None = None

    def set_active(self, arch: object) -> None:
        """The arch that `net(x)` runs (for DDP wrappers and hooks that cannot pass one)."""
        self.active = arch

    def forward(self, x: torch.Tensor, arch: object | None = None) -> torch.Tensor:
        arch = self.active if arch is None else arch
        if arch is None:
            raise RuntimeError("ResNet20Supernet: pass an arch or call set_active(arch) first")
        stages, inner = arch.stages, arch.inner  # type: ignore[attr-defined]
        x = F.relu(self.stem_bn(self.stem_conv(x, stages[0])), inplace=True)
        for i, block in enumerate(self.blocks):
            x = block(x, inner[i], stages[i // self.n_blocks])
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.linear(x, self.classifier.weight[:, : x.shape[1]], self.classifier.bias)


@torch.no_grad()
def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d) -> None:
    dst.weight.copy_(src.weight[: dst.out_channels, : dst.in_channels])


@torch.no_grad()
def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    c = dst.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def extract_weights(supernet: ResNet20Supernet, net: ResNet20) -> ResNet20:
    """Copy the supernet's leading slices into `net`, built with the same depth."""
    _copy_conv(net.stem[0], supernet.stem_conv)
    _copy_bn(net.stem[1], supernet.stem_bn)
    for block, sup in zip(net.blocks, supernet.blocks, strict=True):
        _copy_conv(block.conv1, sup.conv1)
        _copy_bn(block.bn1, sup.bn1)
        _copy_conv(block.conv2, sup.conv2)
        _copy_bn(block.bn2, sup.bn2)
        if sup.proj:
            _copy_conv(block.shortcut[0], sup.sc_conv)
            _copy_bn(block.shortcut[1], sup.sc_bn)
    with torch.no_grad():
        net.classifier.weight.copy_(supernet.classifier.weight[:, : net.classifier.in_features])
        net.classifier.bias.copy_(supernet.classifier.bias)
    return net
