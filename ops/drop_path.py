"""Drop path (stochastic depth per op output, Larsson et al. "FractalNet"; DARTS's retraining trick)."""

from __future__ import annotations

import torch


def drop_path(x: torch.Tensor, prob: float, training: bool) -> torch.Tensor:
    """Zero whole samples of `x` with probability `prob` and rescale the rest by 1 / (1 - prob)."""
    if prob <= 0.0 or not training:
        return x
    keep = 1.0 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)
