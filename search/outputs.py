"""What a search leaves behind, computed from its journal: top-k, Pareto front, and plots.

- `topk.json`: `[{"rank", "arch", "str", "metric", "report_metric", "mflops", "params"}]` (and
  "raw_metric", the evaluator's own score, when a `--prior` made "metric" a combined one; and, from
  the supernet evaluator, "score" (acc or nll, what "metric" is) with "acc" and "loss"), best
  first, ready for `run.py retrain --arch-file` (read an entry's "arch" with `space.from_json`).
- `pareto.json` / `pareto.png`: the architectures that no other beats on both metric (higher) and
  MFLOPs (lower).
- `pareto_latency.json` / `pareto_latency.png`, when the search had a `--latency-table`: the same
  front against the table's predicted latency (lower), each entry with its "latency_ms"; the
  `topk.json` entries then carry "latency_ms" too.
- `best_so_far.png`: the best metric against the number of evaluations.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ArchError, UserError
from core.rundir import SearchDir

log = logging.getLogger(__name__)


def _finite(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if isinstance(r.get("metric"), (int, float)) and math.isfinite(r["metric"])]


def _entry(rank: int, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "rank": rank,
        "arch": r["arch"],
        "str": r["str"],
        "metric": r["metric"],
        "report_metric": r.get("report_metric"),
        "mflops": r.get("mflops"),
        "params": r.get("params"),
        "index": r.get("index"),
    } | {k: r[k] for k in ("raw_metric", "gradnorm", "score", "acc", "loss", "latency_ms") if k in r}


def topk(records: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k best distinct networks (by canonical form), best first; ties keep journal order."""
    out, seen = [], set()
    for r in sorted(_finite(records), key=lambda r: -r["metric"]):
        key = r.get("canonical", r["str"])
        if key in seen:
            continue
        seen.add(key)
        out.append(_entry(len(out), r))
        if len(out) == k:
            break
    return out


def pareto_front(records: list[dict[str, Any]], cost: str = "mflops") -> list[dict[str, Any]]:
    """Non-dominated records for (max metric, min `cost`), sorted by cost; [] without costs.

    Of records with equal cost and metric only the first (in journal order) is kept.
    """
    pts = _costed(records, cost)
    front, best = [], -math.inf
    for r in sorted(pts, key=lambda r: (r[cost], -r["metric"])):
        if r["metric"] > best:
            front.append(r)
            best = r["metric"]
    return [_entry(i, r) for i, r in enumerate(front)]


def write_outputs(
    records: list[dict[str, Any]],
    out_dir: Path,
    k: int,
    metric_name: str = "metric",
    space: dict | None = None,
    latency: Callable[[dict[str, Any]], float] | None = None,
) -> dict[str, Any]:
    """Write topk.json, pareto.json and the two PNGs; return the top-k list and the front(s).

    `space` ({"space": name, "space_opts": {...}}) is copied into every entry, so that
    `run.py retrain --arch-file topk.json --rank R` rebuilds the searched macro-architecture.
    `latency` (a journal record -> predicted ms, from the search's latency table) adds the
    accuracy-latency front: pareto_latency.json and pareto_latency.png, under "pareto_latency".
    """
    out = SearchDir(out_dir)
    out.path.mkdir(parents=True, exist_ok=True)
    if latency is not None:
        records = _with_latency(records, latency)
    best = [{**e, **(space or {})} for e in topk(records, k)]
    front = [{**e, **(space or {})} for e in pareto_front(records)]
    _write_json(out.topk, best)
    _write_json(out.pareto, front)
    result = {"topk": best, "pareto": front}
    plots: list[tuple[Path, Callable[[], None]]] = [
        (out.pareto_plot, lambda: _plot_pareto(records, front, out.pareto_plot, metric_name)),
        (out.best_plot, lambda: _plot_best(records, out.best_plot, metric_name)),
    ]
    if latency is not None:
        lat_front = result["pareto_latency"] = [{**e, **(space or {})} for e in pareto_front(records, "latency_ms")]
        _write_json(out.pareto_latency, lat_front)
        path = out.pareto_latency_plot
        plots.append((path, lambda: _plot_pareto(records, lat_front, path, metric_name, "latency_ms")))
    for path, plot in plots:
        try:
            plot()
        except Exception as exc:  # plotting must never lose a finished search
            log.warning("could not draw %s (%s); the JSON files are written", path.name, exc)
    return result


def _with_latency(records: list[dict[str, Any]], latency: Callable[[dict[str, Any]], float]) -> list[dict[str, Any]]:
    """Copies of the records with their predicted "latency_ms" (the journal itself is not rewritten)."""
    out = []
    for r in records:
        try:
            ms = float(latency(r))
        except (ArchError, UserError, KeyError, TypeError) as exc:  # a line the table cannot price
            log.warning("no predicted latency for journal line %s (%s)", r.get("index"), exc)
            ms = None
        out.append({**r, "latency_ms": ms} if ms is not None else r)
    return out


def _costed(records: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    return [r for r in _finite(records) if isinstance(r.get(cost), (int, float)) and math.isfinite(r[cost])]


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COST_LABELS = {"mflops": "MFLOPs (multiply-accumulates)", "latency_ms": "predicted latency (ms, latency table)"}


def _plot_pareto(
    records: list[dict[str, Any]], front: list[dict[str, Any]], path: Path, metric_name: str, cost: str = "mflops"
) -> None:
    pts = _costed(records, cost)
    if not pts:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r[cost] for r in pts], [r["metric"] for r in pts], s=8, alpha=0.4, label="evaluated")
    ax.step([r[cost] for r in front], [r["metric"] for r in front], where="post", color="C3", label="Pareto front")
    ax.scatter([r[cost] for r in front], [r["metric"] for r in front], s=16, color="C3")
    ax.set_xlabel(COST_LABELS.get(cost, cost))
    ax.set_ylabel(metric_name)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_best(records: list[dict[str, Any]], path: Path, metric_name: str) -> None:
    xs, ys, best = [], [], -math.inf
    for i, r in enumerate(records, start=1):
        m = r.get("metric")
        if isinstance(m, (int, float)) and math.isfinite(m) and m > best:
            best = m
        if math.isfinite(best):
            xs.append(i)
            ys.append(best)
    if not xs:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, ys)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best {metric_name} so far")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
