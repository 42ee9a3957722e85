"""Sample-efficiency benchmark of the searchers on a lookup table (`run.py bench-search`).

Every searcher runs against the table (NAS-Bench-201's `nb201.csv`, or any CSV whose arch column
matches `space.to_str`) for seeds 0..N-1, all in one process with the table in memory. Per
searcher it reports the median and mean number of evaluations (distinct networks) needed to reach
the table's best value of the searched metric, and the mean best metric (and the report metric of
the best arch so far) after 50, 100, 200 and 500 evaluations, and plots the mean best-so-far curves.

Protocols on nb201.csv: (a) `--metric c10_test_200ep`; (b) `--metric c10_valid_12ep
--report-metric c10_test_200ep` (search on the cheap proxy, report the final test accuracy); (c) as
(b) with `--noise SD`: the proxy observed with a fixed per-arch error, like a supernet's scores.
"Evaluations to the best" counts until the arch with the best *true* metric is evaluated.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.search_async import AsyncBenchOptions, run_async_bench, validate_async_bench
from core.config import opt
from core.errors import UserError
from search.evaluators.table import load_table
from search.searchers import make_searcher
from supernet.spaces.base import Space, make_user_space

log = logging.getLogger(__name__)
CHECKPOINTS = (50, 100, 200, 500)


@dataclass
class BenchSearchConfig(AsyncBenchOptions):
    """`run.py bench-search`: every searcher against a lookup table, many seeds, one process."""

    table: str = opt("", "CSV with one row per architecture of the space (e.g. ../shared/benchmarks/nb201.csv)")
    arch_column: str = opt("arch", "table column holding the arch string (space.to_str)")
    metric: str = opt("c10_test_200ep", "table column the searchers maximise")
    report_metric: str = opt("", "table column reported for the best arch found (default: --metric)")
    space: str = opt("nb201", "search space whose to_str matches the arch column: a name or module:Class")
    space_opts: dict = opt({}, "keyword options for the space, KEY=VALUE")
    searchers: str = opt("lanas,evolution,random", "comma-separated searchers (names or module:Class)")
    searcher_opts: dict = opt({}, "per-searcher options as NAME.KEY=VALUE (e.g. lanas.height=4)")
    seeds: int = opt(100, "independent runs per searcher, seeds 0..N-1")
    budget: int = opt(500, "evaluations per run at most (a run that found the best stops early)")
    batch: int = opt(1, "proposals per round (q)")
    json: str = opt("", "write the figures to this JSON file")
    plot: str = opt("", "write the mean best-so-far curves to this PNG")
    overhead_space: str = opt("", "also time LaNAS per proposal with 1,000 observations on this space (e.g. nasnet)")
    quiet: bool = opt(False, "no progress bar")
    noise: float = opt(0.0, "observe the metric with a fixed Gaussian error of this SD per (seed, arch)")

    def __post_init__(self) -> None:
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise UserError(f"--noise must be a finite number >= 0, got {self.noise}")
        if not self.table:
            raise UserError("bench-search needs --table CSV (for example ../shared/benchmarks/nb201.csv)")
        if self.seeds < 1 or self.budget < 1 or self.batch < 1:
            raise UserError("--seeds, --budget and --batch must be >= 1")
        if not [s for s in self.searchers.split(",") if s.strip()]:
            raise UserError("--searchers needs at least one name, e.g. lanas,evolution,random")
        validate_async_bench(self)

    def opts_for(self, searcher: str) -> dict[str, Any]:
        """The `searcher_opts` entries prefixed with `searcher.`, without the prefix."""
        out = {}
        for key, value in self.searcher_opts.items():
            name, sep, sub = key.partition(".")
            if not sep:
                raise UserError(f"--searcher-opts {key}: write it as SEARCHER.KEY=VALUE, e.g. lanas.height=4")
            if name == searcher:
                out[sub] = value
        return out


class _Lookup:
    """Table values by arch object, memoised (to_str once per distinct arch across all runs).

    With `noise` > 0 the searched metric is observed with a fixed Gaussian error per (seed, arch), of
    that standard deviation: each seed searches its own noisy landscape, as each trained supernet
    scores cells with its own errors, and an arch evaluated twice in one run gets the same value."""

    def __init__(self, space: Space, rows: dict[str, tuple[float, ...]], noise: float = 0.0) -> None:
        self.space, self.rows, self.noise, self.memo = space, rows, noise, {}

    def __call__(self, arch: Any, seed: int = 0) -> tuple[float, float, float]:
        """(observed metric, true metric, report metric)."""
        hit = self.memo.get(arch)
        if hit is None:
            key = self.space.to_str(arch)
            values = self.rows[key]
            hit = self.memo[arch] = (values[0], values[-1], zlib.crc32(key.encode()))
        metric, report, key_hash = hit
        observed = metric
        if self.noise > 0:
            observed += self.noise * float(np.random.default_rng([seed, key_hash]).standard_normal())
        return observed, metric, report


def run_one(name: str, seed: int, space: Space, lookup: _Lookup, target: float, cfg: BenchSearchConfig) -> dict:
    """One search until the budget or the first arch with the target metric; curves padded to the budget."""
    searcher = make_searcher(name, space, seed, None, trusted=True, **cfg.opts_for(name))
    best, best_report, hit = -math.inf, math.nan, None
    curve, report_curve = [], []
    start = time.perf_counter()
    while len(curve) < cfg.budget and hit is None:
        archs = searcher.propose(min(cfg.batch, cfg.budget - len(curve)))
        if not archs:
            break  # the space is used up
        values = [lookup(a, seed) for a in archs]
        searcher.observe(archs, [v[0] for v in values])
        for observed, metric, report in values:
            if observed > best:  # what the search would return: its best *observed* arch
                best, best_report = observed, report
            curve.append(best)
            report_curve.append(best_report)
            if hit is None and metric >= target:
                hit = len(curve)
    seconds = time.perf_counter() - start
    n = len(curve)
    pad = cfg.budget - n  # after the best value nothing changes, so the curve stays flat
    return {
        "seed": seed,
        "hit": hit,
        "evals": n,
        "seconds": seconds,
        "curve": np.asarray(curve + [curve[-1]] * pad),
        "report_curve": np.asarray(report_curve + [report_curve[-1]] * pad),
    }


def summarise(runs: list[dict], budget: int) -> dict[str, Any]:
    """Median/mean evaluations to the best (misses count as the budget: a lower bound) and curve means."""
    hits = [r["hit"] for r in runs]
    found = [h for h in hits if h is not None]
    as_budget = np.asarray([h if h is not None else budget for h in hits], dtype=float)
    misses = len(hits) - len(found)
    median = float(np.median(as_budget)) if misses <= len(hits) // 2 else None
    out: dict[str, Any] = {
        "runs": len(runs),
        "found": len(found),
        "median_evals_to_best": median,
        "mean_evals_to_best": float(as_budget.mean()),
        "mean_is_lower_bound": misses > 0,
        "mean_best": {},
        "mean_best_report": {},
        "ms_per_proposal": 1000.0 * sum(r["seconds"] for r in runs) / max(1, sum(r["evals"] for r in runs)),
    }
    for c in CHECKPOINTS:
        if c <= budget:
            out["mean_best"][str(c)] = float(np.mean([r["curve"][c - 1] for r in runs]))
            out["mean_best_report"][str(c)] = float(np.mean([r["report_curve"][c - 1] for r in runs]))
    return out


def run_bench_search(cfg: BenchSearchConfig, space: Space | None = None) -> dict[str, Any]:
    """Run every searcher over every seed; log a table, write `cfg.json` / `cfg.plot`; return the figures."""
    space = space or make_user_space(cfg.space, **cfg.space_opts)
    report = cfg.report_metric or cfg.metric
    rows = load_table(cfg.table, cfg.arch_column, (cfg.metric, report))
    target = max(v[0] for v in rows.values())
    lookup = _Lookup(space, rows, cfg.noise)
    if cfg.executor == "ray":  # asynchronous against synchronous search on Ray: bench/search_async.py
        out = run_async_bench(cfg, space, lookup, target)
        out["config"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
        if cfg.json:
            Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.json).write_text(json.dumps(out, indent=1))
        return out
    names = [s.strip() for s in cfg.searchers.split(",") if s.strip()]
    summary: dict[str, Any] = {"metric": cfg.metric, "report_metric": report, "target": target, "searchers": {}}
    curves = {}
    for name in names:
        runs = []
        for seed in _progress(range(cfg.seeds), name, cfg.quiet):
            runs.append(run_one(name, seed, space, lookup, target, cfg))
        summary["searchers"][name] = summarise(runs, cfg.budget)
        summary["searchers"][name]["hits"] = [r["hit"] for r in runs]
        curves[name] = np.mean([r["report_curve"] for r in runs], axis=0)
        _log_line(name, summary["searchers"][name])
    if cfg.overhead_space:
        summary["lanas_overhead_ms"] = measure_overhead(make_user_space(cfg.overhead_space), cfg.opts_for("lanas"))
        log.warning("lanas overhead on %s with 1000 observations: %s", cfg.overhead_space, summary["lanas_overhead_ms"])
    summary["config"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(summary, indent=1))
    if cfg.plot:
        plot_curves(curves, report, cfg.plot)
    return summary


def measure_overhead(space: Space, opts: dict[str, Any], n_obs: int = 1000, proposals: int = 20) -> dict[str, float]:
    """LaNAS's own time per proposal (tree rebuild + drawing), after `n_obs` observations.

    The metric is a fixed random linear function of the encoding plus noise, so the tree splits
    the way it would on real data; evaluation time is not included.
    """
    rng = np.random.default_rng(0)
    w = rng.normal(size=space.encoding_dim)
    score = lambda a: float(space.encode(a) @ w + rng.normal())  # noqa: E731
    searcher = make_searcher("lanas", space, 0, None, **opts)
    archs = list({space.sample(rng): None for _ in range(n_obs)})
    searcher.observe(archs, [score(a) for a in archs])
    times = []
    for _ in range(proposals):
        start = time.perf_counter()
        new = searcher.propose(1)
        times.append(time.perf_counter() - start)
        searcher.observe(new, [score(a) for a in new])
    ms = 1000 * np.asarray(times)
    return {"mean": float(ms.mean()), "median": float(np.median(ms)), "max": float(ms.max()), "dim": space.encoding_dim}


def _log_line(name: str, s: dict[str, Any]) -> None:
    med = "n/a" if s["median_evals_to_best"] is None else f"{s['median_evals_to_best']:.0f}"
    mean = f"{'>=' if s['mean_is_lower_bound'] else ''}{s['mean_evals_to_best']:.1f}"
    at = " ".join(f"@{k}:{v:.3f}" for k, v in s["mean_best_report"].items())
    log.warning(
        "%-10s found %d/%d  median %s  mean %s evals to best  report %s  (%.2f ms/proposal)",
        name, s["found"], s["runs"], med, mean, at, s["ms_per_proposal"],
    )  # fmt: skip


def _progress(it: range, name: str, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return it
    from tqdm import tqdm

    return tqdm(it, desc=name, leave=False)


def plot_curves(curves: dict[str, np.ndarray], ylabel: str, path: str) -> None:
    """Mean best-so-far curves, one line per searcher, log-scaled evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("evaluations (distinct architectures)")
    ax.set_ylabel(f"mean best-so-far {ylabel}")
    lo = min(float(np.percentile(c, 5)) for c in curves.values())
    hi = max(float(c.max()) for c in curves.values())
    ax.set_ylim(lo, hi + 0.05 * (hi - lo + 1e-9))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
