"""bench-gpu: the measurements a GPU node needs and a CPU machine cannot make.

Parts (`--parts`, comma-separated), each appended to the `--json` file as soon as it ends:

- `amp`: 50 supernet training steps in fp32, bf16 and fp16 (with the grad scaler) from the same
  initial weights, on the same real batches and the same sampled subnets. The losses must stay
  finite; the first step's loss (same weights, same batch: pure rounding) must be within
  `AMP_STEP0_TOL` of fp32's, and the mean loss over the 50 steps within `AMP_MEAN_TOL`.
- `throughput`: training images/s (forward, backward, SGD step; bf16 autocast, channels-last, random
  input already on the device) of the largest and the EfficientNet-B0 MBConv subnet at 224 px, run
  through the supernet and built standalone, and of timm's `efficientnet_b0`; eager and, with
  `--compile`, under `torch.compile`. Ratios: supernet / standalone step time (target <= 1.10),
  standalone / timm images/s (target >= 0.9). MFU = 3 x forward FLOPs (2 x MACs counted by the
  space) x images/s over the device's dense bf16 peak.
- `data`: a `torch.utils.data.DataLoader` over an image folder of full-size JPEGs with timm's
  ImageNet training transform (RandomResizedCrop 224, flip, RandAugment m9), one thread per worker,
  by worker count: the images/s one GPU's input path delivers. The JPEGs are made from the embedded
  CIFAR-10 images, upscaled to ImageNet's typical sizes with noise added so that they do not
  compress unrealistically well.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.config import opt
from core.errors import UserError
from supernet.spaces.base import make_space

log = logging.getLogger(__name__)

AMP_STEP0_TOL = 0.02  # relative: one forward of the same weights on the same batch
AMP_MEAN_TOL = 0.05  # relative: mean loss over the 50 steps (trajectories drift apart under SGD)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 FLOP/s by device name


@dataclass
class BenchGpuConfig:
    """Options of `run.py bench-gpu`."""

    parts: str = opt("amp,throughput,data", "comma-separated parts: amp, throughput, data")
    batch_size: int = opt(256, "images per training step in the throughput part")
    steps: int = opt(20, "timed steps per network in the throughput part")
    amp_steps: int = opt(50, "training steps per precision in the amp part")
    compile: bool = opt(False, "also time the networks under torch.compile")
    networks: list[str] = opt([], "throughput part: only these networks (default all), e.g. b0_standalone")
    workers: list[int] = opt([1, 4, 8, 14], "data-loader worker counts of the data part")
    images: int = opt(2000, "JPEGs made for the data part")
    json: str = opt("", "append each part's results to this JSON file")
    seed: int = opt(0, "seed of the weights, batches and subnets")
    device: str = opt("cuda", "where to run", choices=("cpu", "cuda"))

    def __post_init__(self) -> None:
        unknown = set(self.parts.split(",")) - {"amp", "throughput", "data"}
        if unknown:
            raise UserError(f"--parts: unknown {sorted(unknown)}; use amp, throughput and/or data")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible; use --device cpu for a dry run")
        counts = (self.batch_size, self.steps, self.amp_steps)
        if min(counts) < 1 or self.images < 64 or min(self.workers, default=0) < 0:
            raise UserError("--batch-size and --steps must be >= 1, --images >= 64, --workers >= 0")


def main(cfg: BenchGpuConfig) -> dict[str, Any]:
    """Run the chosen parts; results go to `--json` after each network and each part."""
    path = Path(cfg.json) if cfg.json else None
    results: dict[str, Any] = json.loads(path.read_text()) if path and path.is_file() else {}
    results["device_name"] = torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu"
    results["torch"] = torch.__version__
    dev = torch.device(cfg.device)

    def save() -> None:  # a part cut short by a time limit keeps what it measured
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")

    for part in cfg.parts.split(","):
        if part == "amp":
            results["amp"] = amp_parity(dev, cfg.seed, cfg.amp_steps)
        elif part == "throughput":
            out = results["throughput_compiled" if cfg.compile else "throughput"] = {}
            throughput(out, dev, cfg.batch_size, cfg.steps, cfg.seed, cfg.compile, cfg.networks, save)
        else:
            results["data"] = loader_rates(cfg.workers, cfg.images, cfg.seed)
        save()
    return results


# ---- AMP parity ------------------------------------------------------------------------------
def amp_parity(dev: torch.device, seed: int, steps: int = 50, batch: int = 128) -> dict[str, Any]:
    """Loss curves of the same 50 supernet steps in fp32, bf16 and fp16 (grad scaler), per space."""
    from core.data import load_data

    data = load_data("cifar10-mini", search_size=1000)
    mean = torch.tensor(data.mean, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.std, device=dev).view(1, 3, 1, 1) * 255
    gen = torch.Generator().manual_seed(seed)
    index = [torch.randint(len(data.train), (batch,), generator=gen) for _ in range(steps)]
    out: dict[str, Any] = {"steps": steps, "batch": batch, "step0_tol": AMP_STEP0_TOL, "mean_tol": AMP_MEAN_TOL}
    for name, opts in (("mbconv", {"stem": "cifar"}), ("nasnet", {})):
        space = make_space(name, **opts)
        rng = np.random.default_rng(seed)
        archs = [space.sample(rng) for _ in range(steps)]
        curves = {}
        for amp in ("fp32", "bf16", "fp16"):
            torch.manual_seed(seed)
            net = space.supernet(data.num_classes).to(dev).train()
            sgd = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)
            scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
            losses = []
            for idx, arch in zip(index, archs):
                x = (data.train.images[idx].to(dev).float() - mean) / std
                y = data.train.labels[idx].to(dev)
                with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = F.cross_entropy(net(x, arch), y)
                sgd.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(sgd)
                scaler.update()
                losses.append(loss.item())
            curves[amp] = losses
        ref = curves["fp32"]
        entry: dict[str, Any] = {"loss_fp32": ref}
        for amp in ("bf16", "fp16"):
            cur = curves[amp]
            step0 = abs(cur[0] - ref[0]) / ref[0]
            mean_rel = abs(statistics.fmean(cur) - statistics.fmean(ref)) / statistics.fmean(ref)
            finite = all(math.isfinite(v) for v in cur)
            entry[amp] = {
                "loss": cur,
                "finite": finite,
                "step0_rel": step0,
                "mean_rel": mean_rel,
                "max_step_abs": max(abs(a - b) for a, b in zip(cur, ref)),
                "pass": finite and step0 <= AMP_STEP0_TOL and mean_rel <= AMP_MEAN_TOL,
            }
            log.info("amp %s %s: step-0 rel %.4f, mean rel %.4f, finite %s", name, amp, step0, mean_rel, finite)
        out[name] = entry
    return out


# ---- throughput ------------------------------------------------------------------------------
class _Fixed(nn.Module):
    """The supernet with one architecture bound, so it trains like a plain network."""

    def __init__(self, supernet: nn.Module, arch: object) -> None:
        super().__init__()
        self.supernet, self.arch = supernet, arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.arch)


def _train_rate(model: nn.Module, dev: torch.device, batch: int, size: int, steps: int, warmup: int) -> dict:
    """Training images/s and peak memory of `model` (bf16 autocast, channels-last, SGD)."""
    model = model.to(dev).to(memory_format=torch.channels_last).train()
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(dev)
    warm_s = time.perf_counter() - start
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    sec = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return {"images_s": batch * steps / sec, "step_ms": 1e3 * sec / steps, "warmup_s": warm_s, "peak_gib": peak}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def throughput(
    out: dict[str, Any],
    dev: torch.device,
    batch: int,
    steps: int,
    seed: int,
    compiled: bool,
    only: list[str] | None = None,
    save: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Images/s, ratios and MFU of the largest and B0 subnets (supernet, standalone) and timm's B0."""
    import timm

    torch.backends.cudnn.benchmark = True
    space = make_space("mbconv", stem="imagenet")
    peak = next((v for k, v in PEAK_BF16.items() if k in results_device(dev)), None)
    archs = {"largest": space.largest(), "b0": space.efficientnet_b0()}
    runs: dict[str, tuple[Callable[[], nn.Module], float]] = {}
    for name, arch in archs.items():
        macs = space.cost(arch, 1000).mflops * 1e6
        runs[f"{name}_supernet"] = (lambda a=arch: _Fixed(space.supernet(1000), a), macs)
        runs[f"{name}_standalone"] = (lambda a=arch: space.build(a, 1000), macs)
    b0_macs = runs["b0_standalone"][1]
    runs["timm_efficientnet_b0"] = (lambda: timm.create_model("efficientnet_b0", num_classes=1000), b0_macs)
    out.update(batch=batch, steps=steps, resolution=224, compiled=compiled, peak_flops=peak)
    for name, (make, macs) in runs.items():
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        model = make()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        if compiled:
            model = torch.compile(model)
        rate = _train_rate(model, dev, batch, 224, steps, warmup=3 if compiled else 5)
        rate.update(macs_m=macs / 1e6, params_m=params)
        if peak:
            rate["mfu"] = 3 * 2 * macs * rate["images_s"] / peak
        out[name] = rate
        save()
        log.info("%s%s: %.0f images/s, MFU %.3f", name, " (compiled)" if compiled else "", rate["images_s"],
                 rate.get("mfu", float("nan")))  # fmt: skip
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    for name in archs:
        out[f"{name}_supernet_over_standalone_time"] = (
            out[f"{name}_standalone"]["images_s"] / out[f"{name}_supernet"]["images_s"]
        )
    out["b0_standalone_over_timm"] = out["b0_standalone"]["images_s"] / out["timm_efficientnet_b0"]["images_s"]
    return out


def results_device(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


# ---- input path ------------------------------------------------------------------------------
def make_jpeg_folder(root: Path, n: int, seed: int) -> Path:
    """`n` full-size JPEGs in ImageFolder layout (10 classes), made from the embedded CIFAR-10 images."""
    from PIL import Image

    from core.data import load_data

    data = load_data("cifar10-mini", search_size=1000)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = data.train.images[i % len(data.train)].permute(1, 2, 0).numpy()
        w, h = int(rng.integers(400, 640)), int(rng.integers(300, 480))
        big = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), dtype=np.float32)
        big = np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)
        folder = root / f"c{int(data.train.labels[i % len(data.train)])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(big).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def loader_rates(workers: list[int], n_images: int, seed: int, batch: int = 128) -> dict[str, Any]:
    """Images/s of a DataLoader with timm's ImageNet training transform, by worker count."""
    from timm.data import create_transform

    batch = min(batch, n_images)
    from torchvision.datasets import ImageFolder

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = make_jpeg_folder(Path(tmp), n_images, seed)
        made_s = time.perf_counter() - start
        tf = create_transform(224, is_training=True, auto_augment="rand-m9-inc1")
        ds = ImageFolder(str(root), transform=tf)
        sizes = [os.path.getsize(p) for p, _ in ds.samples]
        out: dict[str, Any] = {"images": n_images, "batch": batch, "mean_jpeg_kb": statistics.fmean(sizes) / 1024,
                               "made_s": made_s, "transform": str(tf).replace("\n", " "), "by_workers": {}}  # fmt: skip
        for w in workers:
            loader = torch.utils.data.DataLoader(
                ds, batch_size=batch, shuffle=True, num_workers=w, pin_memory=torch.cuda.is_available(),
                drop_last=True, worker_init_fn=_one_thread if w else None, prefetch_factor=4 if w else None,
                generator=torch.Generator().manual_seed(seed), persistent_workers=w > 0,
            )  # fmt: skip
            # Untimed: worker start-up and the batches prefetched meanwhile (4 per worker), so the timed
            # window sees the steady rate, not a queue filled before it began.
            it, seen, t0 = iter(loader), 0, None
            warm, budget = 4 * w + 1, max(10, 3 * w)
            for i in range(warm + budget):
                try:
                    next(it)
                except StopIteration:
                    it = iter(loader)
                    next(it)
                if i == warm - 1:
                    t0 = time.perf_counter()
                elif t0 is not None:
                    seen += batch
            rate = seen / (time.perf_counter() - t0)
            out["by_workers"][str(w)] = rate
            log.info("data: %d workers, %.0f images/s", w, rate)
            del it, loader
    return out
