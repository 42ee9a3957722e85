"""The fast path for small images: batches sliced from one uint8 tensor, augmented as tensors.

The decoded dataset lives on the compute device (the GPU when there is one), and random crop with
padding, horizontal flip and Cutout run batched on it, so the data pipeline is never the bottleneck
of a CIFAR-size run. Order and augmentation are functions of (seed, epoch, batch index) alone: a run
resumed in the middle of an epoch sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.data.datasets import ImageSet
from core.data.lazy import LazyImages


@dataclass(frozen=True)
class Augment:
    """Batched tensor augmentations (all off by default: evaluation and BN recalibration)."""

    crop_padding: int = 0  # random crop after zero padding by this many pixels (4 for CIFAR)
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of the square Cutout hole in pixels (16 for CIFAR), 0 for none


TRAIN_AUGMENT = Augment(crop_padding=4, flip=True)


class TensorLoader:
    """Iterate (images float normalised NCHW, labels) over an `ImageSet` in deterministic batches."""

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        shuffle: bool = False,
        augment: Augment = Augment(),
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        size: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.size = size  # resize batches to size x size on the device (0: the images' own size)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last
        self.channels_last = channels_last
        self.rank, self.world = shard
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self.epoch = 0
        self._ready: tuple[torch.Tensor, torch.Tensor] | None = None  # (sel, decoded) prefetched for lazy images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels) // self.world
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch."""
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            idx = torch.randperm(n, generator=gen)
        else:
            idx = torch.arange(n)
        per_rank = n // self.world
        return idx[self.rank * per_rank : (self.rank + 1) * per_rank] if self.world > 1 else idx

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the current epoch, starting at `start_batch` (for resuming mid-epoch).

        Images decoded per batch (`core.data.lazy`) are decoded one batch ahead in a background
        thread, so decoding overlaps the training step; the batches are the same either way.
        """
        idx = self.order().to(self.device)
        sels = [idx[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start_batch, len(self))]
        if not isinstance(self.images, LazyImages) or not sels:
            for b, sel in enumerate(sels, start_batch):
                yield self.sized(*self.batch(sel, b))
            return
        with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:
            ahead = pool.submit(self.images.__getitem__, sels[0])
            for i, sel in enumerate(sels):
                self._ready = (sel, ahead.result())
                if i + 1 < len(sels):
                    ahead = pool.submit(self.images.__getitem__, sels[i + 1])
                yield self.sized(*self.batch(sel, start_batch + i))
        self._ready = None

    def sized(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch at `size` pixels (bilinear, antialiased when shrinking), when a size is set."""
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            shrink = self.size < x.shape[-1]
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=shrink)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def pixels(self, sel: torch.Tensor) -> torch.Tensor:
        """The uint8 images of `sel` (from the prefetched batch when it is that one)."""
        if self._ready is not None and self._ready[0] is sel:
            return self._ready[1]
        return self.images[sel]

    def batch(self, sel: torch.Tensor, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pixels(sel).float()
        if self.augment != Augment():
            gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, batch_index, 1))
            x = augment_batch(x, self.augment, gen)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[sel]


def augment_batch(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Random crop with padding, flip and Cutout on a float batch (N, 3, H, W), one draw per image."""
    n, _, h, w = x.shape
    dev = x.device
    if aug.crop_padding:
        p = aug.crop_padding
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(dev)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if aug.flip:
        flip = (torch.rand(n, generator=gen) < 0.5).to(dev).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    if aug.cutout:
        cy = torch.randint(0, h, (n,), generator=gen).to(dev).view(n, 1, 1)
        cx = torch.randint(0, w, (n,), generator=gen).to(dev).view(n, 1, 1)
        top, left = cy - aug.cutout // 2, cx - aug.cutout // 2
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        hole = (ys >= top) & (ys < top + aug.cutout) & (xs >= left) & (xs < left + aug.cutout)
        x = x * (~hole).unsqueeze(1)
    return x


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h
