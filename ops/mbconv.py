"""MBConv blocks (inverted residuals with squeeze-excitation and swish), static and sliced.

Follows EfficientNet (Tan & Le, 2019) / MobileNetV3 for the block and Once-for-All (Cai et al.,
ICLR 2020) for the elastic version: `DynamicMBConv` holds the weights of the largest block and runs a
smaller one by slicing channels (`w[:out, :in]`), centre-cropping the depthwise kernel
(`w[..., s:e, s:e]`, optionally followed by OFA's small learned kernel transform) and slicing the
BatchNorm affine parameters and running statistics. `export_into` copies the active slice into a
static `MBConv`, which then computes exactly what the dynamic block computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ops.drop_path import drop_path


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never going more than 10% below (as timm does)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def se_channels(in_channels: int, ratio: float) -> int:
    """EfficientNet sizes the SE bottleneck from the block's input channels, not the expanded ones."""
    return max(1, int(in_channels * ratio))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(s))))


class MBConv(nn.Module):
    """expand 1x1 (skipped when expand == 1) -> depthwise kxk -> SE -> project 1x1, residual if shapes match."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_skip = stride == 1 and in_ch == out_ch
        self.drop_path_prob = 0.0  # stochastic depth, set by the network for retraining
        if expand != 1:
            self.conv_pw = nn.Conv2d(in_ch, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.act1 = nn.SiLU(inplace=True)
        self.conv_dw = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.SiLU(inplace=True)
        self.se = SqueezeExcite(mid, se_channels(in_ch, se_ratio)) if se_ratio > 0 else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x))) if hasattr(self, "conv_pw") else x
        y = self.act2(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(self.se(y)))
        if self.has_skip:
            y = drop_path(y, self.drop_path_prob, self.training) + x
        return y


def _bn(bn: nn.BatchNorm2d, x: torch.Tensor, c: int) -> torch.Tensor:
    """BatchNorm on the first `c` channels; the running-stat slices are views, updated in place."""
    use_batch = bn.training or not bn.track_running_stats
    return F.batch_norm(
        x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c], use_batch, bn.momentum, bn.eps
    )


class DynamicMBConv(nn.Module):
    """The largest MBConv of one block position; `forward(x, kernel, expand, out_ch)` runs a sub-block.

    Channel counts of the active sub-block: input = x.shape[1], mid = input * expand, output = out_ch.
    """

    def __init__(
        self,
        max_in: int,
        max_out: int,
        kernels: tuple[int, ...],
        max_expand: int,
        stride: int,
        se_ratio: float = 0.25,
        kernel_transform: bool = False,
    ) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels, reverse=True))
        self.stride, self.se_ratio = stride, se_ratio
        k, mid = self.kernels[0], max_in * max_expand
        self.conv_pw = nn.Conv2d(max_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid, se_channels(max_in, se_ratio)) if se_ratio > 0 else None
        self.conv_pwl = nn.Conv2d(mid, max_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(max_out)
        # OFA's kernel transform: a (k'^2 x k'^2) matrix per step down, identity at start.
        self.transforms = nn.ParameterDict()
        if kernel_transform:
            for small in self.kernels[1:]:
                self.transforms[f"to{small}"] = nn.Parameter(torch.eye(small * small))

    def kernel(self, mid: int, k: int) -> torch.Tensor:
        """Depthwise weight of the first `mid` channels, cropped (and transformed) to k x k."""
        w = self.conv_dw.weight[:mid]
        if not self.transforms:
            s = (w.shape[-1] - k) // 2
            return w[..., s : s + k, s : s + k]  # a view: no copy of the large kernel
        for small in self.kernels[1:]:
            if small < k:
                break
            s = (w.shape[-1] - small) // 2
            w = w[..., s : s + small, s : s + small].reshape(mid, small * small) @ self.transforms[f"to{small}"]
            w = w.view(mid, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, kernel: int, expand: int, out_ch: int) -> torch.Tensor:
        in_ch = x.shape[1]
        mid = in_ch * expand
        # SiLU in place on the BatchNorm outputs, as the static block does: BatchNorm's backward needs
        # its input, not its output, and at ImageNet size a fresh activation tensor per call costs time.
        y = x if expand == 1 else F.silu(_bn(self.bn1, F.conv2d(x, self.conv_pw.weight[:mid, :in_ch]), mid), True)
        y = F.conv2d(y, self.kernel(mid, kernel), None, self.stride, kernel // 2, 1, mid)
        y = F.silu(_bn(self.bn2, y, mid), True)
        if self.se is not None:
            rd = se_channels(in_ch, self.se_ratio)
            r, e = self.se.conv_reduce, self.se.conv_expand
            s = F.silu(F.conv2d(y.mean((2, 3), keepdim=True), r.weight[:rd, :mid], r.bias[:rd]))
            y = y * torch.sigmoid(F.conv2d(s, e.weight[:mid, :rd], e.bias[:mid]))
        y = _bn(self.bn3, F.conv2d(y, self.conv_pwl.weight[:out_ch, :mid]), out_ch)
        return y + x if self.stride == 1 and in_ch == out_ch else y

    @torch.no_grad()
    def export_into(self, block: MBConv, in_ch: int, kernel: int, expand: int, out_ch: int) -> MBConv:
        """Copy the active slice into a static block built with the same (in, out, kernel, expand)."""
        mid = in_ch * expand
        if expand != 1:
            block.conv_pw.weight.copy_(self.conv_pw.weight[:mid, :in_ch])
        block.conv_dw.weight.copy_(self.kernel(mid, kernel))
        block.conv_pwl.weight.copy_(self.conv_pwl.weight[:out_ch, :mid])
        for name, c in (("bn1", mid), ("bn2", mid), ("bn3", out_ch))[expand == 1 :]:
            src, dst = getattr(self, name), getattr(block, name)
            for t in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, t).copy_(getattr(src, t)[:c])
            dst.num_batches_tracked.copy_(src.num_batches_tracked)
        if self.se is not None:
            rd = se_channels(in_ch, self.se_ratio)
            block.se.conv_reduce.weight.copy_(self.se.conv_reduce.weight[:rd, :mid])
            block.se.conv_reduce.bias.copy_(self.se.conv_reduce.bias[:rd])
            block.se.conv_expand.weight.copy_(self.se.conv_expand.weight[:mid, :rd])
            block.se.conv_expand.bias.copy_(self.se.conv_expand.bias[:mid])
        return block
