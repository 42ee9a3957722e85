"""What a search leaves behind, computed from its journal: top-k, Pareto front, and plots.

- `topk.json`: `[{"rank", "arch", "str", "metric", "report_metric", "mflops", "params"}]` (and
  "raw_metric", the evaluator's own score, when a `--prior` made "metric" a combined one; and, from
  the supernet evaluator, "score" (acc or nll, what "metric" is) with "acc" and "loss"), best
  first, ready for `run.py retrain --arch-file` (read an entry's "arch" with `space.from_json`).
- `pareto.json` / `pareto.png`: the architectures that no other beats on both metric (higher) and
  MFLOPs (lower).
- `best_so_far.png`: the best metric against the number of evaluations.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

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
    } | {k: r[k] for k in ("raw_metric", "gradnorm", "score", "acc", "loss") if k in r}  # --prior; a supernet


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


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated records for (max metric, min MFLOPs), sorted by MFLOPs; [] without costs."""
    pts = [r for r in _finite(records) if isinstance(r.get("mflops"), (int, float))]
    front, best = [], -math.inf
    for r in sorted(pts, key=lambda r: (r["mflops"], -r["metric"])):
        if r["metric"] > best:
            front.append(r)
            best = r["metric"]
    return [_entry(i, r) for i, r in enumerate(front)]


def write_outputs(
    records: list[dict[str, Any]], out_dir: Path, k: int, metric_name: str = "metric", space: dict | None = None
) -> dict[str, Any]:
    """Write topk.json, pareto.json and the two PNGs; return the top-k list and the front.

    `space` ({"space": name, "space_opts": {...}}) is copied into every entry, so that
    `run.py retrain --arch-file topk.json --rank R` rebuilds the searched macro-architecture.
    """
    out = SearchDir(out_dir)
    out.path.mkdir(parents=True, exist_ok=True)
    best = [{**e, **(space or {})} for e in topk(records, k)]
    front = [{**e, **(space or {})} for e in pareto_front(records)]
    _write_json(out.topk, best)
    _write_json(out.pareto, front)
    try:
        _plot_pareto(records, front, out.pareto_plot, metric_name)
        _plot_best(records, out.best_plot, metric_name)
    except Exception as exc:  # plotting must never lose a finished search
        log.warning("could not draw the search plots (%s); the JSON files are written", exc)
    return {"topk": best, "pareto": front}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_pareto(records: list[dict[str, Any]], front: list[dict[str, Any]], path: Path, metric_name: str) -> None:
    pts = [r for r in _finite(records) if isinstance(r.get("mflops"), (int, float))]
    if not pts:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["mflops"] for r in pts], [r["metric"] for r in pts], s=8, alpha=0.4, label="evaluated")
    ax.step([r["mflops"] for r in front], [r["metric"] for r in front], where="post", color="C3", label="Pareto front")
    ax.scatter([r["mflops"] for r in front], [r["metric"] for r in front], s=16, color="C3")
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
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
