"""bench-supernet: what running a subnet through the weight-sharing supernet costs, against the
same subnet built standalone.

The goal is that a supernet step for one architecture costs about what that architecture costs on
its own: time ratio <= 1.10 and memory ratio <= 1.2 (results: docs/benchmarks.md). Measured here:

- time: forward + backward (cross-entropy on random labels, grads set to None first), train mode,
  median over `steps` steps after `warmup` untimed ones; the two networks alternate step by step,
  and which one goes first alternates too, so drift in machine load hits both alike.
- memory: the bytes of the tensors autograd holds for backward when one training forward ends
  (found with `torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters and their
  slices excluded because they are resident anyway, tensors of branches that never reach the
  loss excluded because they are freed during the forward). To these activations `mem_ratio` adds
  the parameters (all of the supernet's: they are resident) and the gradients; `act_ratio` is the
  activations alone. That is the activation memory a step holds at
  its peak, it is exact and the same on every device. On CUDA the peak allocated memory of a step
  (parameters, gradients and activations) is reported as well. `tracemalloc` cannot see torch's
  allocator, so it is not used.

- cost screening: seconds to count the MFLOPs and parameters of 10,000 sampled architectures with
  the space's fast path (`space.cost`), after one warm-up call; the target is under one second.

Before timing, the extracted subnet is checked to give the supernet's output (eval mode), so the
two measurements are of the same network.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import weakref
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
from supernet.spaces.base import make_user_space

log = logging.getLogger(__name__)


@dataclass
class BenchSupernetConfig:
    """Options of `run.py bench-supernet`."""

    space: str = opt("nb201", "search space to benchmark (any registered name, or module:Class)")
    space_opts: dict[str, Any] = opt({}, "space constructor options, KEY=VALUE (e.g. cells=5)")
    batch_size: int = opt(64, "images per step, at the space's input resolution")
    steps: int = opt(10, "timed steps per network; the median is reported (10 or more for a figure you quote)")
    json: str = opt("", "also write the results to this JSON file")
    arch: str = opt("", "subnet in the space's string form (default: one sampled with --seed)")
    seed: int = opt(0, "seed of the sampled subnet, the weights and the batch")
    device: str = opt("auto", "where to run", choices=("auto", "cpu", "cuda"))

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.steps < 1:
            raise UserError(f"--batch-size and --steps must be >= 1, got {self.batch_size} and {self.steps}")


def main(cfg: BenchSupernetConfig) -> dict[str, Any]:
    """Run the benchmark described by `cfg` and return its results."""
    return run_bench_supernet(
        cfg.space,
        cfg.space_opts,
        batch=cfg.batch_size,
        steps=cfg.steps,
        json_path=cfg.json or None,
        arch_str=cfg.arch or None,
        seed=cfg.seed,
        device=cfg.device,
    )


def saved_activation_bytes(model: nn.Module, step: Callable[[], torch.Tensor]) -> int:
    """Bytes autograd holds for backward at the end of `step()`'s forward pass (parameters excluded).

    Tensors saved by branches that do not reach the loss are freed during the forward pass (their
    graph dies with the Python references), so only the saved tensors still alive when the forward
    ends are counted, each storage once: weak references tell which.
    """
    resident = {p.untyped_storage().data_ptr() for p in model.parameters()}
    resident |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved: list[weakref.ref] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    sizes: dict[int, int] = {}
    for ref in saved:
        t = ref()
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in resident:
            sizes[storage.data_ptr()] = storage.nbytes()
    loss.backward()
    return sum(sizes.values())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and of the gradients the last backward produced."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    return params + grads


def cost_screen_seconds(space: Any, n: int = 10_000, seed: int = 0) -> float:
    """Seconds for `space.cost` over `n` sampled architectures (the FLOPs screen of a search)."""
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    space.cost(archs[0])
    start = time.perf_counter()
    for arch in archs:
        space.cost(arch)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels are asynchronous: time what ran, not what was queued


def _cuda_peak(model: nn.Module, step: Callable[[], torch.Tensor], device: torch.device) -> int:
    _sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step().backward()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def run_bench_supernet(
    space_name: str,
    space_opts: dict[str, Any],
    batch: int = 64,
    steps: int = 10,
    json_path: str | None = None,
    *,
    arch_str: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    warmup: int = 2,
) -> dict[str, Any]:
    """Time and memory of one subnet in the supernet divided by those of the subnet standalone."""
    if batch < 1 or steps < 1:
        raise UserError(f"batch and steps must be >= 1, got {batch} and {steps}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else device.replace("auto", "cpu"))
    space = make_user_space(space_name, **(space_opts or {}))  # --space of the command
    arch = space.from_str(arch_str) if arch_str else space.sample(np.random.default_rng(seed))
    torch.manual_seed(seed)
    num_classes = 10
    supernet = space.supernet(num_classes).to(dev)
    subnet = space.extract(supernet, arch).to(dev)
    size = space.input_size
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, num_classes, (batch,), device=dev)

    supernet.eval(), subnet.eval()
    with torch.no_grad():
        diff = (supernet(x[:2], arch) - subnet(x[:2])).abs().max().item()
    supernet.train(), subnet.train()

    def make_step(model: nn.Module, call: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            return F.cross_entropy(call(x), y)

        return step

    runs = {
        "supernet": (supernet, make_step(supernet, lambda inp: supernet(inp, arch))),
        "standalone": (subnet, make_step(subnet, subnet)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(warmup + steps):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for name in order:
            _, step = runs[name]
            _sync(dev)
            start = time.perf_counter()
            step().backward()
            _sync(dev)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)

    act = {name: saved_activation_bytes(model, step) for name, (model, step) in runs.items()}
    mem = {name: act[name] + weight_bytes(model) for name, (model, _) in runs.items()}
    t_sup, t_sub = statistics.median(times["supernet"]), statistics.median(times["standalone"])
    result: dict[str, Any] = {
        "space": space_name,
        "space_opts": dict(space_opts or {}),
        "arch": space.to_str(arch),
        "batch": batch,
        "steps": steps,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "max_abs_diff": diff,
        "time_supernet_ms": 1e3 * t_sup,
        "time_standalone_ms": 1e3 * t_sub,
        "time_ratio": t_sup / t_sub,
        "mem_method": "parameters + gradients + tensors saved for backward (saved_tensors_hooks)",
        "mem_supernet_mb": mem["supernet"] / 2**20,
        "mem_standalone_mb": mem["standalone"] / 2**20,
        "mem_ratio": mem["supernet"] / max(mem["standalone"], 1),
        "act_supernet_mb": act["supernet"] / 2**20,
        "act_standalone_mb": act["standalone"] / 2**20,
        "act_ratio": act["supernet"] / max(act["standalone"], 1),
        "params_supernet_m": sum(p.numel() for p in supernet.parameters()) / 1e6,
        "params_standalone_m": sum(p.numel() for p in subnet.parameters()) / 1e6,
    }
    result["cost_screen_10k_s"] = cost_screen_seconds(space, 10_000, seed)
    if dev.type == "cuda":
        peaks = {name: _cuda_peak(model, step, dev) for name, (model, step) in runs.items()}
        result["cuda_peak_supernet_mb"] = peaks["supernet"] / 2**20
        result["cuda_peak_standalone_mb"] = peaks["standalone"] / 2**20
        result["cuda_peak_ratio"] = peaks["supernet"] / max(peaks["standalone"], 1)
    log.info(
        "bench-supernet %s %s: time ratio %.3f (%.1f / %.1f ms), memory ratio %.3f",
        space_name,
        result["arch"],
        result["time_ratio"],
        result["time_supernet_ms"],
        result["time_standalone_ms"],
        result["mem_ratio"],
    )
    log.info("bench-supernet %s: MFLOPs and params of 10,000 archs in %.3f s", space_name, result["cost_screen_10k_s"])
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result
