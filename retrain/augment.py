"""Training-time augmentation on top of the tensor fast path (`core.data.TensorLoader`).

Per batch, in the order the CIFAR recipes use: random crop and flip (batched on the device), then
AutoAugment (Cubuk et al. 2019) or RandAugment (Cubuk et al. 2020) per image on uint8 tensors
(torchvision's implementations), then Cutout (DeVries & Taylor 2017, batched), normalisation,
Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019) with soft targets (timm), and random erasing
(Zhong et al. 2020; timm, on normalised tensors).

Every random draw of a batch comes from generators seeded by (seed, epoch, batch index) alone: the
global RNGs that timm and torchvision use are forked and re-seeded around the batch, so a run
resumed in the middle of an epoch sees exactly the batches an uninterrupted run would, and the
model's own randomness (dropout, drop path) is left undisturbed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.data import Augment, ImageSet, TensorLoader, augment_batch
from core.data.folder import FolderLoader
from core.errors import UserError


@dataclass(frozen=True)
class AugmentOptions:
    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    policy: str = "off"  # off | randaugment | autoaugment
    randaugment_n: int = 2
    randaugment_m: int = 9
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    label_smoothing: float = 0.0
    random_erasing: float = 0.0
    image_size: int = 32  # picks AutoAugment's CIFAR-10 or ImageNet policy

    @classmethod
    def from_config(cls, cfg: Any, image_size: int) -> AugmentOptions:
        return cls(
            crop_padding=max(1, image_size // 8) if cfg.crop_flip else 0,  # 4 pixels at 32x32
            flip=cfg.crop_flip,
            cutout=cfg.cutout,
            policy=cfg.policy,
            randaugment_n=cfg.randaugment_n,
            randaugment_m=cfg.randaugment_m,
            mixup=cfg.mixup,
            cutmix=cfg.cutmix,
            mix_prob=cfg.mix_prob,
            label_smoothing=cfg.label_smoothing,
            random_erasing=cfg.random_erasing,
            image_size=image_size,
        )

    @property
    def mixes(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mix_prob > 0


def seed_of(*values: int) -> int:
    """A 63-bit seed from several integers (FNV-1a style; stable across runs and platforms)."""
    h = 0xCBF29CE484222325
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3) & 0x7FFFFFFFFFFFFFFF
    return h


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with python, numpy and torch (CPU and this GPU) seeded, then restore their states."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


class AugmentLoader(TensorLoader):
    """A TensorLoader whose batches carry the full augmentation stack; targets may be soft."""

    def __init__(
        self, data: ImageSet, batch_size: int, *, options: AugmentOptions, num_classes: int, **kw: Any
    ) -> None:
        super().__init__(data, batch_size, **kw)
        self.options = options
        self.policy = _policy(options)
        self.mixup, self.erasing = _mixers(options, batch_size, num_classes, self.device)

    def batch(self, sel: torch.Tensor, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        opt = self.options
        x, y = self.pixels(sel).float(), self.labels[sel]
        with seeded(seed_of(self.seed, self.epoch, batch_index, 17), self.device):
            gen = torch.Generator().manual_seed(seed_of(self.seed, self.epoch, batch_index, 1))
            if opt.crop_padding or opt.flip:
                x = augment_batch(x, Augment(crop_padding=opt.crop_padding, flip=opt.flip), gen)
            if self.policy is not None:
                # crop and flip only move pixels (and pad with 0), so the values are still exact bytes
                x8 = x.to(torch.uint8)
                x = torch.stack([self.policy(img) for img in x8]).float()
            if opt.cutout:
                x = augment_batch(x, Augment(cutout=opt.cutout), gen)
            x = (x - self.mean) / self.std
            x, y = _mix(x, y, self.mixup, self.erasing)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def _policy(opt: AugmentOptions) -> Any:
    if opt.policy == "off":
        return None
    from torchvision.transforms import v2

    if opt.policy == "randaugment":
        return v2.RandAugment(num_ops=opt.randaugment_n, magnitude=opt.randaugment_m)
    small = opt.image_size <= 64
    return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10 if small else v2.AutoAugmentPolicy.IMAGENET)


class WorkerAugmentLoader(FolderLoader):
    """The worker path's training loader for retraining: crop, flip and policy in the workers (timm),
    then on the device normalisation, Mixup/CutMix (timm, soft targets) and random erasing (timm).

    The device-side draws are seeded by (seed, epoch, batch index), like `AugmentLoader`'s.
    """

    def __init__(
        self, data: ImageSet, batch_size: int, *, options: AugmentOptions, num_classes: int, **kw: Any
    ) -> None:
        super().__init__(data, batch_size, train=True, **kw)
        self.options, self.seed = options, kw.get("seed", 0)
        self.mixup, self.erasing = _mixers(options, batch_size, num_classes, self.device)

    def finish(self, x: torch.Tensor, y: torch.Tensor, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().finish(x, y, batch_index)
        if self.mixup is None and self.erasing is None:
            return x, y
        with seeded(seed_of(self.seed, self.epoch, batch_index, 17), self.device):
            x, y = _mix(x, y, self.mixup, self.erasing)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def _mixers(opt: AugmentOptions, batch_size: int, num_classes: int, device: torch.device) -> tuple[Any, Any]:
    """timm's Mixup/CutMix and random erasing for `opt` (None where off)."""
    mixup = erasing = None
    if opt.mixes:
        if batch_size % 2:
            raise UserError(f"Mixup/CutMix need an even batch per rank; got {batch_size}")
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=opt.mixup, cutmix_alpha=opt.cutmix, prob=opt.mix_prob,
                      label_smoothing=opt.label_smoothing, num_classes=num_classes)  # fmt: skip
    if opt.random_erasing > 0:
        from timm.data.random_erasing import RandomErasing

        erasing = RandomErasing(opt.random_erasing, mode="pixel", device=str(device))
    return mixup, erasing


def _mix(x: torch.Tensor, y: torch.Tensor, mixup: Any, erasing: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup/CutMix, then random erasing, on a normalised batch (each skipped when None)."""
    if mixup is not None:
        x, y = mixup(x, y)
    if erasing is not None:
        x = erasing(x)
    return x, y
