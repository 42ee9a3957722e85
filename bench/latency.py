"""bench-latency: how well a latency table predicts the measured latency of random subnets.

For `--samples` architectures sampled with `--seed`, the end-to-end latency of the standalone
network is measured on this machine with the table's settings (device, threads, dtype, batch) and
set against the table's prediction. Reported: the mean absolute percentage error (MAPE), Spearman's
rank correlation of predicted and measured latency, and, for comparison, how well MFLOPs alone rank
the same measured latencies (Spearman).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from core.config import opt
from core.errors import UserError
from supernet.latency import measure_archs, open_table

log = logging.getLogger(__name__)


@dataclass
class BenchLatencyConfig:
    """Options of `run.py bench-latency`."""

    space: str = opt("", "space of the table (default: the table's); a different one is refused")
    latency_table: str = opt("", "table from run.py latency-table")
    samples: int = opt(50, "random subnets to measure")
    repeats: int = opt(20, "timed calls per subnet and round; the fastest is kept")
    rounds: int = opt(3, "rounds over all subnets (interleaved); the fastest is kept")
    seed: int = opt(1, "seed of the sampled subnets (the table's overhead used seed 0)")
    json: str = opt("", "also write the results to this JSON file")
    quiet: bool = opt(False, "no progress bar")

    def __post_init__(self) -> None:
        if not self.latency_table:
            raise UserError("bench-latency needs --latency-table FILE (build one with run.py latency-table)")
        if self.samples < 3 or self.repeats < 1 or self.rounds < 1:
            raise UserError("--samples must be >= 3, --repeats and --rounds >= 1")


def main(cfg: BenchLatencyConfig) -> dict[str, Any]:
    """Predicted against measured latency of `samples` random subnets."""
    table, space, device = open_table(cfg.latency_table, cfg.space)
    meta = table.meta
    num_classes = int(meta.get("num_classes", 10))
    rng = np.random.default_rng(cfg.seed)
    archs = [space.sample(rng) for _ in range(cfg.samples)]
    measured = measure_archs(
        space, archs, device, meta["dtype"], int(meta["batch"]), num_classes, cfg.repeats, cfg.rounds, cfg.quiet
    )
    rows = [
        (space.to_str(a), table.predict(space, a), m, space.cost(a, num_classes).mflops)
        for a, m in zip(archs, measured)
    ]
    screen = [space.sample(rng) for _ in range(10_000)]
    start = time.perf_counter()
    for arch in screen:
        table.predict(space, arch)
    screen_s = time.perf_counter() - start
    pred, meas, flops = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    result = {
        "space": space.name,
        "space_opts": meta.get("space_opts"),
        "table": cfg.latency_table,
        "threads": torch.get_num_threads(),
        "device": device.type,
        "samples": cfg.samples,
        "rounds": cfg.rounds,
        "repeats": cfg.repeats,
        "cold_bytes": meta.get("cold_bytes", 0),
        "mape_pct": float(100 * np.mean(np.abs(pred - meas) / meas)),
        "spearman": float(spearmanr(pred, meas).statistic),
        "flops_spearman": float(spearmanr(flops, meas).statistic),
        "predict_10k_s": screen_s,
        "measured_ms_range": [float(meas.min()), float(meas.max())],
        "archs": [{"arch": a, "predicted_ms": p, "measured_ms": m, "mflops": f} for a, p, m, f in rows],
    }
    log.info(
        "bench-latency %s (%d threads): MAPE %.1f%%, Spearman %.3f (MFLOPs alone %.3f)",
        space.name, result["threads"], result["mape_pct"], result["spearman"], result["flops_spearman"],
    )  # fmt: skip
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(result, indent=1) + "\n")
    return {k: v for k, v in result.items() if k != "archs"}
