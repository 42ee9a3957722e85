"""Datasets for every stage: CIFAR-10/100, image folders (or a zip of one), and the embedded subset.

Every dataset is decoded once into uint8 tensors (N, 3, H, W) and cached on disk, which is what
makes CIFAR-size training fast (see `core.data.loader` for the batched GPU/CPU augmentation).
An image folder whose decoded training split would exceed `LANAS_EAGER_MAX_GB` (4 GiB by default;
ImageNet is ~190 GB at 224 px) is instead decoded per batch (`core.data.lazy.LazyImages`), uncached.
A search split is carved out of the training images by a fixed seed, so architecture estimates
never touch the test split.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.decode import decode_image, failure_reason
from core.data.folder import DEFAULT_SIZE, FileList
from core.data.lazy import FileSource, LazyImages
from core.errors import UserError

log = logging.getLogger(__name__)

MINI_ZIP = Path(__file__).with_name("cifar10_mini.zip")
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LOADERS = ("auto", "memory", "workers")
AUTO_WORKERS_ABOVE = 64  # auto: image folders with larger images go through DataLoader workers
EAGER_MAX_GB = 4.0  # decoded training split (GiB) above which an image folder is decoded per batch


@dataclass
class ImageSet:
    """Decoded images as one uint8 tensor (N, 3, H, W) with int64 labels.

    For a large image folder `images` is a `LazyImages`, which decodes the rows it is indexed with.
    """

    images: torch.Tensor | LazyImages | FileList
    labels: torch.Tensor

    @property
    def on_workers(self) -> bool:
        """Whether these images are decoded per batch in DataLoader workers (`core.data.folder`)."""
        return isinstance(self.images, FileList)

    def concat(self, other: ImageSet) -> ImageSet:
        """This set followed by `other` (two splits of one dataset)."""
        if isinstance(self.images, FileList) and isinstance(other.images, FileList):
            return ImageSet(self.images.cat(other.images), torch.cat([self.labels, other.labels]))
        return ImageSet(torch.cat([self.images, other.images]), torch.cat([self.labels, other.labels]))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSet:
        if isinstance(self.images, LazyImages | FileList):
            return ImageSet(self.images.subset(index), self.labels[index])
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class DataSplits:
    """Train (minus the search split), search (carved from train) and test images."""

    train: ImageSet
    search: ImageSet
    test: ImageSet
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def load_data_for(cfg: Any) -> DataSplits:
    """`load_data` with a stage config's data options (dataset, data_dir, search_size, split_seed, ...)."""
    return load_data(
        cfg.dataset,
        cfg.data_dir,
        search_size=cfg.search_size,
        split_seed=getattr(cfg, "split_seed", 0),
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        download=cfg.download,
        loader=getattr(cfg, "loader", "memory"),
    )


def load_data(
    dataset: str,
    data_dir: str = "",
    *,
    search_size: int = 1000,
    split_seed: int = 0,
    num_classes: int = 0,
    image_size: int = 0,
    download: bool = False,
    loader: str = "memory",
) -> DataSplits:
    """Load `dataset` and carve the search split; `UserError` with the fix when it is unusable.

    `loader` picks the input path of an image folder (or of the embedded set's tree): `memory`
    decodes it once into uint8 tensors (`TensorLoader`), `workers` only lists its files, to be
    decoded and augmented per batch in DataLoader workers (`core.data.folder.FolderLoader`), and
    `auto` takes `workers` for an image folder whose images are larger than 64 px, else `memory`.
    CIFAR from torchvision and the synthetic set always load into memory.
    """
    if loader not in LOADERS:
        raise UserError(f"--loader {loader!r}: choose one of {', '.join(LOADERS)}")
    if dataset in ("cifar10-mini", "imagefolder") and loader != "memory":
        root = str(MINI_ZIP) if dataset == "cifar10-mini" else data_dir
        if dataset == "imagefolder" and not data_dir:
            raise UserError("--dataset imagefolder needs --data-dir ROOT holding train/<class>/ and val/ or test/")
        listed = _list_folder_tree(root, image_size, force=loader == "workers")
        if listed is not None:
            train, test, classes = listed
            if num_classes and num_classes != len(classes):
                raise UserError(
                    f"--num-classes {num_classes} does not match the {len(classes)} classes found in {dataset} "
                    f"{data_dir}; fix --num-classes (or 0 to take it from the data)"
                )
            mean, std = (CIFAR_MEAN, CIFAR_STD) if dataset == "cifar10-mini" else (IMAGENET_MEAN, IMAGENET_STD)
            train, search = carve_search_split(train, search_size, split_seed)
            log.info(
                "%s: %d training images, decoded per batch in DataLoader workers at %d px (the worker path)",
                root, len(train) + len(search), train.images.size,
            )  # fmt: skip
            return DataSplits(train, search, test, classes, mean, std)
    if dataset == "cifar10-mini":
        train, test, classes = _load_folder_tree(str(MINI_ZIP), image_size)
        mean, std = CIFAR_MEAN, CIFAR_STD
    elif dataset in ("cifar10", "cifar100"):
        train, test, classes = _load_torchvision_cifar(dataset, data_dir, download, image_size)
        mean, std = CIFAR_MEAN, CIFAR_STD
    elif dataset == "imagefolder":
        if not data_dir:
            raise UserError("--dataset imagefolder needs --data-dir ROOT holding train/<class>/ and val/ or test/")
        train, test, classes = _load_folder_tree(data_dir, image_size, lazy_ok=True)
        small = train.images.shape[-1] <= 64
        mean, std = (CIFAR_MEAN, CIFAR_STD) if small else (IMAGENET_MEAN, IMAGENET_STD)
    elif dataset == "synthetic":
        train, test, classes = _synthetic(image_size or 32)
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    else:
        raise UserError(f"unknown dataset {dataset!r}: use cifar10-mini, cifar10, cifar100, imagefolder or synthetic")
    if num_classes and num_classes != len(classes):
        raise UserError(
            f"--num-classes {num_classes} does not match the {len(classes)} classes found in {dataset} "
            f"{data_dir}; fix --num-classes (or 0 to take it from the data)"
        )
    train, search = carve_search_split(train, search_size, split_seed)
    return DataSplits(train, search, test, classes, mean, std)


def test_images_not_in(source: str | Path, embedded: str | Path = MINI_ZIP) -> ImageSet:
    """The test images of the tree `source` that `embedded`'s test split lacks, byte for byte.

    The embedded subset copies its files from CIFAR-10 unchanged, so comparing file bytes finds the
    images it holds. With the CIFAR-10 JPEG zip as `source` this yields the other 9,000 test
    images: a larger, independent test set for the models the embedded demo retrains.
    """
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass the CIFAR-10 JPEG zip (or a folder of it)")
    files, _, test_dir, classes = _open_tree(path)
    mine, _, my_test, my_classes = _open_tree(Path(embedded))
    if classes != my_classes:
        raise UserError(f"{path} has classes {classes}, not the embedded set's {my_classes}")
    mine_items = _items(mine, my_test, my_classes)
    held = {hashlib.sha256(_read(mine, name)).digest() for name, _ in mine_items}
    items = [it for it in _items(files, test_dir, classes) if hashlib.sha256(_read(files, it[0])).digest() not in held]
    if not items:
        raise UserError(f"every test image of {path} is in the embedded set: nothing held out")
    size = decode_image(_read(mine, mine_items[0][0]), mine_items[0][0], 0).shape[0]  # the embedded images' size
    return _decode_items(files, items, size, test_dir)


def carve_search_split(train: ImageSet, search_size: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split `search_size` images off the training set, by a fixed seed: same seed, same split."""
    if search_size >= len(train):
        raise UserError(f"--search-size {search_size} leaves no training images (only {len(train)}); lower it")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(train)))
    search_idx, train_idx = perm[:search_size].sort().values, perm[search_size:].sort().values
    return train.subset(train_idx), train.subset(search_idx)


# ---- image folders and zips ---------------------------------------------------------------------


def _load_folder_tree(root: str, image_size: int, *, lazy_ok: bool = False) -> tuple[ImageSet, ImageSet, list[str]]:
    """`<root>/train/<class>/*` and `<root>/{val,test}/<class>/*`, from a directory or a zip file.

    With `lazy_ok`, a tree whose decoded training split would exceed `LANAS_EAGER_MAX_GB` is returned
    undecoded (`LazyImages`: decoded per batch, no disk cache); otherwise it is decoded once and cached.
    """
    path = Path(root)
    if not path.exists():
        raise UserError(f"dataset path {path} does not exist; pass --data-dir pointing at a folder or a zip")
    tree = None
    if lazy_ok:
        tree = _open_tree(path)
        lazy = _lazy_if_large(path, image_size, *tree)
        if lazy is not None:
            return lazy
    cache = _cache_file(path, image_size)
    if cache is not None and cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            return ImageSet(*blob["train"]), ImageSet(*blob["test"]), list(blob["classes"])
        except Exception:  # a damaged cache is rebuilt, never trusted
            log.warning("decoded-data cache %s is unreadable; rebuilding it", cache)
    files, train_dir, test_dir, classes = tree or _open_tree(path)
    train = _decode_split(files, train_dir, classes, image_size)
    test = _decode_split(files, test_dir, classes, image_size)
    if cache is not None:
        _write_cache(cache, train, test, classes)
    return train, test, classes


def _list_folder_tree(root: str, image_size: int, *, force: bool) -> tuple[ImageSet, ImageSet, list[str]] | None:
    """The tree's files, undecoded (`FileList` at `image_size`, 224 when 0), or None to decode it into memory.

    Without `force`, a tree whose first training image is at most 64 px a side returns None.
    """
    path = Path(root)
    if not path.exists():
        raise UserError(f"dataset path {path} does not exist; pass --data-dir pointing at a folder or a zip")
    files, train_dir, test_dir, classes = _open_tree(path)
    train_items = _items(files, train_dir, classes)
    test_items = _items(files, test_dir, classes)
    if not train_items or not test_items:
        raise UserError(f"no images under {train_dir if not train_items else test_dir}/")
    if not force:
        w, h = _header_size(_read(files, train_items[0][0]), train_items[0][0])
        if max(w, h) <= AUTO_WORKERS_ABOVE:
            return None
    size = image_size or DEFAULT_SIZE
    names = [name for name, _ in train_items + test_items]
    source = FileSource(path, names, is_zip=isinstance(files, _ZipTree), fit=size, hw=(size, size), threads=1)
    n = len(train_items)

    def labels(items: list[tuple[str, int]]) -> torch.Tensor:
        return torch.tensor([label for _, label in items], dtype=torch.int64)

    train = ImageSet(FileList(source, torch.arange(n), size), labels(train_items))
    test = ImageSet(FileList(source, torch.arange(n, n + len(test_items)), size), labels(test_items))
    return train, test, classes


def _open_tree(path: Path) -> tuple[_DirTree | _ZipTree, str, str, list[str]]:
    """The tree's reader, train and test folder names and sorted classes, or `UserError` with the fix."""
    files = _ZipTree(path) if path.is_file() else _DirTree(path)
    train_dir = files.find_split(("train",))
    test_dir = files.find_split(("val", "test"))
    if train_dir is None or test_dir is None:
        raise UserError(f"{path} must hold train/<class>/ and val/<class>/ (or test/<class>/) image folders")
    classes = sorted(files.classes(train_dir))
    if not classes:
        raise UserError(f"{path}: no class folders under {train_dir}")
    test_classes = sorted(files.classes(test_dir))
    if test_classes != classes:
        raise UserError(f"{path}: the class folders of {train_dir} and {test_dir} differ")
    return files, train_dir, test_dir, classes


def _eager_max_bytes() -> float:
    raw = os.environ.get("LANAS_EAGER_MAX_GB", "")
    try:
        return float(raw or EAGER_MAX_GB) * 2**30
    except ValueError:
        raise UserError(f"LANAS_EAGER_MAX_GB={raw!r} is not a number of GiB; set it to e.g. 4 or unset it") from None


def _lazy_if_large(
    path: Path, image_size: int, files: _DirTree | _ZipTree, train_dir: str, test_dir: str, classes: list[str]
) -> tuple[ImageSet, ImageSet, list[str]] | None:
    """Undecoded train and test sets when the decoded train split would pass the limit, else None.

    The size is `image_size`, or with 0 the first training image's own (read from its header, as the
    eager path keeps every image's size and requires them all to agree); each batch checks the rest.
    """
    train_items = _items(files, train_dir, classes)
    if not train_items:
        raise UserError(f"no images under {train_dir}/")
    if image_size:
        h = w = image_size
    else:
        w, h = _header_size(_read(files, train_items[0][0]), train_items[0][0])
    need, limit = len(train_items) * 3 * h * w, _eager_max_bytes()
    if need <= limit:
        return None
    test_items = _items(files, test_dir, classes)
    if not test_items:
        raise UserError(f"no images under {test_dir}/")
    names = [name for name, _ in train_items + test_items]
    source = FileSource(path, names, is_zip=isinstance(files, _ZipTree), fit=image_size, hw=(h, w))
    log.info(
        "%s: %d training images at %dx%d would take %.3g GiB decoded, over the %.3g GiB limit "
        "(LANAS_EAGER_MAX_GB); images are decoded per batch (%d threads), not cached",
        path, len(train_items), w, h, need / 2**30, limit / 2**30, source.threads,
    )  # fmt: skip
    n = len(train_items)

    def labels(items: list[tuple[str, int]]) -> torch.Tensor:
        return torch.tensor([label for _, label in items], dtype=torch.int64)

    train = ImageSet(LazyImages(source, torch.arange(n)), labels(train_items))
    test = ImageSet(LazyImages(source, torch.arange(n, n + len(test_items))), labels(test_items))
    return train, test, classes


def _items(files: _DirTree | _ZipTree, split: str, classes: list[str]) -> list[tuple[str, int]]:
    """(file name, label) of every image of `split`, classes in order, names sorted within a class.

    A class folder without images is an error: its label would silently never be trained or tested.
    """
    items = []
    for label, cls in enumerate(classes):
        names = files.images(split, cls)
        if not names:
            raise UserError(
                f"class folder {split}/{cls} holds no images ({', '.join(IMAGE_EXT)}); "
                "add its images or delete that class folder from every split"
            )
        items.extend((name, label) for name in names)
    return items


def _read(files: _DirTree | _ZipTree, name: str) -> bytes:
    try:
        return files.read(name)
    except Exception as exc:  # an unreadable file is reported like an undecodable one
        raise UserError(f"cannot decode image {name}: {failure_reason(exc)}; replace or delete that file") from None


def _header_size(raw: bytes, name: str) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding the pixels."""
    from PIL import Image

    try:
        return Image.open(io.BytesIO(raw)).size
    except Exception as exc:
        raise UserError(f"cannot decode image {name}: {failure_reason(exc)}; replace or delete that file") from None


class _DirTree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def find_split(self, names: tuple[str, ...]) -> str | None:
        for base in [self.root, *sorted(p for p in self.root.iterdir() if p.is_dir())]:
            for name in names:
                if (base / name).is_dir():
                    return str((base / name).relative_to(self.root))
        return None

    def classes(self, split: str) -> list[str]:
        return [p.name for p in (self.root / split).iterdir() if p.is_dir()]

    def images(self, split: str, cls: str) -> list[str]:
        folder = self.root / split / cls
        return sorted(str(p.relative_to(self.root)) for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


class _ZipTree:
    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"{path} is not a readable zip file ({exc})") from None
        self.names = [n for n in self.zip.namelist() if n.lower().endswith(IMAGE_EXT)]
        self.dirs = [n.rstrip("/") for n in self.zip.namelist() if n.endswith("/")]  # empty class folders too

    def find_split(self, names: tuple[str, ...]) -> str | None:
        prefixes = sorted({"/".join(n.split("/")[:-2]) for n in self.names})
        for name in names:
            for prefix in prefixes:
                if prefix == name or prefix.endswith("/" + name):
                    return prefix
        return None

    def classes(self, split: str) -> list[str]:
        found = {n.split("/")[-2] for n in self.names if n.startswith(split + "/")}
        depth = split.count("/") + 1  # a folder entry right under the split (one with no images yet)
        found |= {d.split("/")[-1] for d in self.dirs if d.startswith(split + "/") and d.count("/") == depth}
        return sorted(found)

    def images(self, split: str, cls: str) -> list[str]:
        return sorted(n for n in self.names if n.startswith(f"{split}/{cls}/"))

    def read(self, name: str) -> bytes:
        return self.zip.read(name)


def _decode_split(files: _DirTree | _ZipTree, split: str, classes: list[str], image_size: int) -> ImageSet:
    items = _items(files, split, classes)
    if not items:
        raise UserError(f"no images under {split}/")
    return _decode_items(files, items, image_size, split)


def _decode_items(files: _DirTree | _ZipTree, items: list[tuple[str, int]], image_size: int, split: str) -> ImageSet:
    """Decode (file name, label) `items` of `split` into one uint8 NCHW `ImageSet`."""
    from tqdm import tqdm

    arrays, labels = [], []
    quiet = log.getEffectiveLevel() > logging.INFO or not os.isatty(2)
    for name, label in tqdm(items, desc=f"decoding {split}", disable=quiet, leave=False):
        arrays.append(decode_image(_read(files, name), name, image_size))
        labels.append(label)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise UserError(f"images under {split}/ differ in size; pass --image-size N to resize them")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64))


def _cache_file(path: Path, image_size: int) -> Path | None:
    base = Path(os.environ.get("LANAS_CACHE", Path.home() / ".cache" / "lanas-toolkit"))
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{image_size}|v1"
    return base / f"decoded-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def _write_cache(cache: Path, train: ImageSet, test: ImageSet, classes: list[str]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        blob = {"train": [train.images, train.labels], "test": [test.images, test.labels], "classes": classes}
        torch.save(blob, tmp)
        os.replace(tmp, cache)
    except OSError as exc:  # the cache is an optimisation: never fail the run for it
        log.warning("could not write the decoded-data cache %s: %s", cache, exc)


# ---- torchvision CIFAR and synthetic data --------------------------------------------------------


def _load_torchvision_cifar(name: str, data_dir: str, download: bool, image_size: int) -> tuple:
    from torchvision import datasets

    if not data_dir:
        raise UserError(f"--dataset {name} needs --data-dir DIR (torchvision's format; add --download to fetch it)")
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    try:
        train = cls(data_dir, train=True, download=download)
        test = cls(data_dir, train=False, download=download)
    except RuntimeError:
        raise UserError(
            f"{name} not found at {Path(data_dir) / folder}; put torchvision's {folder} there or add --download"
        ) from None
    if image_size and image_size != 32:
        raise UserError(f"--image-size {image_size}: {name} images are 32x32; use 0 or 32")

    def to_set(ds: object) -> ImageSet:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # type: ignore[attr-defined]
        return ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64))  # type: ignore[attr-defined]

    return to_set(train), to_set(test), list(train.classes)


def _synthetic(size: int, n_train: int = 512, n_test: int = 128, classes: int = 10) -> tuple:
    """Class-dependent colour blobs: learnable in a few steps, for smoke tests without data."""
    gen = torch.Generator().manual_seed(1234)

    def make(n: int) -> ImageSet:
        labels = torch.arange(n) % classes
        base = (labels.float() / classes * 255).view(n, 1, 1, 1).expand(n, 3, size, size)
        noise = torch.randint(0, 64, (n, 3, size, size), generator=gen)
        return ImageSet((base * 0.75 + noise).clamp(0, 255).to(torch.uint8), labels)

    return make(n_train), make(n_test), [f"class{i}" for i in range(classes)]
