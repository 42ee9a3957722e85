"""Measuring a retrained model: test-split accuracy, complexity, the MicroNet score; report and curve.

Complexity follows `supernet.flops.count_thop` (multiply-accumulates of convolutions and linear
layers, what NAS papers call MFLOPs and MobileNet calls MAdds), for the model as trained and at its
training resolution; parameters exclude the training-only auxiliary head. Operations count each
MAC as a multiplication plus an addition: 2 ops per MAC, or 1.5 when a 16-bit multiplication counts
as half an operation (the MicroNet challenge's rule). The MicroNet score normalises by
WideResNet-28-10 (36.5M parameters, 10.49B operations), with 16-bit parameters counting as half:

    score = 0.5 * params / 36.5M + ops / 10.49B
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.distributed import all_reduce_sum
from core.rundir import RetrainDir
from retrain.inputs import param_count
from retrain.losses import split_output
from supernet.flops import count_thop

log = logging.getLogger(__name__)

WRN_PARAMS, WRN_OPS = 36.5e6, 10.49e9  # WideResNet-28-10, the MicroNet CIFAR-100 reference


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    autocast: Callable[[], AbstractContextManager],
) -> dict[str, float]:
    """Top-1, top-5 (percent) and mean cross-entropy, summed over ranks (each rank its own shard)."""
    was_training = model.training
    model.eval()
    sums = None
    for x, y in batches:
        with autocast():
            logits = split_output(model(x))[0].float()
        if sums is None:
            sums = torch.zeros(4, dtype=torch.float64, device=logits.device)
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum"),
                hits[:, 0].sum(),
                hits.any(1).sum(),
                torch.tensor(len(y), device=logits.device),
            ]
        ).to(sums)
    model.train(was_training)
    if sums is None:
        sums = torch.zeros(4, dtype=torch.float64, device=next(model.parameters()).device)
    loss, top1, top5, n = all_reduce_sum(sums).tolist()  # .tolist() syncs with the GPU once
    n = max(n, 1.0)
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "loss": loss / n, "images": int(n)}


def complexity(model: nn.Module, image_size: int) -> dict[str, float]:
    """Params, MACs (= MFLOPs = MAdds here), ops with full- and half-cost multiplications, MicroNet scores."""
    macs = count_thop(model, image_size).mflops * 1e6
    params = param_count(model)
    out = {
        "params_m": params / 1e6,
        "mflops": macs / 1e6,
        "madds_m": macs / 1e6,
        "mops_mult_one": 2 * macs / 1e6,
        "mops_mult_half": 1.5 * macs / 1e6,
        "micronet_score": micronet_score(params, 2 * macs),
        "micronet_score_mult_half": micronet_score(params, 1.5 * macs),
        "image_size": image_size,
    }
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}


def micronet_score(params: float, ops: float) -> float:
    """0.5 * params / 36.5M + ops / 10.49B (16-bit parameters count as half a parameter)."""
    return 0.5 * params / WRN_PARAMS + ops / WRN_OPS


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    """report.json (atomically) and curve.png from `report['curve']`."""
    files = RetrainDir(out_dir)
    path = files.report
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)
    try:
        plot_curve(report.get("curve", []), files.curve, report.get("arch_id", ""))
    except Exception as exc:  # a plot must never fail a finished training run
        log.warning("could not draw the training curve: %s", exc)
    return path


def plot_curve(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in curve]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r.get("train_loss") for r in curve], label="train loss")
    tested = [r for r in curve if "test_loss" in r]
    if tested:
        ax_loss.plot([r["epoch"] for r in tested], [r["test_loss"] for r in tested], label="test loss")
        ax_acc.plot([r["epoch"] for r in tested], [r["test_top1"] for r in tested], label="test top-1")
        if any("ema_test_top1" in r for r in tested):
            ema = [r for r in tested if "ema_test_top1" in r]
            ax_acc.plot([r["epoch"] for r in ema], [r["ema_test_top1"] for r in ema], label="EMA test top-1")
    ax_loss.set_xlabel("epoch")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"retrain {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
