"""Process set-up shared by every command: logging, seeding, threads, device, progress bars."""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from core.errors import UserError

T = TypeVar("T")
log = logging.getLogger(__name__)


def setup_logging(quiet: bool = False, log_file: str | Path | None = None) -> None:
    """Console logging (warnings only with `quiet`) plus an optional text log in the run directory.

    Under torchrun only rank 0 logs progress and writes the text log; the other ranks print their
    warnings and errors, marked with their rank.
    """
    rank = int(os.environ.get("RANK", "0") or 0)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        if getattr(handler, "_lanas", False):
            root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet or rank else logging.INFO)
    tag = f"[rank {rank}] " if rank else ""
    console.setFormatter(logging.Formatter(f"%(asctime)s %(levelname).1s {tag}%(message)s", "%H:%M:%S"))
    console._lanas = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_file is not None and not rank:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh._lanas = True  # type: ignore[attr-defined]
        root.addHandler(fh)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from the one `--seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def free_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int = 0) -> int:
    """Set torch's compute threads: explicit, or the free cores divided among local ranks.

    More threads than free cores (two ranks with two threads each on two cores) makes the threads of
    one operation wait for each other on every parallel region, so the default never oversubscribes.
    """
    if threads <= 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, free_cores() // max(1, local))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    return threads


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks this rank's GPU when there is one, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible; use --device cpu or auto")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def progress(iterable: Iterable[T], quiet: bool = False, **kwargs: Any) -> Iterable[T]:
    """A tqdm bar, off with `--quiet`, when stderr is not a terminal, or on ranks other than 0."""
    from tqdm import tqdm

    rank = int(os.environ.get("RANK", "0"))
    disable = quiet or rank != 0 or not sys.stderr.isatty()
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)


def environment() -> dict[str, Any]:
    """Versions, devices and threads, for `run.py info` and the run log."""
    import platform

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_cores_free": free_cores(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "bf16_cpu": True,
    }
    for mod in ("torchvision", "timm", "thop", "tensorboardX", "onnx", "onnxruntime"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # optional packages
            info[mod] = "not installed"
    return info
