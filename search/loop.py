"""The search loop behind `run.py search`: propose, screen, evaluate, journal, checkpoint, repeat.

Each round the searcher proposes `batch` feasible new architectures (FLOPs/params bounds screen
them before any evaluation), the evaluator scores them, one JSON line per architecture is appended
to `<run_dir>/search/journal.jsonl` (flushed), the searcher is told the metrics, and its state is
checkpointed to `search/state.pt` (atomic, plain data). `--resume auto` loads that state and
replays the journal lines written after it, so a search killed at any point and resumed writes the
same journal lines as one that never stopped (for a deterministic evaluator). At the end:
`topk.json`, `pareto.json`, `pareto.png`, `best_so_far.png`, and with `--latency-table` the
accuracy-latency front `pareto_latency.json` / `.png` (see `search/outputs.py`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from core import distributed
from core.checkpoint import load_checkpoint, load_latest, save_checkpoint
from core.errors import CheckpointError, UserError
from core.jsonl import append_jsonl, read_jsonl, truncate_torn_tail
from core.rundir import ROOT, RunDir, SearchDir, commit_run_config
from core.signals import graceful_stop
from search.config import SearchConfig
from search.evaluators import make_evaluator, normalise
from search.evaluators.gradnorm import GradNorm
from search.evaluators.prior import SizePrior
from search.outputs import write_outputs
from search.records import make_record as _record
from search.records import next_index
from search.searchers import Searcher, make_searcher
from supernet.spaces.base import Space, make_user_space

log = logging.getLogger(__name__)


def make_constraint(space: Space, cfg: SearchConfig, table: Any = None) -> Any:
    """`arch -> bool` for the FLOPs / params / predicted latency bounds, or None when no bound is set.

    `table` is the `--latency-table` already loaded (`latency_table`); it is loaded here otherwise.
    """
    latency = cfg.max_latency_ms or cfg.min_latency_ms
    if not (cfg.max_mflops or cfg.min_mflops or cfg.max_params or latency):
        return None
    num_classes = cfg.num_classes or 10
    if cfg.max_mflops or cfg.min_mflops or cfg.max_params:
        _check_bounds_reachable(space, cfg, num_classes)
    if not latency:
        table = None
    elif table is None:
        table = latency_table(space, cfg)

    def feasible(arch: Any) -> bool:
        cost = space.cost(arch, num_classes)
        if not (
            (not cfg.max_mflops or cost.mflops <= cfg.max_mflops)
            and (not cfg.min_mflops or cost.mflops >= cfg.min_mflops)
            and (not cfg.max_params or cost.params <= cfg.max_params)
        ):
            return False
        if table is None:
            return True
        ms = table.predict(space, arch)
        return (not cfg.max_latency_ms or ms <= cfg.max_latency_ms) and (
            not cfg.min_latency_ms or ms >= cfg.min_latency_ms
        )

    return feasible


def latency_table(space: Space, cfg: SearchConfig) -> Any:
    """The table of `--latency-table`, checked against the space (refused) and this machine (warned)."""
    import torch

    from supernet.latency import LatencyTable, environment

    table = LatencyTable.load(cfg.latency_table)
    num_classes = int(table.meta.get("num_classes", 10))
    if cfg.num_classes and cfg.num_classes != num_classes:
        raise UserError(
            f"latency table measured a {num_classes}-class head, the search has {cfg.num_classes} classes; "
            "rebuild it with run.py latency-table --num-classes"
        )
    device = torch.device(str(table.meta.get("device", "cpu")))
    table.check(space, num_classes, environment(device, torch.get_num_threads(), "", 0))
    return table


def latency_of(space: Space, table: Any) -> Any:
    """`journal record -> predicted latency (ms)` with `table`, or None without one (for the report)."""
    if table is None:
        return None
    return lambda record: table.predict(space, space.from_json(record["arch"]))


def _check_bounds_reachable(space: Space, cfg: SearchConfig, num_classes: int) -> None:
    """A bound that even the space's smallest (largest) architecture misses is an input error, said up front."""
    try:
        small, large = space.smallest(), space.largest()
        small_cost = space.cost(small, num_classes) if small is not None else None
        large_cost = space.cost(large, num_classes) if large is not None else None
    except NotImplementedError:  # a user space without a cost model
        return
    if small_cost is not None and cfg.max_mflops and small_cost.mflops > cfg.max_mflops:
        raise UserError(f"--max-mflops {cfg.max_mflops}: no architecture of {space.name} fits; its smallest "
                        f"has {small_cost.mflops:.4g} MFLOPs")  # fmt: skip
    if small_cost is not None and cfg.max_params and small_cost.params > cfg.max_params:
        raise UserError(f"--max-params {cfg.max_params}: no architecture of {space.name} fits; its smallest "
                        f"has {small_cost.params:.4g}M parameters")  # fmt: skip
    if large_cost is not None and cfg.min_mflops and large_cost.mflops < cfg.min_mflops:
        raise UserError(f"--min-mflops {cfg.min_mflops}: no architecture of {space.name} reaches it; its largest "
                        f"has {large_cost.mflops:.4g} MFLOPs")  # fmt: skip


def search_dir(cfg: SearchConfig) -> SearchDir:
    return RunDir(cfg.run_dir or ROOT / (cfg.run_name or "search")).search


def _resume(cfg: SearchConfig, searcher: Searcher, out: SearchDir) -> tuple[list[dict], int, float]:
    """Load the searcher state; return the journal, how many of its lines the state has seen, elapsed."""
    journal = out.journal
    truncate_torn_tail(journal)
    records = read_jsonl(journal)
    path = Path(cfg.resume) if cfg.resume not in ("", "auto") else out.state
    found = load_latest(path) if cfg.resume == "auto" else (load_checkpoint(path), path)
    if found is None:
        log.info("no search state in %s: starting over and replaying %d journal lines", out.path, len(records))
        return records, 0, 0.0
    state, used = found
    if state.get("searcher_name") != cfg.searcher or int(state.get("seed", -1)) != cfg.seed:
        raise UserError(f"{used} is from searcher {state.get('searcher_name')!r} seed {state.get('seed')}; "
                        "resume with the same --searcher and --seed or use a new --run-name")  # fmt: skip
    if state.get("executor", "inprocess") != cfg.executor and cfg.executor == "inprocess":
        raise UserError(f"{used} is from an asynchronous search (--executor {state['executor']}); resume it with "
                        f"--executor {state['executor']}")  # fmt: skip
    done = int(state["evaluated"])
    if done > len(records):
        raise CheckpointError(f"{used} saw {done} evaluations but {journal} has {len(records)}; restore the journal")
    searcher.load_state_dict(state["searcher"])
    log.info("resumed %s after %d evaluations (%d journal lines to replay)", used, done, len(records) - done)
    return records, done, float(state.get("elapsed", 0.0))


def run_search(cfg: SearchConfig) -> dict[str, Any]:
    """Run the search that `cfg` describes; return a summary (evaluations, best, output paths)."""
    out = search_dir(cfg)
    # the names come from the user's command line or config: import paths are allowed
    space = make_user_space(cfg.space, **cfg.space_opts)
    # a table alone (no latency bound) still gives the report its accuracy-latency front
    table = latency_table(space, cfg) if cfg.latency_table else None
    constraint = make_constraint(space, cfg, table)
    searcher = make_searcher(cfg.searcher, space, cfg.seed, constraint, trusted=True, **cfg.searcher_opts)
    journal = out.journal
    records, done, elapsed = [], 0, 0.0
    if cfg.resume:
        records, done, elapsed = _resume(cfg, searcher, out)
    elif read_jsonl(journal):
        raise UserError(f"{journal} already exists: pass --resume auto to continue it or choose a new --run-name")
    if cfg.executor == "ray":  # asynchronous trials on Ray workers: search/async_loop.py
        from search.async_loop import run_async_search

        return run_async_search(cfg, space, searcher, out, records, done, elapsed, latency=latency_of(space, table))
    evaluator = make_evaluator(cfg, space, trusted=True)
    if cfg.prior:
        log.info("%s prior: scoring %d uniform archs to place the evaluator's scores", cfg.prior, cfg.prior_reference)
        proxy = GradNorm(space, cfg, reps=cfg.prior_reps) if cfg.prior == "gradnorm" else None
        evaluator = SizePrior(
            evaluator, space, size=cfg.prior, reference=cfg.prior_reference, seed=cfg.seed, proxy=proxy
        )
    commit_run_config()  # the inputs were accepted: record this run's config
    replay = {r["str"]: r for r in records[done:]}  # evaluated after the last saved state
    n = len(records)
    stop = _loop(cfg, space, searcher, evaluator, out, records, replay, done, elapsed)
    if replay:
        log.warning("%d journal lines were not proposed again on resume (a nondeterministic searcher?)", len(replay))
    # Under torchrun every rank runs the same (seeded) searcher; rank 0 alone writes files.
    if distributed.is_main():
        metric_name = cfg.metric if cfg.evaluator == "table" else "metric"
        space_info = {"space": cfg.space, "space_opts": dict(cfg.space_opts)}
        result = write_outputs(records, out.path, cfg.topk, metric_name, space_info, latency_of(space, table))
    distributed.barrier()
    result = distributed.broadcast_object(result if distributed.is_main() else None)
    best = result["topk"][0] if result["topk"] else None
    log.info("search stopped (%s) after %d evaluations (%d this session)", stop, len(records), len(records) - n)
    return {
        "evaluated": len(records),
        "stopped": stop,
        "best": best,
        "dir": str(out.path),
        "journal": str(journal),
        "topk": str(out.topk),
    }


def _loop(cfg: SearchConfig, space: Space, searcher: Searcher, evaluator: Any, out: SearchDir, records: list[dict],
          replay: dict[str, dict], done: int, elapsed: float) -> str:  # fmt: skip
    """Rounds of propose / evaluate / journal / observe / checkpoint until a budget runs out."""
    writer = _tensorboard(out) if distributed.is_main() else None
    best = max((r["metric"] for r in records[:done] if _ok(r["metric"])), default=-math.inf)
    bar = _bar(cfg, done, best) if distributed.is_main() else None
    start, count, stop = time.perf_counter() - elapsed, done, "budget"
    with graceful_stop() as signalled:  # SIGTERM/SIGINT: finish the round, save the state, stop
        try:
            while count < cfg.budget:
                time_up = bool(cfg.time_budget_minutes) and time.perf_counter() - start >= 60 * cfg.time_budget_minutes
                if distributed.broadcast_object(time_up):  # rank 0's clock decides, so no rank waits alone
                    stop = "time"
                    break
                archs = searcher.propose(min(cfg.batch, cfg.budget - count))
                if not archs:
                    stop = "space exhausted"
                    break
                batch = _evaluate(cfg, space, evaluator, archs, records, replay, out.journal, writer)
                searcher.observe(archs, [r["metric"] for r in batch])
                count += len(archs)
                for r in batch:
                    best = max(best, r["metric"]) if _ok(r["metric"]) else best
                state = {"searcher": searcher.state_dict(), "searcher_name": cfg.searcher, "seed": cfg.seed,
                         "evaluated": count, "elapsed": time.perf_counter() - start,
                         "config": cfg.to_dict()}  # fmt: skip
                if distributed.is_main():
                    save_checkpoint(state, out.state)
                if bar is not None:
                    bar.update(len(archs))
                    bar.set_postfix(best=f"{best:.4f}")
                if distributed.broadcast_object(bool(signalled)):
                    stop = str(signalled.requested or "a signal on rank 0")
                    log.warning("stopped by %s after %d evaluations; rerun with --resume auto to continue", stop, count)
                    break
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
    return stop


def _evaluate(cfg: SearchConfig, space: Space, evaluator: Any, archs: list, records: list[dict],
              replay: dict[str, dict], journal: Path, writer: Any) -> list[dict]:  # fmt: skip
    """Journal lines for `archs`: replayed from the journal where present, else evaluated and appended."""
    todo = [a for a in archs if space.to_str(a) not in replay]
    fresh: dict[str, dict] = {}
    if todo:
        t0 = time.perf_counter()
        results = evaluator.evaluate(todo)
        if len(results) != len(todo):
            raise UserError(f"evaluator {cfg.evaluator} returned {len(results)} results for {len(todo)} archs")
        per = (time.perf_counter() - t0) / len(todo)
        for arch, res in zip(todo, results):
            fresh[space.to_str(arch)] = normalise(res, cfg.evaluator)
    out = []
    # numbered after the highest index in the journal, not by counting its lines: a corrupt line that
    # was skipped on reading must not make the next record reuse an index
    index = next_index(records)
    for arch in archs:
        key = space.to_str(arch)
        if key in replay:
            out.append(replay.pop(key))
            continue
        rec = _record(space, arch, fresh[key], index, per, cfg.num_classes or 10)
        index += 1
        if rec.get("error"):
            log.warning("%s failed (recorded with metric NaN, not retried): %s", key, rec["error"])
        if distributed.is_main():
            append_jsonl(journal, rec)
        records.append(rec)
        out.append(rec)
        if writer is not None and _ok(rec["metric"]):
            best = max((r["metric"] for r in records if _ok(r["metric"])), default=rec["metric"])
            writer.add_scalar("search/metric", rec["metric"], rec["index"])
            writer.add_scalar("search/best_so_far", best, rec["index"])
            if _ok(rec["report_metric"]):
                writer.add_scalar("search/report_metric", rec["report_metric"], rec["index"])
            for key in ("train_images_per_s", "data_wait"):  # the train evaluator's input-path figures
                if _ok(rec.get(key)):
                    writer.add_scalar(f"search/{key}", rec[key], rec["index"])
    return out


def _ok(m: Any) -> bool:
    return isinstance(m, (int, float)) and math.isfinite(m)


def _tensorboard(out: SearchDir) -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # TensorBoard is optional; the journal has everything
        return None
    return SummaryWriter(str(out.tb))


def _bar(cfg: SearchConfig, done: int, best: float) -> Any:
    if cfg.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.budget, initial=done, desc="search", unit="arch", dynamic_ncols=True)
