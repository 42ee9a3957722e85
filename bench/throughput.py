"""`run.py bench-throughput`: supernet training throughput per sampling strategy, data loading included.

For each strategy, real training steps of `SupernetTrainer` (loader, augmentation, forward,
backward, optimizer) are timed, and so are the same steps for the space's largest architecture
built standalone. Reported: images/s and the ratio to the standalone largest network. Strategies
train several subnets per step (sandwich: k+2, fair: one per op), so their images/s counts each
image once per step, as a user experiences it.

For the uniform strategy it also runs the search-space issue's comparison *during real training*:
each step's sampled subnet is built standalone and trained on the next batch of the same loader with
the same optimizer settings, the two interleaved, data loading included. Reported: the ratio of
summed step times and the ratio of memory (parameters + gradients + tensors saved for backward, as
`bench-supernet` counts it) for the same architectures.
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from core.config import opt
from core.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class BenchThroughputConfig:
    """Images/s of supernet training per strategy against the largest subnet trained standalone."""

    space: str = opt("nb201", "search space (nasnet has no largest architecture: only the paired uniform figure)")
    space_opts: dict = opt({}, "space options, KEY=VALUE")
    strategies: str = opt("uniform,sandwich,fair", "comma-separated strategies to time")
    batch_size: int = opt(64, "batch size")
    steps: int = opt(10, "timed steps per measurement (after 2 warm-up steps)")
    device: str = opt("cpu", "device", choices=("cpu", "cuda", "auto"))
    amp: str = opt("off", "mixed precision", choices=("off", "fp16", "bf16"))
    json: str = opt("", "write the figures to this JSON file")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(step: Any, steps: int) -> float:
    """Median seconds per call of `step()` over `steps` calls after 2 warm-up calls."""
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        step()
        _sync()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def supernet_step(trainer: Any) -> Any:
    """One real training step of the supernet trainer, data loading included."""
    batches = trainer.loader.iter_from(0)
    return lambda: trainer.train_step(*next(batches))


def standalone_step(trainer: Any) -> Any:
    """One training step of the space's largest architecture built standalone, same data."""
    largest = trainer.space.largest()
    if largest is None:
        raise UserError(f"space {trainer.cfg.space} has no largest architecture to compare with")
    net = trainer.space.build(largest, trainer.num_classes).to(trainer.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    batches = trainer.loader.iter_from(0)

    def step() -> None:
        x, y = next(batches)
        with trainer.autocast():
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _call_with(net: torch.nn.Module, arch: Any, x: torch.Tensor) -> torch.Tensor:
    return net(x, arch)


def _loss_step(model: torch.nn.Module, call: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    def step() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        return F.cross_entropy(call(x), y)

    return step


def paired_uniform(trainer: Any, steps: int, mem_steps: int = 3) -> dict[str, Any]:
    """Supernet training steps vs the same sampled subnets trained standalone, interleaved, data included."""
    from bench.supernet_cost import saved_activation_bytes, weight_bytes
    from core.optim import make_optimizer

    batches = trainer.loader.iter_from(0)
    sup_t, sub_t, mem = [], [], []
    for i in range(steps + 2):
        arch = trainer.sampler.archs(trainer.step)[0]
        net = trainer.space.build(arch, trainer.num_classes).to(trainer.device)
        optimizer, _ = make_optimizer(net, trainer.cfg, 1000, 100)
        _sync()
        t0 = time.perf_counter()
        trainer.train_step(*next(batches))
        _sync()
        t1 = time.perf_counter()
        x, y = next(batches)
        with trainer.autocast():
            loss = F.cross_entropy(net(x), y, label_smoothing=trainer.cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if trainer.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), trainer.cfg.grad_clip)
        optimizer.step()
        _sync()
        t2 = time.perf_counter()
        if i < 2:
            continue
        sup_t.append(t1 - t0)
        sub_t.append(t2 - t1)
        if len(mem) < mem_steps:
            sup = trainer.net
            sup_step = _loss_step(sup, functools.partial(_call_with, sup, arch), x, y)
            sub_step = _loss_step(net, net, x, y)
            # all of the supernet's weights are resident; gradients exist for the active ops only
            m_sup = saved_activation_bytes(sup, sup_step) + weight_bytes(sup)
            m_sub = saved_activation_bytes(net, sub_step) + weight_bytes(net)
            mem.append(m_sup / m_sub)
            trainer.net.zero_grad(set_to_none=True)
    return {
        "steps": steps,
        "time_ratio": round(sum(sup_t) / sum(sub_t), 3),
        "supernet_ms_per_step": round(1e3 * statistics.median(sup_t), 1),
        "standalone_ms_per_step": round(1e3 * statistics.median(sub_t), 1),
        "memory_ratio": round(statistics.mean(mem), 3),
    }


def main(cfg: BenchThroughputConfig) -> dict[str, Any]:
    from supernet.config import SupernetConfig
    from supernet.train import SupernetTrainer

    results: dict[str, Any] = {"space": cfg.space, "batch_size": cfg.batch_size, "strategies": {}}
    for strategy in [s.strip() for s in cfg.strategies.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = SupernetTrainer(
                SupernetConfig(
                    run_dir=tmp,
                    space=cfg.space,
                    space_opts=cfg.space_opts,
                    strategy=strategy,
                    batch_size=cfg.batch_size,
                    device=cfg.device,
                    amp=cfg.amp,
                    quiet=True,
                    search_size=500,
                )
            )
            per_step = _timed(supernet_step(trainer), cfg.steps)
            if "standalone_largest_img_s" not in results:
                has_largest = trainer.space.largest() is not None
                standalone = _timed(standalone_step(trainer), cfg.steps) if has_largest else None
                results["standalone_largest_img_s"] = round(cfg.batch_size / standalone, 1) if standalone else None
            img_s = cfg.batch_size / per_step
            largest_img_s = results["standalone_largest_img_s"]
            results["strategies"][strategy] = {
                "img_s": round(img_s, 1),
                "subnets_per_step": len(trainer.sampler.archs(0)),
                "ratio_to_standalone_largest": round(img_s / largest_img_s, 3) if largest_img_s else None,
            }
            log.info("%s: %.1f img/s (%s)", strategy, img_s, results["strategies"][strategy])
            if strategy == "uniform":
                results["uniform_vs_same_subnet"] = paired_uniform(trainer, cfg.steps)
                log.info("uniform vs the same subnets standalone: %s", results["uniform_vs_same_subnet"])
    if cfg.json:
        with open(cfg.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results
