"""Images decoded per batch, for image folders too large to decode into memory (ImageNet at 224 px: ~190 GB).

`LazyImages` stands in for the uint8 tensor `ImageSet.images`: indexing it with a batch of indices
reads those files and decodes them (in a small thread pool) with exactly the eager path's
decode and resize, so a batch is bit-identical to the same rows of the eagerly decoded tensor.
It carries its length, `.shape`, `.dtype`, `.device`, `.to(device)`, `subset(index)` and
`torch.cat` of stores over the same files, which is all that the loaders and trainers use.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.decode import decode_image
from core.errors import UserError
from core.safejson import first_line


def default_threads() -> int:
    """Decode threads per store: min(8, CPU count)."""
    return max(1, min(8, os.cpu_count() or 1))


class FileSource:
    """The image files of one folder tree or zip, their target size, and thread-safe readers.

    A zip archive is opened once per reading thread (a `ZipFile` must not be shared across threads);
    a directory needs no handle. The pool and the handles are rebuilt after pickling.
    """

    def __init__(
        self,
        root: Path,
        names: Sequence[str],
        *,
        is_zip: bool,
        fit: int,
        hw: tuple[int, int],
        threads: int = 0,
    ) -> None:
        self.root, self.names, self.is_zip = Path(root), list(names), is_zip
        self.fit, self.hw = fit, (int(hw[0]), int(hw[1]))
        self.threads = threads or default_threads()
        self._decode: Callable[[bytes, str, int], np.ndarray] = decode_image
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_local", "_pool", "_pool_lock"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def describe(self, row: int) -> str:
        return f"{self.names[row]} (in {self.root})"

    def read(self, row: int) -> bytes:
        name = self.names[row]
        try:
            if not self.is_zip:
                return (self.root / name).read_bytes()
            archive = getattr(self._local, "zip", None)
            if archive is None:
                archive = self._local.zip = zipfile.ZipFile(self.root)
            return archive.read(name)
        except Exception as exc:  # OSError, BadZipFile, zlib.error, KeyError: all a damaged or changed dataset
            raise UserError(
                f"cannot read image {self.describe(row)}: {type(exc).__name__}: {first_line(exc)}; "
                "the dataset changed or is damaged since it was listed: restore or re-extract it"
            ) from None

    def decode(self, row: int) -> np.ndarray:
        """Row `row` as uint8 (3, H, W), checked against the size every image must have."""
        arr = self._decode(self.read(row), self.describe(row), self.fit)
        if arr.shape[:2] != self.hw:
            h, w = self.hw
            raise UserError(
                f"image {self.describe(row)} is {arr.shape[1]}x{arr.shape[0]}, not {w}x{h} like the first "
                "training image; images differ in size: pass --image-size N to resize them"
            )
        return arr.transpose(2, 0, 1)

    def decode_rows(self, rows: list[int]) -> torch.Tensor:
        h, w = self.hw
        out = np.empty((len(rows), 3, h, w), dtype=np.uint8)

        def one(i: int) -> None:
            out[i] = self.decode(rows[i])

        if len(rows) <= 1 or self.threads <= 1:
            for i in range(len(rows)):
                one(i)
        else:
            for _ in self.pool().map(one, range(len(rows))):  # re-raises a worker's UserError here
                pass
        return torch.from_numpy(out)

    def pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lanas-decode")
            return self._pool


class LazyImages:
    """uint8 images (N, 3, H, W) decoded on indexing; a stand-in for `ImageSet.images`.

    `store[index]` (an index tensor on any device, a list, a slice or an int) decodes those rows on
    the CPU and returns them on `store.device`; `store.to(device)` is a view that delivers there, so
    a loader that moves its images to the GPU receives GPU batches without holding the dataset.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, source: FileSource, index: torch.Tensor, *, device: torch.device | str = "cpu") -> None:
        self.source = source
        self.index = torch.as_tensor(index, dtype=torch.int64).cpu()
        self._device = torch.device(device)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), 3, *self.source.hw))

    @property
    def device(self) -> torch.device:
        return self._device

    def __len__(self) -> int:
        return len(self.index)

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def __repr__(self) -> str:
        return f"LazyImages(shape={tuple(self.shape)}, root={str(self.source.root)!r}, device={self._device})"

    def to(self, device: torch.device | str | None = None, *args: Any, **kwargs: Any) -> LazyImages:
        """The same images delivered on `device` (decoding stays on the CPU); dtype changes are refused."""
        target = kwargs.pop("device", device)
        if isinstance(target, torch.dtype) or args or "dtype" in kwargs:
            raise TypeError("LazyImages only moves between devices; convert the decoded batch instead")
        return self if target is None else LazyImages(self.source, self.index, device=target)

    def cpu(self) -> LazyImages:
        return self.to("cpu")

    def subset(self, index: torch.Tensor | Sequence[int] | slice) -> LazyImages:
        """The rows `index` of this store, still undecoded."""
        return LazyImages(self.source, self.index[_cpu_key(index)], device=self._device)

    def __getitem__(self, key: torch.Tensor | Sequence[int] | slice | int) -> torch.Tensor:
        rows = self.index[_cpu_key(key)]
        batch = self.source.decode_rows(rows.view(-1).tolist())
        if rows.ndim == 0:  # an int key: one image (3, H, W), as a tensor would give
            batch = batch[0]
        return batch if self._device.type == "cpu" else batch.to(self._device)

    @classmethod
    def __torch_function__(
        cls, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> LazyImages:
        """`torch.cat` along dim 0 of stores over the same files (train + search); nothing else."""
        kwargs = kwargs or {}
        if func is torch.cat:
            parts = list(args[0] if args else kwargs.get("tensors", ()))
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if (
                dim == 0
                and parts
                and all(isinstance(p, LazyImages) and p.source is parts[0].source for p in parts)
                and len({p.device for p in parts}) == 1
            ):
                return LazyImages(parts[0].source, torch.cat([p.index for p in parts]), device=parts[0].device)
        name = getattr(func, "__name__", str(func))
        raise TypeError(
            f"torch.{name} is not supported on lazily decoded images (only torch.cat along dim 0 of one "
            "dataset's splits); index the store to decode a batch first"
        )


def _cpu_key(key: Any) -> Any:
    if isinstance(key, torch.Tensor):
        return key.cpu()
    if isinstance(key, np.ndarray):
        return torch.from_numpy(key)
    if isinstance(key, list | tuple):
        return torch.as_tensor(key) if len(key) else torch.zeros(0, dtype=torch.int64)
    return key
