"""The training evaluator: each candidate trained from scratch for a few epochs (distributed LaNAS).

The slow but faithful estimate: `space.build(arch)` is trained on the training part and scored on
the search split (never the test split). Under `torchrun`, each rank trains its own candidates (one
per rank for a batch of world-size proposals) and the scores are gathered, as in the distributed
mode of LaNAS where every worker trains the networks it was handed.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

import torch
import torch.nn.functional as F

from core import amp as amp_lib
from core import distributed
from core.data import TRAIN_AUGMENT, TensorLoader, load_data_for
from core.errors import UserError
from core.runtime import select_device
from search.evaluators import register_evaluator
from supernet.spaces.base import Space

log = logging.getLogger(__name__)


class TrainingEvaluator:
    """Short from-scratch training per architecture; deterministic for a seed and architecture."""

    def __init__(self, space: Space, cfg: Any) -> None:
        self.space, self.seed = space, cfg.seed
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

    def train_and_score(self, arch: Hashable) -> dict[str, Any]:
        key = self.space.canonical(arch)
        if key in self.cache:
            return dict(self.cache[key])
        torch.manual_seed(self.seed)
        net = self.space.build(arch, self.data.num_classes).to(self.device)
        kw = {"mean": self.data.mean, "std": self.data.std, "device": self.device, "seed": self.seed}
        train = TensorLoader(
            self.data.train, self.batch_size, shuffle=True, augment=TRAIN_AUGMENT, drop_last=True, **kw
        )
        steps = self.epochs * len(train)
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=3e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
        net.train()
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
        net.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in TensorLoader(self.data.search, 256, **kw):
                with self.autocast():
                    correct += (net(x).argmax(1) == y).sum().item()
                total += len(y)
        result = {"metric": 100.0 * correct / max(total, 1), "train_epochs": self.epochs}
        self.cache[key] = result
        return dict(result)

    def evaluate(self, archs: list[Hashable]) -> list[dict[str, Any]]:
        rank, world = distributed.rank(), distributed.world_size()
        mine = {i: self.train_and_score(a) for i, a in enumerate(archs) if i % world == rank}
        merged: dict[int, dict[str, Any]] = {}
        for part in distributed.all_gather_object(mine):
            merged.update(part)
        return [merged[i] for i in range(len(archs))]


def _factory(cfg: Any, space: Space) -> TrainingEvaluator:
    distributed.init_distributed(select_device(cfg.device))
    return TrainingEvaluator(space, cfg)


register_evaluator("train", _factory)
