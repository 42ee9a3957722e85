"""Where evaluations run: in this process (the default) or asynchronously on Ray workers.

`--executor inprocess` is the search loop of `search/loop.py` (under `torchrun`, each rank scores
its share of a batch). `--executor ray` keeps `--ray-workers` trials in flight on a Ray cluster: as soon
as one result arrives the searcher is told and asked for one more (`search/async_loop.py`).

This module holds what both the Ray executor and the benchmark's simulated clock share: the
options (`ExecutorConfig`, mixed into `SearchConfig` and `PipelineConfig`), a trial and its outcome,
and `SimulatedExecutor`, which runs trials on a virtual clock (each takes its given `seconds`), so
the asynchronous schedule can be replayed for many seeds without sleeping.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from core.config import opt
from core.errors import UserError

EXECUTORS = ("inprocess", "ray")
RAY_INSTALL = "pip install -e '.[ray]' (or pip install 'ray>=2.60')"


@dataclass
class ExecutorConfig:
    """Options of the executor; a mixin of `SearchConfig` (and the pipeline's config)."""

    executor: str = opt(
        "inprocess",
        "where evaluations run: inprocess (this process; torchrun ranks for --evaluator train) or ray "
        "(asynchronous trials on Ray workers, one node or a cluster)",
        choices=EXECUTORS,
    )
    ray_address: str = opt("", "with --executor ray: the cluster to join (HOST:PORT or auto); empty: a local Ray")
    ray_workers: int = opt(
        0, "with --executor ray: trials in flight (0: the cluster's CPUs / --cpus-per-trial, or GPUs)"
    )
    cpus_per_trial: float = opt(1.0, "with --executor ray: CPU cores reserved per trial (its torch threads)")
    gpus_per_trial: float = opt(0.0, "with --executor ray: GPUs reserved per trial (1: one GPU each)")
    max_retries: int = opt(2, "with --executor ray: retries of a trial whose worker or node was lost")


def validate_executor(cfg: Any) -> None:
    """One-line `UserError` for bad executor options; with `--executor ray`, Ray must be importable."""
    if cfg.ray_workers < 0 or cfg.max_retries < 0:
        raise UserError("--ray-workers and --max-retries must be >= 0 (--ray-workers 0: as many as the cluster holds)")
    if cfg.cpus_per_trial < 0 or cfg.gpus_per_trial < 0 or not (cfg.cpus_per_trial or cfg.gpus_per_trial):
        raise UserError("--cpus-per-trial and --gpus-per-trial must be >= 0 and not both 0")
    if cfg.executor != "ray":
        return
    if getattr(cfg, "batch", 1) != 1:
        raise UserError(
            "--batch is for --executor inprocess; with --executor ray set the trials in flight by --ray-workers"
        )
    if getattr(cfg, "prior", ""):
        raise UserError("--prior needs --executor inprocess (its reference scores are taken in one process)")
    require_ray()


def require_ray() -> Any:
    """The `ray` module, or a one-line `UserError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


@dataclass
class Trial:
    """One architecture to evaluate; `attempt` counts starts after lost workers; `seconds` is simulated."""

    arch: Any
    key: str  # space.to_str(arch)
    number: int  # submission order (0, 1, ...): what a simulated duration is drawn for
    attempt: int = 1
    seconds: float = 0.0  # a simulated duration (benchmark); 0: none


@dataclass
class Outcome:
    """What came back for a trial: a result dict, or an error; `lost` when the worker or node died."""

    trial: Trial
    result: dict[str, Any] | None = None
    error: str = ""
    lost: bool = False
    worker: str = ""
    node: str = ""
    seconds: float = 0.0  # time the worker spent on it
    extra: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Runs trials: `submit` returns at once, `wait` blocks until at least one outcome (or the timeout)."""

    def submit(self, trial: Trial) -> None: ...

    def wait(self, timeout: float | None = None) -> list[Outcome]: ...

    def cancel_all(self) -> None: ...


def parse_durations(spec: str, seed: int) -> Callable[[int], float] | None:
    """`lognormal:MEAN,SIGMA` -> trial number -> seconds (seeded, heavy-tailed, mean MEAN); '' -> None."""
    if not spec:
        return None
    m = re.fullmatch(r"lognormal:([^,]+),([^,]+)", spec.strip())
    try:
        mean, sigma = (float(m.group(1)), float(m.group(2))) if m else (math.nan, math.nan)
    except ValueError:
        mean = sigma = math.nan
    if not (math.isfinite(mean) and math.isfinite(sigma) and mean > 0 and sigma >= 0):
        raise UserError(f"--eval-seconds {spec!r}: write lognormal:MEAN,SIGMA with MEAN > 0, SIGMA >= 0 (seconds)")
    mu = math.log(mean) - sigma**2 / 2  # so that the mean is MEAN

    def draw(number: int) -> float:
        return float(np.exp(mu + sigma * np.random.default_rng([seed, number, 0xD0]).standard_normal()))

    return draw


class SimulatedExecutor:
    """Trials on a virtual clock: each finishes `trial.seconds` after it was submitted; no sleeping.

    `evaluate(arch) -> dict` gives the result. The order results come back in is that of a real
    cluster whose trials take those durations, so schedules can be compared over many seeds.
    """

    def __init__(self, evaluate: Callable[[Any], dict[str, Any]]) -> None:
        self.evaluate, self.now, self.busy = evaluate, 0.0, 0.0
        self._heap: list[tuple[float, int, Trial]] = []

    def submit(self, trial: Trial) -> None:
        heapq.heappush(self._heap, (self.now + trial.seconds, trial.number, trial))

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if not self._heap:
            return []
        self.now, _, trial = heapq.heappop(self._heap)
        self.busy += trial.seconds
        return [Outcome(trial, result=self.evaluate(trial.arch), worker="sim", node="sim", seconds=trial.seconds)]

    def cancel_all(self) -> None:
        self._heap.clear()
