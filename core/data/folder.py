"""The worker-process path for image folders: `torch.utils.data.DataLoader` with timm's transforms.

Large image folders (ImageNet-class data) are not decoded up front. Their files are listed
(`FileList`), and each batch is read, decoded and transformed in DataLoader worker processes, one
thread each, with pinned memory, prefetch and persistent workers:

- training: timm's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3 by default), horizontal flip and
  the chosen policy (RandAugment, AutoAugment), all in the workers;
- evaluation: resize to `size / crop_pct`, then a centre crop (`crop_pct` 0.875 by default).

A JPEG is opened undecoded, and the evaluation resize (with `draft_train`, also the random crop) asks
libjpeg for a 1/2, 1/4 or 1/8-scale decode when its output is at most that fraction of the region it
covers (PIL `draft`); the random draws, the crop box and the output size are those of the full decode.

Batches cross to the device as uint8 and are normalised there (channels-last where set); what
needs the whole batch (Mixup/CutMix, random erasing) runs on the device after this loader (timm).

Every random draw of an image comes from seeds fixed by (seed, epoch, image index) alone, so a batch
is the same whatever the worker count or the position a resumed run starts from. Each rank reads its
own shard (`DistributedSampler`, `set_epoch` every epoch). The resolution of a batch may change from
step to step (`resolution_of`): the workers crop at that resolution. A step may ask for several
(the subnets of a sandwich step at their own resolutions): each image is then decoded once and its
one random view (crop box, flip, policy) is cropped at every size asked for, and the loader yields a
`MultiRes` batch, one tensor per size; no batch is interpolated.

A file that cannot be decoded (corrupt, truncated, empty, over PIL's decompression-bomb limit) is
skipped with a warning and counted (`skipped`), unless `strict` makes it a one-line error.
"""

from __future__ import annotations

import io
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.data.decode import failure_reason
from core.data.lazy import FileSource
from core.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_SIZE = 224  # training resolution of a folder dataset when --image-size is 0


@dataclass(frozen=True)
class TransformOptions:
    """What the worker transforms do (timm's ImageNet transforms)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_pct: float = 0.875
    flip: bool = True
    policy: str = "off"  # off | randaugment | autoaugment
    randaugment_n: int = 2
    randaugment_m: int = 9
    interpolation: str = "bilinear"  # of crops and resizes: bilinear (timm's create_transform), bicubic, random
    draft: bool = True  # JPEGs decoded at 1/2-1/8 scale when the output is at most half the region it covers
    # ... in the training transform too: off by default, since a random crop of an ImageNet-sized photo is
    # seldom twice the output, and it did not pay there in `bench-data` (docs/benchmarks.md)
    draft_train: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> TransformOptions:
        return cls(
            crop_scale=tuple(getattr(cfg, "crop_scale", cls.crop_scale)),  # type: ignore[arg-type]
            crop_ratio=tuple(getattr(cfg, "crop_ratio", cls.crop_ratio)),  # type: ignore[arg-type]
            crop_pct=getattr(cfg, "crop_pct", cls.crop_pct),
            flip=getattr(cfg, "crop_flip", getattr(cfg, "augment", True)),
            policy=getattr(cfg, "policy", "off"),
            randaugment_n=getattr(cfg, "randaugment_n", 2),
            randaugment_m=getattr(cfg, "randaugment_m", 9),
            interpolation=getattr(cfg, "interpolation", cls.interpolation),
            draft=getattr(cfg, "jpeg_draft", "eval") != "off",
            draft_train=getattr(cfg, "jpeg_draft", "eval") == "all",
        )

    def timm_policy(self) -> str | None:
        if self.policy == "randaugment":
            # not timm's "inc1" variant: at magnitude 10 it posterizes to 0 bits, which Pillow refuses
            return f"rand-m{self.randaugment_m}-n{self.randaugment_n}-mstd0.5"
        if self.policy == "autoaugment":
            return "original"
        return None


def train_transform(size: int, opt: TransformOptions) -> Callable:
    """timm's ImageNet training transform at `size`, ending in a uint8 CHW tensor (no normalisation)."""
    from timm.data.transforms_factory import transforms_imagenet_train

    return transforms_imagenet_train(
        size, scale=opt.crop_scale, ratio=opt.crop_ratio, hflip=0.5 if opt.flip else 0.0, color_jitter=None,
        auto_augment=opt.timm_policy(), interpolation=opt.interpolation, use_prefetcher=True,
    )  # fmt: skip


def eval_transform(size: int, opt: TransformOptions) -> Callable:
    """timm's evaluation transform: resize to size / crop_pct, centre crop `size`, uint8 CHW tensor."""
    from timm.data.transforms_factory import transforms_imagenet_eval

    interpolation = "bilinear" if opt.interpolation == "random" else opt.interpolation
    return transforms_imagenet_eval(size, crop_pct=opt.crop_pct, interpolation=interpolation, use_prefetcher=True)


def _draft(img: Any, factor: int) -> int:
    """Ask libjpeg to decode `img` (opened, not yet loaded) at 1/2, 1/4 or 1/8 scale, at most `factor`.

    DCT scaling skips most of the inverse transform's work; each reduced pixel is the mean of an
    s x s block. Returns the scale s the decoder will use (1 for other formats or factor < 2).
    """
    if factor < 2 or getattr(img, "format", None) != "JPEG":
        return 1
    s = 1 << (min(factor, 8).bit_length() - 1)
    w, h = img.size
    got = img.draft(img.mode, (w // s, h // s))  # libjpeg picks exactly s for this request
    return round(w / got[1][2]) if got else 1


class DraftResizedCrop:
    """timm's RandomResizedCrop on an undecoded image: same random draws and output as `crop`, but a
    JPEG whose crop region is at least twice the output size is decoded at a reduced scale first."""

    def __init__(self, crop: Any, draft: bool = True) -> None:
        self.crop, self.draft = crop, draft

    def __call__(self, img: Any) -> Any:
        from torchvision.transforms import functional as F

        c = self.crop
        i, j, h, w = c.get_params(img, c.scale, c.ratio)
        mode = random.choice(c.interpolation) if isinstance(c.interpolation, (tuple, list)) else c.interpolation
        out_h, out_w = c.size
        s = _draft(img, min(h // out_h, w // out_w)) if self.draft else 1
        img = img.convert("RGB")
        if s == 1:
            return F.resized_crop(img, i, j, h, w, list(c.size), mode)
        return img.resize((out_w, out_h), F.pil_modes_mapping[mode], box=(j / s, i / s, (j + w) / s, (i + h) / s))

    def many(self, img: Any, sizes: tuple[int, ...]) -> list[Any]:
        """One random crop box of `img` (the draws of `__call__`), resized to each of `sizes` (square)."""
        from torchvision.transforms import functional as F

        c = self.crop
        i, j, h, w = c.get_params(img, c.scale, c.ratio)
        mode = random.choice(c.interpolation) if isinstance(c.interpolation, (tuple, list)) else c.interpolation
        big = max(sizes)
        s = _draft(img, min(h // big, w // big)) if self.draft else 1  # enough pixels for the largest size
        img = img.convert("RGB")
        if s == 1:
            return [F.resized_crop(img, i, j, h, w, [size, size], mode) for size in sizes]
        box = (j / s, i / s, (j + w) / s, (i + h) / s)
        return [img.resize((size, size), F.pil_modes_mapping[mode], box=box) for size in sizes]


class DraftResize:
    """torchvision's Resize of the shorter side on an undecoded image: the output size of the full
    image, from a JPEG decoded at the largest reduced scale that stays at least that size."""

    def __init__(self, resize: Any, draft: bool = True) -> None:
        self.resize, self.draft = resize, draft

    def __call__(self, img: Any) -> Any:
        from torchvision.transforms import functional as F

        size = self.resize.size if isinstance(self.resize.size, int) else self.resize.size[0]
        w, h = img.size
        tw, th = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # as torchvision sizes it
        if self.draft:
            _draft(img, min(w // tw, h // th))
        return F.resize(img.convert("RGB"), [th, tw], self.resize.interpolation, antialias=True)


def split_transform(tf: Any, train: bool, draft: bool) -> tuple[Callable, Callable]:
    """(decode-and-size step on an undecoded PIL image, the rest) of timm's train or eval transform."""
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms

    first = tf.transforms[0]
    if train and isinstance(first, RandomResizedCropAndInterpolation):
        step: Callable = DraftResizedCrop(first, draft)
    elif not train and isinstance(first, transforms.Resize) and len(tf.transforms) == 3:
        step = DraftResize(first, draft)
    else:  # an unexpected layout: decode in full, then timm's transform unchanged
        return (lambda img: img.convert("RGB")), tf
    return step, transforms.Compose(tf.transforms[1:])


class FileList:
    """The undecoded images of a folder dataset: rows of a `FileSource`, delivered at `size` pixels.

    Stands in for `ImageSet.images` on the worker path (`len`, `.shape`, `subset`, `cat`).
    """

    dtype = torch.uint8

    def __init__(self, source: FileSource, index: torch.Tensor, size: int) -> None:
        self.source = source
        self.index = torch.as_tensor(index, dtype=torch.int64).cpu()
        self.size = size

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), 3, self.size, self.size))

    def subset(self, index: torch.Tensor) -> FileList:
        return FileList(self.source, self.index[torch.as_tensor(index).cpu()], self.size)

    def cat(self, other: FileList) -> FileList:
        return FileList(self.source, torch.cat([self.index, other.index]), self.size)

    def name(self, i: int) -> str:
        return self.source.describe(int(self.index[i]))


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (FNV-1a style; stable across runs and platforms)."""
    h = 0xCBF29CE484222325
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3) & 0x7FFFFFFFFFFFFFFF
    return h


class MultiRes(dict):
    """One batch at several resolutions: {size: tensor}, the same images and views at each size.

    A supernet step whose subnets name different resolutions gets one of these; each subnet takes
    the tensor at its own size (`pick`)."""

    @property
    def shape(self) -> torch.Size:  # of the largest: batch size and channels are the same for all
        return self[max(self)].shape

    def __len__(self) -> int:  # the batch size, as for a tensor
        return int(self.shape[0])


def pick(x: torch.Tensor | MultiRes, size: int) -> torch.Tensor:
    """The batch at `size` from a `MultiRes` (a plain tensor is returned as it is)."""
    if not isinstance(x, MultiRes):
        return x
    if size not in x:
        raise UserError(f"a batch at {sorted(x)} px has no crops at {size} px; this is a bug in the step's sizes")
    return x[size]


class _Images(torch.utils.data.Dataset):
    """Items (row, epoch, resolution or tuple of resolutions) -> (uint8 CHW tensor, or a tuple of them
    one per resolution, label), or an error string for a bad file."""

    def __init__(self, files: FileList, labels: torch.Tensor, train: bool, opt: TransformOptions, seed: int) -> None:
        self.files, self.labels = files, labels.tolist()
        self.train, self.opt, self.seed = train, opt, seed
        self._transforms: dict[int, tuple[Callable, Callable]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def transform(self, size: int) -> tuple[Callable, Callable]:
        """(decode and crop or resize, the rest of the transform) at `size`."""
        if size not in self._transforms:
            make = train_transform if self.train else eval_transform
            draft = self.opt.draft and (self.opt.draft_train or not self.train)
            self._transforms[size] = split_transform(make(size, self.opt), self.train, draft)
        return self._transforms[size]

    def __getitem__(self, item: tuple[int, int, int | tuple[int, ...]]) -> tuple[Any, int]:
        from PIL import Image

        i, epoch, size = item
        sizes = size if isinstance(size, tuple) else (size,)
        if self.train:  # timm and torchvision draw from python's, numpy's and torch's global generators
            s = _mix(self.seed, epoch, i)
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.random.default_generator.manual_seed(s)  # far cheaper per image than torch.manual_seed
        name = self.files.name(i)
        first, rest = self.transform(max(sizes))
        # several sizes from one random crop box: decoded once, cropped at each size
        several = len(sizes) > 1 and isinstance(first, DraftResizedCrop)
        try:
            raw = self.files.source.read(int(self.files.index[i]))
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                if len(sizes) == 1:  # decodes (at a reduced scale where that is enough), then crops or resizes
                    views, after = [first(Image.open(io.BytesIO(raw)))], []
                elif several:
                    views = first.many(Image.open(io.BytesIO(raw)), sizes)
                    after = [_rng_state()] * len(sizes)  # each size's flip and policy draws start here
                else:  # a layout without a random crop (evaluation): the whole transform per size, same draws
                    state, views, after = _rng_state(), [], []
                    for each in sizes:
                        _set_rng_state(state)
                        views.append(self.transform(each)[0](Image.open(io.BytesIO(raw))))
                        after.append(_rng_state())
        except UserError as exc:
            return str(exc), self.labels[i]
        except Exception as exc:  # corrupt, truncated, empty, a decompression bomb: all one bad file
            return f"cannot decode image {name}: {failure_reason(exc)}", self.labels[i]
        if len(sizes) == 1:
            return rest(views[0]), self.labels[i]
        out = []
        for each, view, state in zip(sizes, views, after):
            _set_rng_state(state)  # the same draws at every size: the views differ in resolution only
            out.append(self.transform(each)[1](view))
        return tuple(out), self.labels[i]


def _rng_state() -> tuple[Any, Any, torch.Tensor]:
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state()


def _set_rng_state(state: tuple[Any, Any, torch.Tensor]) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.random.set_rng_state(state[2])


def _collate(items: list[tuple[Any, int]]) -> tuple[Any, torch.Tensor, list[str]]:
    """Stack the good images (per size, for several); the bad ones travel as messages (counted and
    reported by the loader)."""
    good = [(x, y) for x, y in items if not isinstance(x, str)]
    bad = [x for x, _ in items if isinstance(x, str)]
    if not good:
        return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), bad
    if isinstance(good[0][0], tuple):
        x: Any = tuple(torch.stack(views) for views in zip(*(x for x, _ in good)))
    else:
        x = torch.stack([x for x, _ in good])
    return x, torch.tensor([y for _, y in good], dtype=torch.int64), bad


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2  # noqa: F401  (timm does not need it; if present it must not spawn threads)

        cv2.setNumThreads(1)
    except Exception:
        pass


def _normalise(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std as x * scale + shift, in place on the float copy: a multiply and an add are
    cheaper than a division, and no temporaries."""
    return x.float().mul_(scale).add_(shift)


class _Collate:
    """`_collate` in the workers and, given `scale` and `shift` (a CPU device), the normalisation there too."""

    def __init__(self, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> None:
        self.scale, self.shift = scale, shift

    def __call__(self, items: list[tuple[Any, int]]) -> tuple[Any, torch.Tensor, list[str]]:
        x, y, bad = _collate(items)
        if self.scale is not None and self.shift is not None and len(y):
            views = [_normalise(v, self.scale, self.shift) for v in (x if isinstance(x, tuple) else (x,))]
            x = tuple(views) if isinstance(x, tuple) else views[0]
        return x, y, bad


class _Batches(torch.utils.data.Sampler):
    """This rank's batches of one epoch from a start batch, as (row, epoch, resolution) items."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, shard: tuple[int, int]):
        rank, world = shard
        self.sampler = torch.utils.data.DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last or world > 1
        )
        self.batch_size, self.drop_last = batch_size, drop_last
        self.epoch, self.start = 0, 0
        self.resolution_of: Callable[[int], int | tuple[int, ...]] = lambda step: 0

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int | tuple[int, ...]]]]:
        self.sampler.set_epoch(self.epoch)
        rows = list(self.sampler)
        total = len(self)
        for b in range(self.start, total):
            size = self.resolution_of(self.epoch * total + b)
            if isinstance(size, (tuple, list)):  # several sizes: largest first, each once
                size = tuple(sorted({int(v) for v in size}, reverse=True))
                size = size[0] if len(size) == 1 else size
            yield [(i, self.epoch, size) for i in rows[b * self.batch_size : (b + 1) * self.batch_size]]


class FolderLoader:
    """Batches (images float normalised NCHW on `device`, labels) of a folder dataset, decoded in workers.

    The interface of `TensorLoader` (`set_epoch`, `iter_from`, `len`, `device`, `world`, `labels`),
    plus `skipped` (bad files skipped this epoch), `wait_s` (time the caller waited for data this
    epoch) and `resolution_of` (step -> crop size, or a tuple of sizes for a `MultiRes` batch; the
    fixed `size` by default).
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        train: bool = False,
        transform: TransformOptions = TransformOptions(),
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        workers: int = -1,
        timeout: float = 300.0,
        strict: bool = False,
        size: int = 0,
        raw: bool = False,
    ) -> None:
        files: FileList = data.images
        self.device = torch.device(device)
        self.labels = data.labels
        self.size = size or files.size
        self.rank, self.world = shard
        self.train = train
        self.batch_size, self.strict, self.channels_last = batch_size, strict, channels_last
        self.workers = default_workers() if workers < 0 else workers
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self.scale, self.shift = 1 / self.std, -self.mean / self.std  # see _normalise
        # Where the device is the CPU, the workers normalise (in parallel, not in the training process);
        # for a GPU the batch crosses as uint8 and is normalised there. `raw`: uint8 out, never normalised.
        self.raw = raw
        self.in_workers = not raw and self.device.type == "cpu"
        self.batches = _Batches(len(files), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, shard=shard)
        self.batches.resolution_of = lambda step: self.size
        w = self.workers
        self.loader = torch.utils.data.DataLoader(
            _Images(files, data.labels, train, transform, seed), batch_sampler=self.batches, num_workers=w,
            collate_fn=_Collate(self.scale, self.shift) if self.in_workers else _Collate(),
            pin_memory=self.device.type == "cuda", persistent_workers=w > 0,
            prefetch_factor=4 if w else None, worker_init_fn=_one_thread if w else None, timeout=timeout if w else 0,
            generator=torch.Generator().manual_seed(seed),  # its base-seed draw leaves the global stream (resume)
        )  # fmt: skip
        self.timeout = timeout
        self.epoch, self.skipped, self.wait_s = 0, 0, 0.0
        # yield a batch whose every file was bad as an empty one, so that the caller's step count stays
        # the batch index (a training loop whose step picks the batch's resolution needs that)
        self.keep_empty = False
        self.loader.dataset.transform(self.size)  # built (and timm imported) once here: forked workers inherit it

    def close(self) -> None:
        """Stop the worker processes now (they also stop when the loader is garbage-collected)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None

    @property
    def resolution_of(self) -> Callable[[int], int | tuple[int, ...]]:
        return self.batches.resolution_of

    @resolution_of.setter
    def resolution_of(self, fn: Callable[[int], int | tuple[int, ...]]) -> None:
        self.batches.resolution_of = fn

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the current epoch from `start_batch` (a resumed run starts mid-epoch)."""
        self.batches.epoch, self.batches.start = self.epoch, start_batch
        self.skipped, self.wait_s = 0, 0.0
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                x, y, bad = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:  # a worker died or hung past the timeout
                raise UserError(_worker_failure(exc, self.timeout)) from None
            self.wait_s += time.perf_counter() - t0
            if bad:
                self._bad(bad)
            if len(y):
                yield self.finish(x, y, start_batch)
            elif self.train and self.world > 1:
                # every other rank steps (and all-reduces) on this batch: a rank that skipped it would desync
                raise UserError(
                    f"every image of batch {start_batch} on rank {self.rank} of {self.world} was undecodable "
                    f"({len(bad)} files, warned above): a multi-rank run cannot skip a whole batch on one rank; "
                    "replace or delete those files"
                )
            elif self.keep_empty:  # every file of the batch was bad: the caller still counts the step
                yield x, y
            start_batch += 1

    def finish(self, x: Any, y: torch.Tensor, batch_index: int) -> tuple[Any, torch.Tensor]:
        """A uint8 batch from the workers, on the device and normalised (subclasses add batch-level steps);
        a batch at several sizes becomes a `MultiRes`."""
        if isinstance(x, tuple):
            return MultiRes((v.shape[-1], self.to_device(v)) for v in x), y.to(self.device, non_blocking=True)
        return self.to_device(x), y.to(self.device, non_blocking=True)

    def _bad(self, messages: list[str]) -> None:
        if self.strict:
            raise UserError(f"{messages[0]}; replace or delete that file (or drop --strict-images to skip it)")
        self.skipped += len(messages)
        for m in messages:
            log.warning("%s: skipped", m)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if not self.in_workers:
            x = _normalise(x, self.scale, self.shift)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def decode_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image of this loader (one pass, no shuffle expected) as uint8 NCHW on the CPU, with labels."""
        self.batches.epoch, self.batches.start = self.epoch, 0
        xs, ys = [], []
        try:
            for x, y, bad in self.loader:
                if bad:
                    self._bad(bad)
                xs.append(x)
                ys.append(y)
        except RuntimeError as exc:
            raise UserError(_worker_failure(exc, self.timeout)) from None
        xs = [x for x in xs if len(x)]
        if not xs:
            raise UserError("no image of the split could be decoded; check the dataset")
        return torch.cat(xs), torch.cat(ys)


def default_workers() -> int:
    """Worker processes per rank: the free cores divided among this node's ranks (at least 1)."""
    from core.runtime import free_cores

    return max(1, free_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _worker_failure(exc: RuntimeError, timeout: float) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if "timed out" in text:
        return (
            f"a data-loader worker sent no batch for {timeout:g} s ({text}); the disk or a worker is stuck: "
            "check the data's storage, or raise --loader-timeout"
        )
    return f"a data-loader worker failed ({text}); lower --workers if memory is short, then rerun with --resume auto"


def decode_split(
    data: Any, size: int, opt: TransformOptions, workers: int = -1, timeout: float = 300.0, strict: bool = False
) -> Any:
    """A split of the worker path decoded once with the evaluation transform at `size`: an in-memory `ImageSet`.

    Search-split scoring and BN recalibration read it many times (once per candidate), so it is
    decoded once per resolution and kept as uint8, not decoded again for every candidate.
    """
    loader = FolderLoader(data, 256, mean=(0.0,) * 3, std=(1.0,) * 3, transform=opt, workers=workers,
                          timeout=timeout, strict=strict, size=size, raw=True)  # fmt: skip
    try:
        images, labels = loader.decode_all()
    finally:
        loader.close()
    if loader.skipped:
        log.warning("%d undecodable images left out of a split decoded at %d px", loader.skipped, size)
    return type(data)(images, labels)  # an ImageSet, in memory
