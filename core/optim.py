"""Optimizer and schedule shared by supernet training and retraining (timm's implementations)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def make_optimizer(model: nn.Module | list, cfg: Any, total_steps: int, steps_per_epoch: int) -> tuple[Any, Any]:
    """SGD (momentum or nesterov) or AdamW, and a step-based cosine schedule with linear warm-up.

    `cfg` supplies optimizer, lr, min_lr, momentum, weight_decay and warmup_epochs. BatchNorm
    parameters and biases get no weight decay.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    name = {"sgd": "momentum", "nesterov": "sgd", "adamw": "adamw"}[cfg.optimizer]  # timm's "sgd" is nesterov
    kw = {"momentum": cfg.momentum} if name != "adamw" else {}
    optimizer: torch.optim.Optimizer = create_optimizer_v2(
        model, opt=name, lr=cfg.lr, weight_decay=cfg.weight_decay, filter_bias_and_bn=True, **kw
    )
    schedule = CosineLRScheduler(
        optimizer,
        t_initial=total_steps,
        lr_min=cfg.min_lr,
        warmup_t=int(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr_init=cfg.lr * 0.01,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    return optimizer, schedule
