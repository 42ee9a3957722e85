"""The training evaluator: each candidate trained from scratch for a few epochs (distributed LaNAS).

The slow but faithful estimate: `space.build(arch)` is trained on the training part and scored on
the search split (never the test split). Under `torchrun`, each rank trains its own candidates (one
per rank for a batch of world-size proposals) and the scores are gathered, as in the distributed
mode of LaNAS where every worker trains the networks it was handed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable
from typing import Any

import torch
import torch.nn.functional as F

from core import amp as amp_lib
from core import distributed
from core.data import TRAIN_AUGMENT, TensorLoader, load_data_for
from core.data.folder import FolderLoader, TransformOptions, decode_split
from core.errors import UserError
from core.runtime import select_device
from core.trainer import LOSS_READ_EVERY
from search.evaluators import register_evaluator
from supernet.spaces.base import Space

log = logging.getLogger(__name__)


class TrainingEvaluator:
    """Short from-scratch training per architecture; deterministic for a seed and architecture.

    Image folders (ImageNet-class data) are read by worker processes (`FolderLoader`: random resized
    crops at the architecture's resolution); the search split is decoded once per resolution and
    kept in memory. Small datasets stay on the in-memory path. Each architecture trains and is
    scored at its own resolution where the space has one (MBConv), else at the data's size.
    """

    def __init__(self, space: Space, cfg: Any) -> None:
        self.space, self.seed, self.cfg = space, cfg.seed, cfg
        self.epochs = int(getattr(cfg, "train_epochs", 1))
        self.batch_size = int(getattr(cfg, "train_batch_size", 64))
        self.lr = float(getattr(cfg, "train_lr", 0.05))
        self.device = select_device(cfg.device)
        self.autocast = lambda: amp_lib.autocast(getattr(cfg, "amp", "off"), self.device)
        data = load_data_for(cfg)
        data.test = None  # type: ignore[assignment]  # never scored on the test split
        if not len(data.search):
            raise UserError("the search split is empty: nothing to score architectures on; pass --search-size N")
        self.data = data
        self.cache: dict[Hashable, dict[str, Any]] = {}
        self._search: dict[int, Any] = {}  # worker path: the search split decoded at each resolution

    def _size(self, arch: Hashable) -> int:
        return int(getattr(arch, "resolution", 0) or self.data.image_size)

    def _train_loader(self, size: int) -> TensorLoader | FolderLoader:
        cfg, train = self.cfg, self.data.train
        kw = {"mean": self.data.mean, "std": self.data.std, "device": self.device, "seed": self.seed}
        if train.on_workers:
            return FolderLoader(
                train, self.batch_size, train=True, transform=TransformOptions.from_config(cfg), shuffle=True,
                drop_last=True, workers=getattr(cfg, "workers", -1), timeout=getattr(cfg, "loader_timeout", 300.0),
                strict=getattr(cfg, "strict_images", False), size=size, **kw,
            )  # fmt: skip
        resize = size if size != self.data.image_size else 0
        return TensorLoader(train, self.batch_size, shuffle=True, augment=TRAIN_AUGMENT, drop_last=True, size=resize,
                            **kw)  # fmt: skip

    def _search_loader(self, size: int) -> TensorLoader:
        search, cfg = self.data.search, self.cfg
        if search.on_workers:
            if size not in self._search:
                self._search[size] = decode_split(
                    search, size, TransformOptions.from_config(cfg), getattr(cfg, "workers", -1),
                    getattr(cfg, "loader_timeout", 300.0), getattr(cfg, "strict_images", False),
                )  # fmt: skip
            search, size = self._search[size], 0
        resize = size if size and size != self.data.image_size else 0
        return TensorLoader(search, 256, mean=self.data.mean, std=self.data.std, device=self.device, size=resize)

    def train_and_score(self, arch: Hashable) -> dict[str, Any]:
        key = self.space.canonical(arch)
        if key in self.cache:
            return dict(self.cache[key])
        torch.manual_seed(self.seed)
        net = self.space.build(arch, self.data.num_classes).to(self.device)
        size = self._size(arch)
        train = self._train_loader(size)
        steps = self.epochs * len(train)
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=3e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
        net.train()
        start, step, seen, wait = time.perf_counter(), 0, 0, 0.0
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # read every LOSS_READ_EVERY steps
        try:
            for epoch in range(self.epochs):
                train.set_epoch(epoch)
                for x, y in train:
                    with self.autocast():
                        out = net(x)
                        logits = out[0] if isinstance(out, tuple) else out
                        loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                    opt.step()
                    sched.step()
                    loss_sum += loss.detach()
                    step, seen = step + 1, seen + len(y)
                    if step % LOSS_READ_EVERY == 0 or step == steps:
                        _check_finite(loss_sum, step)
                wait += getattr(train, "wait_s", 0.0)
            _check_finite(loss_sum, step)  # steps since the last read (a skipped batch can leave some)
            finite = [p.isfinite().all() for p in net.parameters()]
            if finite and not torch.stack(finite).all():
                raise FloatingPointError(f"weights are not finite after step {step}: this architecture diverged")
        finally:
            if isinstance(train, FolderLoader):
                train.close()
        seconds = max(time.perf_counter() - start, 1e-9)
        net.eval()
        correct, total = torch.zeros((), dtype=torch.long, device=self.device), 0
        with torch.no_grad():
            for x, y in self._search_loader(size):
                with self.autocast():
                    correct += (net(x).argmax(1) == y).sum()
                total += len(y)
        log.info("trained %s at %d px: %d steps, %.0f images/s, data wait %.0f%%", self.space.to_str(arch), size,
                 step, seen / seconds, 100 * wait / seconds)  # fmt: skip
        result = {"metric": 100.0 * correct.item() / max(total, 1), "train_epochs": self.epochs,
                  "train_images_per_s": round(seen / seconds, 1), "data_wait": round(wait / seconds, 4)}  # fmt: skip
        self.cache[key] = result
        return dict(result)

    def score_or_fail(self, arch: Hashable) -> dict[str, Any]:
        """`train_and_score`, or a failed result (metric NaN and its one-line error) if training diverged."""
        try:
            return self.train_and_score(arch)
        except FloatingPointError as exc:
            log.warning("%s failed: %s", self.space.to_str(arch), exc)
            return {"metric": math.nan, "error": f"FloatingPointError: {exc}"}

    def evaluate(self, archs: list[Hashable]) -> list[dict[str, Any]]:
        rank, world = distributed.rank(), distributed.world_size()
        mine = {i: self.score_or_fail(a) for i, a in enumerate(archs) if i % world == rank}
        merged: dict[int, dict[str, Any]] = {}
        for part in distributed.all_gather_object(mine):
            merged.update(part)
        return [merged[i] for i in range(len(archs))]


def _check_finite(loss_sum: torch.Tensor, step: int) -> None:
    """A non-finite loss ends this trial alone: the error is recorded with it and it is not retried."""
    value = float(loss_sum.item())
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss is {value} by step {step}: this architecture diverged at --train-lr")


def _factory(cfg: Any, space: Space) -> TrainingEvaluator:
    distributed.init_distributed(select_device(cfg.device))
    return TrainingEvaluator(space, cfg)


register_evaluator("train", _factory)
