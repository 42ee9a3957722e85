"""A zero-cost proxy: the norm of the loss gradient of a freshly initialised network.

`GradNorm(space, cfg)(arch)` builds `space.build(arch)` with fixed initial weights, takes one
cross-entropy gradient on a fixed batch of training images (BatchNorm in training mode), and
returns the log of its L2 norm over all parameters, averaged over `reps` (init, batch) pairs. It
sees no label of the search or test split and trains nothing, so it costs one forward and one
backward pass per repeat.

Why: it measures how fast a network starts to learn (Abdelfattah et al., "Zero-Cost Proxies for
Lightweight NAS", ICLR 2021), which hardly depends on the network's MFLOPs, so it can add what a
briefly trained supernet misses among cells of equal cost. `--prior gradnorm` averages its
percentile with the evaluator's (`prior.py`). How well it ranks the demo's cells, and why the demo
preset leaves it off: docs/demo.md, "Search options".
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import torch
import torch.nn.functional as F

from core.data import TensorLoader, load_data_for
from core.data.folder import TransformOptions, decode_split
from core.errors import UserError
from core.runtime import select_device
from supernet.spaces.base import Space


class GradNorm:
    """log ||dL/dw|| at initialisation, averaged over `reps` seeded (init, batch) pairs; cached per arch."""

    def __init__(self, space: Space, cfg: Any, *, reps: int = 4, batch_size: int = 64) -> None:
        self.space, self.reps, self.seed = space, reps, int(cfg.seed)
        self.device = select_device(getattr(cfg, "device", "auto"))
        data = load_data_for(cfg)
        self.num_classes = data.num_classes
        train = data.train
        if train.on_workers:  # an image folder: decode only the images the batches need (eval transform)
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            opt, workers = TransformOptions.from_config(cfg), getattr(cfg, "workers", -1)
            timeout, strict = getattr(cfg, "loader_timeout", 300.0), getattr(cfg, "strict_images", False)
            spare = max(8, reps * batch_size // 10)  # undecodable files are skipped: keep the batches full
            first = train.subset(pick[: reps * batch_size + spare])
            train = decode_split(first, data.image_size, opt, workers, timeout, strict)
        loader = TensorLoader(
            train, batch_size, shuffle=True, drop_last=True, mean=data.mean, std=data.std,
            device=self.device, seed=self.seed,
        )  # fmt: skip
        self.batches = []
        for x, y in loader:  # the first `reps` batches of a seeded shuffle of the training part
            self.batches.append((x, y))
            if len(self.batches) == reps:
                break
        if not self.batches:
            raise UserError(
                f"gradnorm needs a batch of {batch_size} training images and got fewer; add images or lower the batch"
            )
        self.cache: dict[Hashable, float] = {}

    def __call__(self, arch: Hashable) -> float:
        key = self.space.canonical(arch)
        if key not in self.cache:
            self.cache[key] = sum(self._one(arch, r) for r in range(len(self.batches))) / len(self.batches)
        return self.cache[key]

    def _one(self, arch: Hashable, rep: int) -> float:
        x, y = self.batches[rep]
        size = int(getattr(arch, "resolution", 0) or x.shape[-1])
        if size != x.shape[-1]:  # an MBConv arch at its own resolution
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG stream where it was
            torch.manual_seed(self.seed * 1000 + rep)
            net = self.space.build(arch, self.num_classes).to(self.device).train()
        out = net(x)
        logits = out[0] if isinstance(out, tuple) else out
        F.cross_entropy(logits, y).backward()
        sq = sum(float((p.grad.float() ** 2).sum()) for p in net.parameters() if p.grad is not None)
        return math.log(max(math.sqrt(sq), 1e-30))
