"""`--executor ray`: trials as Ray tasks, one architecture each, on one node or a cluster.

Each trial is a task that reserves `--cpus-per-trial` cores and `--gpus-per-trial` GPUs. The task
builds the space and the evaluator from the search's config once per worker process (the config
travels through Ray's object store; nothing is read from a file that names code) and evaluates one
architecture. A failure of the evaluation itself (an exception: NaN loss, out of memory, an arch
the table lacks) comes back as a one-line error and is recorded, not retried. A task whose worker
process or node died comes back as *lost*; the driver retries it (`search/async_loop.py`). Ray's
own task retries are off, so the driver counts every attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from core.errors import UserError
from search.executors import Outcome, Trial, require_ray

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent  # the toolkit's source tree, put on the workers' path
_EVALUATORS: dict[str, tuple[Any, Any]] = {}  # per worker process: evaluator key -> (space, evaluator)
# options that do not change how an architecture is scored: searches that differ only in these share evaluators
_NOT_EVALUATION = ("run_dir", "run_name", "resume", "budget", "time_budget_minutes", "searcher", "searcher_opts",
                   "ray_workers", "max_retries", "ray_address", "topk", "quiet", "executor")  # fmt: skip


def evaluator_key(cfg: Any) -> str:
    """What a worker's cached evaluator is keyed by: the config's options that bear on scoring."""
    import json

    return json.dumps({k: v for k, v in cfg.to_dict().items() if k not in _NOT_EVALUATION}, sort_keys=True, default=str)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def run_trial(token: str, cfg: Any, arch_json: dict[str, Any], seconds: float, threads: int) -> dict[str, Any]:
    """The body of a Ray task: evaluate one architecture; never raises for the evaluation's own errors."""
    t0 = time.perf_counter()
    info: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}", "node": socket.gethostname()}
    try:
        entry = _EVALUATORS.get(token)
        if entry is None:
            import torch

            from search.evaluators import make_evaluator
            from supernet.spaces.base import make_user_space

            if threads > 0:
                torch.set_num_threads(threads)
            _EVALUATORS.clear()  # one evaluator at a time per worker process
            space = make_user_space(cfg.space, **cfg.space_opts)
            # the config is the user's command line, sent by the driver: import paths in it are allowed
            entry = _EVALUATORS[token] = (space, make_evaluator(cfg, space, trusted=True))
        space, evaluator = entry
        arch = space.from_json(arch_json)
        if seconds > 0:
            time.sleep(seconds)  # a simulated training time (bench-search --eval-seconds)
        from search.evaluators import normalise

        results = list(evaluator.evaluate([arch]))
        if len(results) != 1:
            raise UserError(f"evaluator {cfg.evaluator} returned {len(results)} results for 1 arch")
        info["result"] = normalise(results[0], cfg.evaluator)
        if info["result"].get("error"):  # the evaluator reported this trial failed (a diverged training run)
            info["error"] = str(info["result"]["error"])[:400]
    except Exception as exc:  # the trial's own failure: recorded with its one-line error
        info["error"] = one_line(exc)
    info["seconds"] = time.perf_counter() - t0
    return info


def init_ray(address: str = "", threads: int = 1, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` (or start a local one), with the toolkit on the workers' path.

    Workers get `OMP_NUM_THREADS=threads`. The toolkit's own tree and the current directory go on
    their `PYTHONPATH`, so they import it (and a user's module:Class) from the same paths as the
    driver: on a cluster, check out the toolkit at the same path on every node, or install it there.
    """
    ray = require_ray()
    path = os.pathsep.join(p for p in (str(ROOT), os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    env = {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": path}
    kw: dict[str, Any] = {"runtime_env": {"env_vars": env}, "logging_level": logging.WARNING}
    if not address:
        kw.update(include_dashboard=False, num_cpus=num_cpus)
    try:
        ray.init(address=address or None, log_to_driver=False, **kw)
    except Exception as exc:  # no cluster at that address, a version mismatch, ...
        where = address or "a local Ray"
        raise UserError(
            f"could not start or join {where} ({one_line(exc)[:200]}); start the head with "
            "`ray start --head` and pass --ray-address HOST:6379, or leave it empty for a local Ray"
        ) from None


class RayExecutor:
    """Submits trials as Ray tasks and collects them as they finish; starts a local Ray if none runs."""

    def __init__(self, cfg: Any, space: Any) -> None:
        ray = require_ray()
        self.ray, self.space, self.owns = ray, space, False
        threads = max(1, int(cfg.cpus_per_trial))
        if not ray.is_initialized():
            init_ray(cfg.ray_address, threads)
            self.owns = True
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if cfg.cpus_per_trial > cpus or cfg.gpus_per_trial > gpus:
            self.close()
            raise UserError(
                f"a trial needs {cfg.cpus_per_trial:g} CPUs and {cfg.gpus_per_trial:g} GPUs but the Ray cluster "
                f"has {cpus:g} CPUs and {gpus:g} GPUs in all; lower --cpus-per-trial/--gpus-per-trial or add nodes"
            )
        fits = min(
            cpus / cfg.cpus_per_trial if cfg.cpus_per_trial else 1e9,
            gpus / cfg.gpus_per_trial if cfg.gpus_per_trial else 1e9,
        )
        self.workers = int(cfg.ray_workers or max(1, int(fits)))
        self.threads = threads
        self.cfg_ref = ray.put(cfg)
        self.token = evaluator_key(cfg)
        self.remote = ray.remote(run_trial).options(
            num_cpus=cfg.cpus_per_trial, num_gpus=cfg.gpus_per_trial, max_retries=0, retry_exceptions=False
        )
        self.refs: dict[Any, Trial] = {}
        log.info("ray: %d trials in flight on %g CPUs and %g GPUs", self.workers, cpus, gpus)

    def submit(self, trial: Trial) -> None:
        arch_json = self.space.to_json(trial.arch)
        ref = self.remote.remote(self.token, self.cfg_ref, arch_json, trial.seconds, self.threads)
        self.refs[ref] = trial

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if not self.refs:
            return []
        ray = self.ray
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        return [self._outcome(ref, self.refs.pop(ref)) for ref in ready]

    def _outcome(self, ref: Any, trial: Trial) -> Outcome:
        exc_mod = self.ray.exceptions
        try:
            info = self.ray.get(ref)
        except exc_mod.RayTaskError as exc:  # raised by the task itself (e.g. its arguments would not load)
            return Outcome(trial, error=one_line(exc.cause if exc.cause is not None else exc))
        except exc_mod.OutOfMemoryError as exc:  # Ray's memory monitor killed it: the trial's own size
            return Outcome(trial, error=f"out of memory: {one_line(exc)[:200]}")
        except exc_mod.RayError as exc:  # the worker process or its node died: lost, retried by the driver
            return Outcome(trial, error=type(exc).__name__, lost=True)
        return Outcome(
            trial,
            result=info.get("result"),
            error=info.get("error", ""),
            worker=info["worker"],
            node=info["node"],
            seconds=float(info["seconds"]),
        )

    def cancel_all(self) -> None:
        for ref in self.refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or its worker gone
                pass
        self.refs.clear()

    def close(self) -> None:
        if self.owns:
            self.ray.shutdown()
            self.owns = False
