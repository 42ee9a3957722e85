"""bench-data: images/s of the worker path (`core.data.folder.FolderLoader`) against the standard loader.

The data: a folder of real-photo JPEGs at ImageNet's typical size (`bench.photos`, made from the one
photograph an installed package ships). For the training transform (RandomResizedCrop, flip,
RandAugment m9) and the evaluation transform (resize to size / 0.875, centre crop), at each worker
count and resolution, it times one epoch of our loader and of the reference built the usual way:
torchvision `ImageFolder` + timm `create_transform` + `DataLoader`, same workers (one thread each),
batch, prefetch and persistent workers. Each loader first runs one untimed epoch (worker start-up),
then `--repeats` timed epochs, interleaved in rotating order; the medians: `ratio` = ours / reference
images/s. Both end in normalised float batches on the CPU. Ours runs with its defaults (reduced-size
JPEG decoding in the evaluation transform only), with that decoding off (`full_decode_img_s`) and, for
the training transform, with it on for the random crops too (`draft_img_s`): `draft_gain` = with /
without says what that decoding is worth.

It also runs a short training loop of a tiny network on our loader and reports the data-wait
fraction: the share of the loop's time spent waiting for the next batch.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.photos import make_photo_folder
from core.config import opt
from core.data import load_data
from core.data.folder import FolderLoader, TransformOptions
from core.errors import UserError

log = logging.getLogger(__name__)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class BenchDataConfig:
    """Options of `run.py bench-data`."""

    workers: list[int] = opt([1, 2], "DataLoader worker counts")
    sizes: list[int] = opt([160, 224], "crop resolutions")
    per_class: int = opt(64, "training JPEGs per class (4 classes) in the generated folder")
    batch_size: int = opt(32, "images per batch")
    repeats: int = opt(3, "timed epochs per loader and setting (interleaved; the median is kept)")
    train_steps: int = opt(24, "steps of the data-wait training loop")
    data_dir: str = opt("", "use this folder (train/<class>/, val/<class>/) instead of generating one")
    json: str = opt("", "write the results to this JSON file")
    seed: int = opt(0, "seed of the generated images and the loaders")

    def __post_init__(self) -> None:
        if min(self.workers, default=0) < 1 or not self.sizes or min(self.sizes) < 8:
            raise UserError("--workers takes counts >= 1 and --sizes resolutions >= 8")
        if self.per_class < 8 or self.batch_size < 1 or self.repeats < 1 or self.train_steps < 2:
            raise UserError("--per-class >= 8, --batch-size >= 1, --repeats >= 1 and --train-steps >= 2")


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def reference_loader(root: Path, size: int, train: bool, workers: int, batch: int, seed: int) -> Any:
    """torchvision ImageFolder + timm create_transform + DataLoader, as a timm training script builds it."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    tf = create_transform(size, is_training=train, auto_augment="rand-m9-n2-mstd0.5" if train else None,
                          crop_pct=0.875)  # fmt: skip
    ds = ImageFolder(str(root / "train"), transform=tf)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=train, num_workers=workers, worker_init_fn=_one_thread, prefetch_factor=4,
        persistent_workers=True, drop_last=train, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def _ours(data: Any, size: int, train: bool, workers: int, batch: int, seed: int, draft: str = "eval") -> FolderLoader:
    """Our loader; `draft` as `--jpeg-draft`: eval (the default), all (the training crops too) or off."""
    opt = TransformOptions(policy="randaugment" if train else "off", draft=draft != "off", draft_train=draft == "all")
    return FolderLoader(data.train, batch, mean=data.mean, std=data.std, train=train, shuffle=train,
                        drop_last=train, transform=opt, seed=seed, workers=workers, size=size)  # fmt: skip


def _epoch_rate(loader: Any, epoch: int) -> float:
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch[1])
    return n / (time.perf_counter() - t0)


def data_wait(data: Any, size: int, workers: int, batch: int, steps: int, seed: int) -> dict[str, Any]:
    """The share of a short training loop's time spent waiting for batches (tiny network, CPU)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, len(data.classes)),
    )  # fmt: skip
    sgd = torch.optim.SGD(net.parameters(), lr=0.01)
    loader = _ours(data, size, True, workers, batch, seed)
    _epoch_rate(loader, 0)  # start the workers
    wait = compute = 0.0
    done, epoch = 0, 1
    while done < steps:
        loader.set_epoch(epoch)
        it = iter(loader)
        while done < steps:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            sgd.zero_grad()
            loss.backward()
            sgd.step()
            wait, compute, done = wait + t1 - t0, compute + time.perf_counter() - t1, done + 1
        epoch += 1
    loader.close()
    return {"size": size, "workers": workers, "steps": steps, "data_wait": wait / (wait + compute),
            "step_ms": 1000 * compute / steps}  # fmt: skip


def main(cfg: BenchDataConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.data_dir:
            root = Path(cfg.data_dir)
        else:
            root = make_photo_folder(Path(tmp) / "photos", cfg.per_class, 4, seed=cfg.seed)
        data = load_data("imagefolder", str(root), search_size=1, loader="workers")
        data.train = data.train.concat(data.search)  # time every training image
        files = sorted((root / "train").rglob("*"))
        sizes_kb = [f.stat().st_size / 1024 for f in files if f.is_file()]
        out: dict[str, Any] = {
            "images": len(data.train), "mean_jpeg_kb": statistics.fmean(sizes_kb), "batch": cfg.batch_size,
            "repeats": cfg.repeats, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "results": [],
        }  # fmt: skip
        for train in (True, False):
            for size in cfg.sizes:
                for w in cfg.workers:
                    out["results"].append(_compare(data, root, size, train, w, cfg))
                    log.info("%s", json.dumps(out["results"][-1]))
        out["data_wait"] = data_wait(data, max(cfg.sizes), max(cfg.workers), cfg.batch_size, cfg.train_steps,
                                     cfg.seed)  # fmt: skip
    _print(out)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(out, indent=2))
    return {"json": cfg.json or None, "min_ratio": min(r["ratio"] for r in out["results"])}


def _compare(data: Any, root: Path, size: int, train: bool, w: int, cfg: BenchDataConfig) -> dict[str, Any]:
    loaders = {
        "ours": _ours(data, size, train, w, cfg.batch_size, cfg.seed),
        "reference": reference_loader(root, size, train, w, cfg.batch_size, cfg.seed),
        "ours_full_decode": _ours(data, size, train, w, cfg.batch_size, cfg.seed, draft="off"),
    }
    if train:  # reduced-size decoding is off for training crops by default: measure what it would give
        loaders["ours_draft"] = _ours(data, size, train, w, cfg.batch_size, cfg.seed, draft="all")
    for loader in loaders.values():
        _epoch_rate(loader, 0)  # untimed: worker start-up
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    names = list(loaders)
    for r in range(cfg.repeats):  # interleaved, in rotating order: a load change hits all alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(_epoch_rate(loaders[name], r + 1))
    for loader in loaders.values():
        if hasattr(loader, "close"):
            loader.close()
    a, b, c = (statistics.median(rates[k]) for k in names[:3])
    d = statistics.median(rates["ours_draft"]) if train else a  # with reduced-size decoding
    return {
        "transform": "train" if train else "eval", "size": size, "workers": w, "ours_img_s": round(a, 1),
        "reference_img_s": round(b, 1), "ratio": round(a / b, 3), "full_decode_img_s": round(c, 1),
        "draft_img_s": round(d, 1), "draft_gain": round(d / c, 3), "runs": rates,
    }  # fmt: skip


def _print(out: dict[str, Any]) -> None:
    """The results as a table in the log."""
    log.info(
        "%d JPEGs, mean %.0f kB, batch %d, %d cores", out["images"], out["mean_jpeg_kb"], out["batch"], out["cores"]
    )
    log.info("%9s %5s %7s %10s %10s %6s %11s %6s", "transform", "size", "workers", "ours img/s", "ref img/s",
             "ratio", "full-decode", "draft")  # fmt: skip
    for r in out["results"]:
        row = (r["ours_img_s"], r["reference_img_s"], r["ratio"], r["full_decode_img_s"], r["draft_gain"])
        log.info("%9s %5d %7d %10.1f %10.1f %6.3f %11.1f %6.3f", r["transform"], r["size"], r["workers"], *row)
    d = out["data_wait"]
    log.info("data wait of a tiny-network training loop (%d workers, %d px): %.1f%%", d["workers"], d["size"],
             100 * d["data_wait"])  # fmt: skip
