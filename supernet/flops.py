"""Parameter and FLOPs counting with thop, the reference that every space's fast `cost` must match.

Convention (the usual one in NAS papers, and the one NAS-Bench-201 and EfficientNet publish):
"MFLOPs" are millions of multiply-accumulates of the convolution and linear layers for one image.
BatchNorm is counted as zero (it folds into the preceding convolution at inference), and so are
pooling, activations and additions (thop counts pooling and BN by default; we override those rules so
that the numbers agree with the published ones: NAS-Bench-201's all-`nor_conv_3x3` network gives
220.12 MFLOPs here and 220.11969 in its table). Params are all the model's parameters, classifier
included, whether or not a forward pass touches them (thop only counts the modules that ran).
"""

from __future__ import annotations

import copy
import logging

import thop
import torch
from torch import nn

from supernet.spaces.base import Cost

log = logging.getLogger(__name__)


def _zero_ops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    # thop keeps a float64 counter buffer on each hooked module; leaving it unchanged counts zero.
    module.total_ops += 0


# Modules that are free by the convention above. Rules for conv/linear stay thop's own.
_FREE = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.SyncBatchNorm,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveMaxPool2d,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
)


def count_thop(model: nn.Module, input_size: int | tuple[int, int], device: str | torch.device = "cpu") -> Cost:
    """MFLOPs (MACs) and params of `model` for one 3-channel image of `input_size` pixels.

    The model is deep-copied, so the hooks and counter buffers thop adds never reach the caller's
    module, and it is run in eval mode under `no_grad`.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    probe = copy.deepcopy(model).to(device).eval()
    x = torch.zeros(1, 3, h, w, device=device)
    macs, _ = thop.profile(probe, inputs=(x,), custom_ops={t: _zero_ops for t in _FREE}, verbose=False)
    params = sum(p.numel() for p in model.parameters())
    return Cost(mflops=float(macs) / 1e6, params=params / 1e6)
