"""`run.py bench-search --executor ray`: the asynchronous search against a synchronous batch.

Each table evaluation takes a simulated, seeded, heavy-tailed duration (`--eval-seconds
lognormal:MEAN,SIGMA`, a sleep on the worker), so that `--workers 8` fit on two cores. One run
reports:

(a) `utilisation` and `speedup_over_sync`: a real search on Ray with `--workers` trials in flight
    against a synchronous batch of `--workers` (today's torchrun behaviour: each batch waits for
    its slowest trial), over the same sequence of durations (trial i takes the i-th draw);
(b) `evals_ratio`: the median number of evaluations to reach the table's best with `--workers` in
    flight over the same with 1 in flight, over `--seeds` seeds, on the simulated clock (the order
    results arrive in is that of the durations, without sleeping);
(c) `driver_ms_per_result`: the driver's own time per result (proposing, journaling,
    checkpointing, submitting; not waiting) in a real search of `--overhead-results` results.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import opt
from core.errors import UserError
from search.async_loop import AsyncDriver, run_async_search
from search.executors import EXECUTORS, SimulatedExecutor, parse_durations, require_ray
from search.searchers import make_searcher
from supernet.spaces.base import Space

log = logging.getLogger(__name__)


@dataclass
class AsyncBenchOptions:
    """Options of `bench-search --executor ray` (a mixin of `BenchSearchConfig`)."""

    executor: str = opt("inprocess", "ray: time the asynchronous search against a synchronous batch", choices=EXECUTORS)
    workers: int = opt(8, "with --executor ray: trials in flight (and the synchronous batch it is compared with)")
    eval_seconds: str = opt(
        "lognormal:0.5,1", "with --executor ray: simulated duration per evaluation, lognormal:MEAN,SIGMA"
    )
    ray_address: str = opt("", "with --executor ray: the cluster to run on (empty: a local Ray)")
    async_budget: int = opt(240, "with --executor ray: evaluations of each timed search, (a)")
    overhead_results: int = opt(1000, "with --executor ray: results of the search whose driver overhead is timed, (c)")


def validate_async_bench(cfg: Any) -> None:
    if cfg.executor != "ray":
        return
    if cfg.workers < 1 or cfg.async_budget < 1 or cfg.overhead_results < 1:
        raise UserError("--workers, --async-budget and --overhead-results must be >= 1")
    parse_durations(cfg.eval_seconds, 0)  # one-line error for a bad spec
    require_ray()


def evals_to_best(name: str, seed: int, space: Space, lookup: Any, target: float, cfg: Any, workers: int) -> int | None:
    """Evaluations until the first arch with the target metric, `workers` in flight on the simulated clock."""
    searcher = make_searcher(name, space, seed, None, trusted=True, **cfg.opts_for(name))
    executor = SimulatedExecutor(lambda a: {"metric": lookup(a, seed)[0], "true": lookup(a, seed)[1]})
    driver = AsyncDriver(searcher, executor, space, workers=workers, budget=cfg.budget,
                         durations=parse_durations(cfg.eval_seconds, seed))  # fmt: skip
    count, hit = [0], [None]

    def on_result(o: Any) -> float:
        count[0] += 1
        if hit[0] is None and o.result["true"] >= target:
            hit[0] = count[0]
        return o.result["metric"]

    driver.run(on_result, lambda: "hit" if hit[0] is not None else "")
    return hit[0]


def _median(hits: list[int | None], budget: int) -> float:
    return float(np.median([h if h is not None else budget for h in hits]))


def timed_search(cfg: Any, space: Space, name: str, workers: int, budget: int, durations: Any, sync: bool,
                 cpus: float, tmp: Path, tag: str) -> dict[str, Any]:  # fmt: skip
    """A real search on Ray (journal, checkpoints and all) in a throwaway run directory; its executor stats."""
    from core.rundir import RunDir
    from search.config import SearchConfig

    scfg = SearchConfig(
        run_dir=str(tmp / tag), space=cfg.space, space_opts=dict(cfg.space_opts), evaluator="table",
        table=cfg.table, arch_column=cfg.arch_column, metric=cfg.metric, searcher=name,
        searcher_opts=cfg.opts_for(name), budget=budget, seed=0, executor="ray", ray_workers=workers,
        cpus_per_trial=cpus, ray_address=cfg.ray_address, quiet=True,
    )  # fmt: skip
    searcher = make_searcher(name, space, 0, None, trusted=True, **scfg.searcher_opts)
    out = RunDir(scfg.run_dir).search
    summary = run_async_search(scfg, space, searcher, out, [], 0, 0.0, durations=durations, sync=sync)
    stats = dict(summary["executor"])
    log.warning("%s: %d results in %.1f s, utilisation %.3f, driver %.2f ms/result", tag, stats["results"],
                stats["wall_s"], stats["utilisation"], stats["driver_ms_per_result"])  # fmt: skip
    return stats


def run_async_bench(cfg: Any, space: Space, lookup: Any, target: float) -> dict[str, Any]:
    """Figures (a), (b) and (c); see the module's docstring."""
    import ray

    from search.ray_executor import init_ray

    names = [s.strip() for s in cfg.searchers.split(",") if s.strip()]
    name = names[0]
    out: dict[str, Any] = {"metric": cfg.metric, "target": target, "searcher": name, "workers": cfg.workers,
                           "eval_seconds": cfg.eval_seconds, "evals_to_best": {}}  # fmt: skip
    # (b) evaluations to the table's best: W in flight against 1, on the simulated clock
    for each in names:
        per: dict[str, Any] = {}
        for workers in sorted({1, cfg.workers}):
            hits = [evals_to_best(each, s, space, lookup, target, cfg, workers) for s in range(cfg.seeds)]
            per[str(workers)] = {"median": _median(hits, cfg.budget), "found": sum(h is not None for h in hits),
                                 "hits": hits}  # fmt: skip
        per["ratio"] = per[str(cfg.workers)]["median"] / per["1"]["median"]
        out["evals_to_best"][each] = per
        log.warning("%s: median evaluations to the best %.0f with %d in flight, %.0f with 1 (ratio %.3f, %d seeds)",
                    each, per[str(cfg.workers)]["median"], cfg.workers, per["1"]["median"], per["ratio"],
                    cfg.seeds)  # fmt: skip
    out["evals_ratio"] = out["evals_to_best"][name]["ratio"]
    # (a) and (c) on Ray
    started = not ray.is_initialized()
    if started:  # a local Ray: one logical CPU per worker (the trials sleep), so its worker pool holds them all
        init_ray(cfg.ray_address, 1, num_cpus=None if cfg.ray_address else max(cfg.workers, os.cpu_count() or 1))
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        per_trial = min(1.0, math.floor(100 * cpus / cfg.workers) / 100)  # so that all workers fit
        durations = parse_durations(cfg.eval_seconds, 0)
        with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
            # start the worker processes and load the table in each before anything is timed
            timed_search(cfg, space, name, cfg.workers, 3 * cfg.workers, None, False, per_trial, Path(tmp), "warm-up")
            a = timed_search(cfg, space, name, cfg.workers, cfg.async_budget, durations, False, per_trial,
                             Path(tmp), "async")  # fmt: skip
            s = timed_search(cfg, space, name, cfg.workers, cfg.async_budget, durations, True, per_trial,
                             Path(tmp), "sync")  # fmt: skip
            c = timed_search(cfg, space, name, cfg.workers, cfg.overhead_results, None, False, per_trial,
                             Path(tmp), "overhead")  # fmt: skip
    finally:
        if started:
            ray.shutdown()
    out.update(
        utilisation=a["utilisation"],
        sync_utilisation=s["utilisation"],
        wall_s=a["wall_s"],
        sync_wall_s=s["wall_s"],
        speedup_over_sync=round(s["wall_s"] / a["wall_s"], 3),
        driver_ms_per_result=c["driver_ms_per_result"],
        overhead_results=c["results"],
        cpus_per_trial=per_trial,
        runs={"async": a, "sync": s, "overhead": c},
    )
    log.warning("(a) utilisation %.3f (sync %.3f), %.2fx faster than a synchronous batch of %d; (b) evals ratio "
                "%.3f; (c) driver %.2f ms per result at %d results", out["utilisation"], out["sync_utilisation"],
                out["speedup_over_sync"], cfg.workers, out["evals_ratio"], out["driver_ms_per_result"],
                out["overhead_results"])  # fmt: skip
    return out
