"""Scoring one subnet of a supernet: BatchNorm recalibration, then accuracy and loss on the search split.

Weight sharing leaves the supernet's BatchNorm running statistics a mix of every subnet trained, so
each subnet's statistics are re-estimated before it is scored (as in SPOS and Once-for-All): the
running statistics are reset and re-computed as a cumulative average over N training images, without
augmentation, in a fixed order. N is returned with every score. The caller's BN buffers are restored
afterwards, so scoring has no side effect on training or on other scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator

import torch
from torch import nn

from core import distributed
from core.data import ImageSet, TensorLoader

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def recal_subset(train: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """The N training images used for recalibration: a fixed shuffle (classes mixed), same for all archs."""
    gen = torch.Generator().manual_seed(seed + 0xBA7C)
    return train.subset(torch.randperm(len(train), generator=gen)[: min(n, len(train))])


def _bn_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]


@contextlib.contextmanager
def preserved_bn_state(net: nn.Module) -> Iterator[None]:
    """Restore every BN buffer and momentum on exit."""
    saved = [(m, m.momentum, {k: v.clone() for k, v in m._buffers.items() if v is not None}) for m in _bn_modules(net)]
    try:
        yield
    finally:
        for m, momentum, buffers in saved:
            m.momentum = momentum
            for k, v in buffers.items():
                m._buffers[k].copy_(v)


@torch.no_grad()
def recalibrate_bn(
    net: nn.Module, arch: Hashable, loader: TensorLoader, autocast: contextlib.AbstractContextManager | None = None
) -> int:
    """Reset BN statistics and re-estimate them for `arch` over `loader`; returns the images used."""
    bns = _bn_modules(net)
    for m in bns:
        m.reset_running_stats()
    was_training = net.training
    net.eval()
    for m in bns:
        m.train()
    seen = 0
    for k, (x, _) in enumerate(loader):
        for m in bns:
            m.momentum = 1.0 / (k + 1)  # running = mean over the batches so far (cumulative average)
        with autocast or contextlib.nullcontext():
            net(x, arch)
        seen += len(x)
    net.train(was_training)
    return seen


@torch.no_grad()
def evaluate_arch(
    net: nn.Module, arch: Hashable, loader: TensorLoader, autocast: contextlib.AbstractContextManager | None = None
) -> dict[str, float]:
    """Top-1 accuracy (%), mean cross-entropy and image count of `arch` over `loader` (summed over ranks)."""
    was_training = net.training
    net.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=loader.device)
    for x, y in loader:
        with autocast or contextlib.nullcontext():
            logits = net(x, arch)
        sums[0] += (logits.argmax(1) == y).sum()
        sums[1] += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        sums[2] += len(y)
    net.train(was_training)
    if loader.world > 1:
        distributed.all_reduce_sum(sums)
    correct, loss, total = sums.tolist()  # .tolist() syncs with the GPU once per arch
    total = max(total, 1)
    return {"acc": 100.0 * correct / total, "loss": loss / total, "n": int(total)}


def score_arch(
    net: nn.Module,
    arch: Hashable,
    recal_loader: TensorLoader | None,
    eval_loader: TensorLoader,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Recalibrate (unless `recal_loader` is None) and score `arch` (accuracy and mean cross-entropy).

    BN state is restored afterwards.
    """
    with preserved_bn_state(net):
        n_recal = recalibrate_bn(net, arch, recal_loader, autocast) if recal_loader is not None else 0
        result = evaluate_arch(net, arch, eval_loader, autocast)
    return {"acc": result["acc"], "loss": result["loss"], "n_eval": result["n"], "n_recal": n_recal}
