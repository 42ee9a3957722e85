"""`run.py bench-throughput`: supernet training throughput per sampling strategy, data loading included.

For each strategy, real training steps of `SupernetTrainer` (loader, augmentation, forward,
backward, optimizer) are timed, and so are the same steps for the space's largest architecture
built standalone. Reported: images/s and the ratio to the standalone largest network. Strategies
train several subnets per step (sandwich: k+2, fair: one per op), so their images/s counts each
image once per step, as a user experiences it.
"""

from __future__ import annotations

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

    space: str = opt("nb201", "search space (needs a largest architecture: nb201, mbconv, resnet20)")
    space_opts: dict = opt({}, "space options, KEY=VALUE")
    strategies: str = opt("uniform,sandwich,fair", "comma-separated strategies to time")
    batch_size: int = opt(64, "batch size")
    steps: int = opt(10, "timed steps per measurement (after 2 warm-up steps)")
    device: str = opt("cpu", "device", choices=("cpu", "cuda", "auto"))
    amp: str = opt("off", "mixed precision", choices=("off", "fp16", "bf16"))
    json: str = opt("", "write the figures to this JSON file")


def _timed(step: Any, steps: int) -> float:
    """Median seconds per call of `step()` over `steps` calls after 2 warm-up calls."""
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
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
                standalone = _timed(standalone_step(trainer), cfg.steps)
                results["standalone_largest_img_s"] = round(cfg.batch_size / standalone, 1)
            img_s = cfg.batch_size / per_step
            results["strategies"][strategy] = {
                "img_s": round(img_s, 1),
                "subnets_per_step": len(trainer.sampler.archs(0)),
                "ratio_to_standalone_largest": round(img_s / results["standalone_largest_img_s"], 3),
            }
            log.info("%s: %.1f img/s (%s)", strategy, img_s, results["strategies"][strategy])
    if cfg.json:
        with open(cfg.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results
