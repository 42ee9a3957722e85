"""Asynchronous search (`--executor ray`): `--ray-workers` trials in flight, one more as each result arrives.

`AsyncDriver` is the schedule: it asks the searcher for as many proposals as there are free slots,
submits them, and as soon as a trial finishes tells the searcher its metric and refills the slot.
Proposals in flight are the searcher's `pending` list, so no searcher proposes an architecture that
is pending or done. A trial whose worker or node was lost is submitted again, up to
`--max-retries` times; a trial that failed on its own is recorded with its error (metric NaN).

`run_async_search` adds the run directory: each result is appended to the journal as it arrives
(with its worker, node, seconds and attempt), and the searcher's state, pending proposals
included, is checkpointed (at most every `SAVE_EVERY` seconds, and at the end). `--resume auto`
tells the searcher the journal lines written after that state and re-submits only the proposals
that were in flight and have no journal line, so no finished trial is evaluated twice.

What is reproducible: the in-process executor's journal, bit for bit. Here the order in which
results arrive depends on the workers' timing, so the sequence of proposals is not; each trial's
result for an architecture and seed is (it does not depend on where it ran).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from core.checkpoint import save_checkpoint
from core.errors import UserError
from core.jsonl import append_jsonl, read_jsonl, truncate_torn_tail
from core.rundir import SearchDir, commit_run_config
from core.signals import graceful_stop
from search.executors import Executor, Outcome, Trial
from search.outputs import write_outputs
from search.records import make_record, next_index
from search.searchers import Searcher
from supernet.spaces.base import Space

log = logging.getLogger(__name__)
SAVE_EVERY = 1.0  # seconds between checkpoints of the searcher state (the journal is written at once)
POLL = 1.0  # seconds between checks of the time budget and of signals while waiting


class AsyncDriver:
    """Keeps `workers` trials in flight until `budget` results; `sync=True` waits for a whole batch instead."""

    def __init__(
        self,
        searcher: Searcher,
        executor: Executor,
        space: Space,
        *,
        workers: int,
        budget: int,
        max_retries: int = 2,
        sync: bool = False,
        durations: Callable[[int], float] | None = None,
        poll: float = POLL,
        on_submit: Callable[[Trial], None] | None = None,
    ) -> None:
        self.searcher, self.executor, self.space = searcher, executor, space
        self.workers, self.budget, self.max_retries, self.sync = workers, budget, max_retries, sync
        self.durations, self.poll, self.on_submit = durations, poll, on_submit
        self.inflight: dict[str, Trial] = {}
        self.finished = self.number = self.retries = 0
        self.exhausted = False
        self.wall = self.waited = self.busy = 0.0  # seconds: run, blocked in wait, worker time of results

    def submit(self, arch: Any) -> None:
        key = self.space.to_str(arch)
        seconds = self.durations(self.number) if self.durations else 0.0
        trial = Trial(arch, key, self.number, seconds=seconds)
        self.number += 1
        self.inflight[key] = trial
        if self.on_submit:  # recorded before it is sent: a driver killed in between re-submits it
            self.on_submit(trial)
        self.executor.submit(trial)

    def _fill(self) -> None:
        if self.exhausted or (self.sync and self.inflight):
            return
        free = min(self.workers - len(self.inflight), self.budget - self.finished - len(self.inflight))
        if free <= 0:
            return
        archs = self.searcher.propose(free)
        self.exhausted = not archs
        for arch in archs:
            self.submit(arch)

    def run(
        self,
        on_result: Callable[[Outcome], float],
        should_stop: Callable[[], str] = lambda: "",
        resubmit: tuple | list = (),
        finished: int = 0,
    ) -> str:
        """Until the budget, the space or `should_stop()` (a reason) ends it; returns why it stopped.

        `on_result(outcome)` records a finished trial and returns the metric the searcher is told.
        """
        self.finished = finished
        start = time.perf_counter()
        for arch in resubmit:
            self.submit(arch)
        stop = "budget"
        try:
            while True:
                reason = should_stop()
                if reason:
                    stop = reason
                    break
                self._fill()
                if not self.inflight:
                    stop = "space exhausted" if self.exhausted and self.finished < self.budget else "budget"
                    break
                t0 = time.perf_counter()
                outcomes = self.executor.wait(self.poll)
                self.waited += time.perf_counter() - t0
                for outcome in outcomes:
                    self._handle(outcome, on_result)
        finally:
            self.wall = time.perf_counter() - start
        return stop

    def _handle(self, outcome: Outcome, on_result: Callable[[Outcome], float]) -> None:
        trial = self.inflight.pop(outcome.trial.key, None)
        if trial is None:  # a cancelled trial's late answer
            return
        self.busy += outcome.seconds
        if outcome.lost:
            if trial.attempt <= self.max_retries:
                log.warning("trial %s: its worker was lost (%s); retrying it (attempt %d of %d)",
                            trial.key, outcome.error, trial.attempt + 1, self.max_retries + 1)  # fmt: skip
                trial.attempt += 1
                self.retries += 1
                self.inflight[trial.key] = trial
                self.executor.submit(trial)
                return
            outcome.error = f"its worker was lost on all {trial.attempt} attempts ({outcome.error})"
        metric = on_result(outcome)
        self.searcher.observe([trial.arch], [metric])
        self.finished += 1

    def stats(self) -> dict[str, float]:
        """Worker utilisation (worker time of results / workers x wall), driver ms per result, retries."""
        wall = max(self.wall, 1e-9)
        return {
            "wall_s": round(self.wall, 3),
            "utilisation": round(self.busy / (self.workers * wall), 4),
            "driver_ms_per_result": round(1000 * (self.wall - self.waited) / max(self.finished, 1), 3),
            "results": self.finished,
            "retries": self.retries,
        }


def run_async_search(cfg: Any, space: Space, searcher: Searcher, out: SearchDir, records: list[dict], done: int,
                     elapsed: float, *, executor: Any = None, durations: Callable[[int], float] | None = None,
                     sync: bool = False, latency: Callable[[dict], float] | None = None) -> dict[str, Any]:  # fmt: skip
    """The asynchronous search of `run_search` (`search/loop.py`), after its resume step; returns its summary.

    `latency` (journal record -> predicted ms) gives the outputs their accuracy-latency front."""
    from search.evaluators import make_evaluator

    journal = out.journal
    # Lines written after the saved state: told to the searcher as they are (results arrive in any order).
    for r in records[done:]:
        searcher.observe([space.from_json(r["arch"])], [float(r["metric"])])
    resubmit = in_flight(space, out, records, searcher) if cfg.resume else []
    if not cfg.resume:
        out.submitted.unlink(missing_ok=True)  # a new search: submissions of an earlier one are not ours
    if cfg.evaluator == "table":  # cheap: a missing table or column is said here, not by every worker
        make_evaluator(cfg, space, trusted=True)
    own = executor is None
    if own:
        from search.ray_executor import RayExecutor

        executor = RayExecutor(cfg, space)
    workers = int(getattr(executor, "workers", 0) or cfg.ray_workers or 1)
    commit_run_config()  # the inputs were accepted: record this run's config
    if resubmit:
        log.info("resuming: re-submitting the %d trials that were in flight", len(resubmit))

    def submitted(trial: Trial) -> None:
        append_jsonl(out.submitted, {"arch": space.to_json(trial.arch), "str": trial.key, "number": trial.number})

    driver = AsyncDriver(searcher, executor, space, workers=workers, budget=cfg.budget, max_retries=cfg.max_retries,
                         sync=sync, durations=durations, on_submit=submitted)  # fmt: skip
    driver.number = len(records)  # the trials re-submitted first keep their place in the sequence of durations
    best = max((r["metric"] for r in records if _ok(r["metric"])), default=-math.inf)
    n0, start = len(records), time.perf_counter() - elapsed
    failures = {"count": 0}
    index = [next_index(records)]
    last_save = [time.perf_counter()]

    def save() -> None:
        state = {"searcher": searcher.state_dict(), "searcher_name": cfg.searcher, "seed": cfg.seed,
                 "evaluated": len(records), "elapsed": time.perf_counter() - start, "executor": "ray",
                 "config": cfg.to_dict()}  # fmt: skip
        save_checkpoint(state, out.state)
        last_save[0] = time.perf_counter()

    def on_result(o: Outcome) -> float:
        nonlocal best
        result = o.result if o.result is not None and not o.error else {"metric": math.nan}
        rec = make_record(space, o.trial.arch, result, index[0], o.seconds, cfg.num_classes or 10)
        index[0] += 1
        rec.update(worker=o.worker, node=o.node, attempt=o.trial.attempt)
        if o.error:
            rec["error"] = o.error
            failures["count"] += 1
            log.warning("trial %s failed: %s", o.trial.key, o.error)
        append_jsonl(journal, rec)
        records.append(rec)
        if _ok(rec["metric"]):
            best = max(best, rec["metric"])
        elif not any(_ok(r["metric"]) for r in records) and failures["count"] >= max(3, workers):
            raise UserError(f"the first {failures['count']} trials all failed, the last with: {o.error}; "
                            "fix the evaluator's inputs and rerun with --resume auto")  # fmt: skip
        return rec["metric"]

    with graceful_stop() as signalled:

        def should_stop() -> str:
            if time.perf_counter() - last_save[0] >= SAVE_EVERY:
                save()
            if signalled:
                return str(signalled.requested)
            if cfg.time_budget_minutes and time.perf_counter() - start >= 60 * cfg.time_budget_minutes:
                return "time"
            return ""

        try:
            stop = driver.run(on_result, should_stop, resubmit, finished=len(records))
        finally:
            if driver.inflight:
                executor.cancel_all()
            save()
            if own:
                executor.close()
    if driver.inflight:
        log.warning("stopped by %s with %d trials in flight; rerun with --resume auto to re-submit them",
                    stop, len(driver.inflight))  # fmt: skip
    metric_name = cfg.metric if cfg.evaluator == "table" else "metric"
    result = write_outputs(
        records, out.path, cfg.topk, metric_name, {"space": cfg.space, "space_opts": dict(cfg.space_opts)}, latency
    )
    log.info("search stopped (%s) after %d evaluations (%d this session)", stop, len(records), len(records) - n0)
    return {
        "evaluated": len(records),
        "stopped": stop,
        "best": result["topk"][0] if result["topk"] else None,
        "dir": str(out.path),
        "journal": str(journal),
        "topk": str(out.topk),
        "executor": {"workers": workers, "failed": failures["count"], **driver.stats()},
    }


def in_flight(space: Space, out: SearchDir, records: list[dict], searcher: Searcher) -> list[Any]:
    """What was submitted and has no journal line: the trials a killed driver left in flight.

    Read from `submitted.jsonl`, which is written as each trial is sent, so proposals made after the
    last saved searcher state are re-submitted too; the searcher is told they are pending. A run
    without that file (from before it existed) falls back on the saved state's pending list.
    """
    if not out.submitted.is_file():
        return list(searcher.pending)
    truncate_torn_tail(out.submitted)
    done = {r["str"] for r in records}
    archs: dict[str, Any] = {}
    for line in read_jsonl(out.submitted):
        if not isinstance(line, dict) or "arch" not in line:
            raise UserError(f"{out.submitted} has a line without an architecture; delete the file to resume "
                            "from the saved state alone")  # fmt: skip
        try:
            arch = space.from_json(line["arch"])
        except UserError as exc:
            raise UserError(f"{out.submitted}: {exc}; delete the file to resume from the saved state alone") from None
        key = space.to_str(arch)
        if key not in done:
            archs.setdefault(key, arch)
    for arch in searcher.pending:  # proposed, saved as pending, but the driver stopped before sending it
        if space.to_str(arch) not in done:
            archs.setdefault(space.to_str(arch), arch)
    searcher.restore_pending(archs.values())
    return list(archs.values())


def _ok(m: Any) -> bool:
    return isinstance(m, (int, float)) and math.isfinite(m)
