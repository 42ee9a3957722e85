"""`run.py bench-nb201`: the one-shot pipeline on NAS-Bench-201, measured against the published table.

Per supernet training strategy (uniform SPOS, sandwich with in-place distillation, FairNAS's fair
sampling, and few-shot NAS's edge split), the NB201 supernet is trained on the training images of
the dataset (a search split carved from them) for the same wall-clock budget, with a cosine learning
rate that runs on elapsed time, so every strategy ends annealed however busy the machine is. Then:

1. ranking quality: >= 200 architectures drawn uniformly from the table (distinct canonical forms),
   plus some from the table's top 10%, are scored by the supernet evaluator (BN recalibration with N
   images, or off), and Kendall's tau / Spearman's rho against the table's `c10_test_200ep` are
   reported with bootstrap intervals (`bench.ranking`);
2. what the pipeline finds: LaNAS, regularized evolution and random search run ask/tell on the
   supernet evaluator (cached scores) for several seeds; the table accuracy of each returned arch.

Few-shot NAS follows Zhao et al., "Few-shot Neural Architecture Search" (ICML 2021): the one-shot
supernet trains for a share of the budget, then is copied into one sub-supernet per op of one edge,
each fine-tuned on the archs that use its op there; an arch is scored by the sub-supernet it falls in.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np

from bench.nb201.bias import ranking_report, worst_bias
from bench.nb201.config import BenchNB201Config
from bench.nb201.final import FinalStage, top_candidates
from bench.nb201.train import make_evaluator, train_supernet
from bench.ranking import scatter_plot
from core.errors import UserError
from search.evaluators.prior import SizePrior
from supernet.spaces.base import make_space

log = logging.getLogger(__name__)

# ---- the ranking and the searches -----------------------------------------------------------------


def draw_archs(space: Any, rows: dict[str, tuple[float, ...]], cfg: BenchNB201Config) -> dict[str, Any]:
    """`n_archs` rows drawn uniformly, then `n_top` from the best tenth, all distinct canonical forms."""
    strings = list(rows)
    truth_all = np.array([v[0] for v in rows.values()])
    threshold = float(np.quantile(truth_all, 0.9))
    rng = np.random.default_rng([cfg.sample_seed, 0x201])
    seen: set[Hashable] = set()

    def take(candidates: list[str], n: int) -> list[Hashable]:
        out = []
        for i in rng.permutation(len(candidates)):
            if len(out) >= n:
                break
            arch = space.from_str(candidates[i])
            if space.canonical(arch) not in seen:
                seen.add(space.canonical(arch))
                out.append(arch)
        return out

    uniform = take(strings, cfg.n_archs)
    if len(uniform) < min(cfg.n_archs, 3):
        raise UserError(f"table {cfg.table} holds only {len(uniform)} distinct cells; it needs at least 3")
    top = take([s for s in strings if rows[s][0] >= threshold], cfg.n_top)
    archs = uniform + top
    return {
        "archs": archs,
        "truth": np.array([rows[space.to_str(a)][0] for a in archs]),
        "n_uniform": len(uniform),
        "threshold": threshold,
        "table_best": float(truth_all.max()),
    }


def rank_quality(ev: Any, sample: dict[str, Any], cfg: BenchNB201Config) -> tuple[dict[str, Any], np.ndarray]:
    t0 = time.monotonic()
    score = np.zeros(len(sample["archs"]))
    for i, arch in enumerate(sample["archs"]):
        score[i] = ev.score(arch)["metric"]
        if (i + 1) % 50 == 0:
            log.info("  scored %d/%d archs in %.0f s", i + 1, len(score), time.monotonic() - t0)
    seconds = time.monotonic() - t0
    report = ranking_report(score, sample, cfg.bootstrap, cfg.seed)
    report.update({"eval_seconds": round(seconds, 1), "s_per_arch": round(seconds / len(score), 3)})
    return report, score


def baselines(sample: dict[str, Any], rows_proxy: dict[str, tuple[float, ...]] | None,
              cfg: BenchNB201Config) -> dict[str, Any]:  # fmt: skip
    """Rankings that need no supernet: parameter count (of the published C=16, N=5 net) and a table proxy."""
    full = make_space("nb201")
    params = np.array([full.cost(a).params for a in sample["archs"]])
    out = {"params": ranking_report(params, sample, cfg.bootstrap, cfg.seed)}
    if rows_proxy is not None:
        proxy = np.array([rows_proxy[full.to_str(a)][0] for a in sample["archs"]])
        out[cfg.proxy] = ranking_report(proxy, sample, cfg.bootstrap, cfg.seed)
    return out


def run_search(ev: Any, space: Any, rows: dict[str, tuple[float, ...]], cfg: BenchNB201Config,
               final: Any = None) -> dict[str, Any]:  # fmt: skip
    """Every searcher x seed, ask/tell on `ev`; the table truth of the arch each returns.

    With a `FinalStage` (`--final-k`), each search's `final_k` best-scored cells are also trained
    alone and the best on the search split is the pipeline's answer (`final` in each run's record).
    """
    from search.searchers import make_searcher

    truth_all = np.array([v[0] for v in rows.values()])
    pct = lambda t: float((truth_all < t).mean() * 100) if math.isfinite(t) else math.nan  # noqa: E731
    out: dict[str, Any] = {}
    candidates: dict[tuple[str, int], list[tuple[Hashable, float]]] = {}
    for name in cfg.searchers:
        runs = []
        for seed in range(cfg.search_seeds):
            t0, cached = time.monotonic(), len(ev.cache)
            searcher = make_searcher(name, space, seed, trusted=True)  # names from the command line
            evals = 0
            while evals < cfg.search_budget:
                archs = searcher.propose(min(cfg.search_batch, cfg.search_budget - evals))
                if not archs:
                    break
                searcher.observe(archs, [m["metric"] for m in ev.evaluate(archs)])
                evals += len(archs)
            arch, score = searcher.best()
            truth = rows.get(space.to_str(arch), (math.nan,))[0]  # a small test table may lack it
            # every distinct cell the search scored, best-scored first: did it ever visit a top cell?
            visited = [
                [space.to_str(a), round(m, 4), rows.get(space.to_str(a), (math.nan,))[0]]
                for a, m in top_candidates(space, *searcher.finite_history(), evals)
            ]
            finite = [i for i, v in enumerate(visited) if math.isfinite(v[2])]
            best_rank = max(finite, key=lambda i: visited[i][2]) if finite else -1
            runs.append({
                "seed": seed, "arch": space.to_str(arch), "score": score, "truth": truth, "evals": evals,
                "table_percentile": pct(truth), "new_scores": len(ev.cache) - cached,
                "seconds": round(time.monotonic() - t0, 1),
                "best_visited": visited[best_rank][2] if finite else math.nan,
                "best_visited_score_rank": best_rank + 1, "visited": visited,
            })  # fmt: skip
            if final is not None and name in cfg.final_searchers:
                candidates[(name, seed)] = top_candidates(space, *searcher.finite_history(), cfg.final_k)
        out[name] = _found(runs, "truth")
        log.info("  %-9s found %s", name, " ".join(f"{r['truth']:.2f}" for r in runs))
        log.info(
            "  %-9s best visited %s (its place in the search's own order)", name,
            " ".join(f"{r['best_visited']:.2f} (#{r['best_visited_score_rank']})" for r in runs),
        )  # fmt: skip
    if candidates:  # every search's candidates first, so the cells can be trained in parallel
        final.prepare([arch for cands in candidates.values() for arch, _ in cands])
        for (name, seed), cands in candidates.items():
            chosen = final.choose(cands)
            for row in chosen["candidates"]:
                row["truth"] = rows.get(row["arch"], (math.nan,))[0]
            truth = rows.get(chosen["arch"], (math.nan,))[0]
            out[name]["runs"][seed]["final"] = chosen | {"truth": truth, "table_percentile": pct(truth)}
        for name in dict.fromkeys(name for name, _ in candidates):
            runs = out[name]["runs"]
            out[name] |= {f"{k}_final": v for k, v in _found(runs, "truth", "final").items() if k != "runs"}
            log.info("  %-9s after the final stage %s", name, " ".join(f"{r['final']['truth']:.2f}" for r in runs))
    return out


def _found(runs: list[dict[str, Any]], key: str, part: str = "") -> dict[str, Any]:
    found = np.array([(r[part] if part else r)[key] for r in runs], dtype=float)
    return {
        "runs": runs,
        "mean_truth": float(np.nanmean(found)) if np.isfinite(found).any() else math.nan,
        "max_truth": float(np.nanmax(found)) if np.isfinite(found).any() else math.nan,
    }


def _proxy_rows(cfg: BenchNB201Config) -> dict[str, tuple[float, ...]] | None:
    from search.evaluators.table import load_table

    if not cfg.proxy:
        return None
    try:
        return load_table(cfg.table, "arch", (cfg.proxy,))
    except UserError as exc:
        log.warning("no proxy ranking: %s", exc)
        return None


def main(cfg: BenchNB201Config) -> dict[str, Any]:
    """Entry point of `run.py bench-nb201`: train, rank, search; JSON, plot and a logged table."""
    from core.rundir import resolve_run_dir
    from search.evaluators.table import load_table

    start = time.monotonic()
    if not cfg.table:
        raise UserError("bench-nb201 needs --table CSV (e.g. ../shared/benchmarks/nb201.csv)")
    root = resolve_run_dir(cfg, "bench-nb201")
    space = make_space("nb201", **cfg.space_opts)
    rows = load_table(cfg.table, "arch", (cfg.truth,))
    sample = draw_archs(space, rows, cfg)
    n = sample["n_uniform"]
    result: dict[str, Any] = {
        "config": cfg.to_dict(),
        "table": {"best": sample["table_best"], "top10_threshold": sample["threshold"], "truth": cfg.truth},
        "sample": {
            "n_uniform": n,
            "n_top10_scored": int((sample["truth"] >= sample["threshold"]).sum()),
            "archs": [space.to_str(a) for a in sample["archs"]],  # uniform draw first, then the best tenth
            "truth": sample["truth"].tolist(),
        },
        "scores": {},
        "baselines": baselines(sample, _proxy_rows(cfg), cfg),
        "supernets": {}, "ranking": {}, "search": {},
    }  # fmt: skip
    panels: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    final = None
    if cfg.final_k:
        final = FinalStage(cfg, root)
    for strategy in cfg.strategies:
        stats, ckpts = train_supernet(cfg, strategy, root)
        result["supernets"][strategy] = stats
        for i, recal in enumerate(cfg.recal):
            name = f"{strategy}/recal{recal}"
            ev = make_evaluator(cfg, space, ckpts, recal)
            report, score = rank_quality(ev, sample, cfg)
            evaluators = {name: (ev, report, score)}
            if cfg.size_prior:  # the same scores averaged with a size prior (no new supernet evaluations)
                prior = SizePrior(ev, space, size=cfg.size_prior, reference_scores=score[:n], seed=cfg.seed)
                pscore = np.array([prior.combine(a, s)["metric"] for a, s in zip(sample["archs"], score, strict=True)])
                key = f"{name}+{cfg.size_prior}"
                evaluators[key] = (prior, ranking_report(pscore, sample, cfg.bootstrap, cfg.seed), pscore)
            searching = cfg.search_on == "all" or (cfg.search_on == "first" and strategy == cfg.strategies[0])
            for key, (evaluator, rep, sc) in evaluators.items():
                result["ranking"][key], result["scores"][key] = rep, sc.tolist()
                panels[key] = (sc[:n], sample["truth"][:n], rep["uniform"]["tau"])
                log.info("%s: tau %.3f top10 tau %.3f", key, rep["uniform"]["tau"], rep["top10"]["tau"])
                log.info("  largest op biases (truth - score percentile; < 0: overvalued): %s",
                         ", ".join(f"{e} {op} {v:+.2f}" for e, op, v in worst_bias(rep["op_bias"])))  # fmt: skip
                if i == 0 and searching:
                    t0 = time.monotonic()
                    finals = cfg.final_on == "all" or not cfg.size_prior or key.endswith(f"+{cfg.size_prior}")
                    result["search"][key] = run_search(evaluator, space, rows, cfg, final if finals else None)
                    result["search"][key]["seconds"] = round(time.monotonic() - t0, 1)
            del ev, evaluators
        _write_json(cfg, result)  # partial figures survive an interrupted run
    if final is not None:
        result["final_stage"] = {"k": cfg.final_k, "epochs": cfg.final_epochs, "cells": list(final.cache.values()),
                                 "train_seconds": round(final.train_seconds, 1)}  # fmt: skip
    result["seconds"] = round(time.monotonic() - start, 1)
    scatter_plot(panels, cfg.plot or root / "ranking.png", cfg.truth)
    _write_json(cfg, result)
    log_summary(result)
    return result


def _write_json(cfg: BenchNB201Config, result: dict[str, Any]) -> None:
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(_finite(result), indent=1, default=str))


def _finite(value: Any) -> Any:
    """NaN/inf as null, so the JSON is strict (NaN is Python's extension, not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def log_summary(result: dict[str, Any]) -> None:
    """One line per supernet x recalibration (and baseline), as the docs tabulate them."""
    ci = lambda r: f"{r['tau']:.3f} [{r['tau_ci'][0]:.2f},{r['tau_ci'][1]:.2f}]"  # noqa: E731
    for name, rep in {**result["ranking"], **{f"baseline {k}": v for k, v in result["baselines"].items()}}.items():
        strategy = name.split("/")[0]
        steps = result["supernets"].get(strategy, {}).get("steps", "-")
        log.info(
            "%-26s steps %-6s tau %s rho %.3f | top10 tau %s | best of draw %.2f",
            name, steps, ci(rep["uniform"]), rep["uniform"]["rho"], ci(rep["top10"]), rep["best_of_draw_truth"],
        )  # fmt: skip
    for name, res in result["search"].items():
        for searcher, r in res.items():
            if isinstance(r, dict):
                log.info("search on %s: %-9s mean %.2f max %.2f", name, searcher, r["mean_truth"], r["max_truth"])
                if "mean_truth_final" in r:
                    log.info("  + final stage (%d cells alone): mean %.2f max %.2f", result["config"]["final_k"],
                             r["mean_truth_final"], r["max_truth_final"])  # fmt: skip
