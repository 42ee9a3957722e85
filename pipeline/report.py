"""The run report: `report.md` and `report.html` (pictures embedded) in the run directory.

Contents: the supernet's training curves and subnet-panel accuracies, the search's best-so-far
curve and its accuracy-vs-MFLOPs scatter with the Pareto front and the retrained architectures
marked, the accuracy-vs-predicted-latency front when the search had a `--latency-table` (its plot
and a table of its architectures), a drawing of the chosen architecture, and a table of the
retrained models.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
from pathlib import Path
from typing import Any

from core.jsonl import read_jsonl
from core.rundir import RunDir
from supernet.spaces.base import Space


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def supernet_curves(run_dir: Path, path: Path) -> int:
    """Train loss and panel accuracies per epoch; returns the number of epochs plotted."""
    rows = [r for r in read_jsonl(RunDir(run_dir).supernet.metrics) if "epoch" in r]
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = [r["epoch"] for r in rows]
    a.plot(epochs, [r.get("train_loss") for r in rows], "o-")
    a.set(xlabel="epoch", ylabel="train loss (sum over the subnets of a step)", title="supernet training")
    for key in sorted({k for r in rows for k in r if k.startswith("acc_")}):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        b.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key[4:])
    b.set(xlabel="epoch", ylabel="search-split accuracy (%)", title="subnet panel (after BN recalibration)")
    if rows:
        b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(rows)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(mflops, metric) points no other point beats on both (lower MFLOPs, higher metric)."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def metric_name(record: dict[str, Any]) -> str:
    """What a search's "metric" is: a size-prior score, a supernet's minus cross-entropy, or an accuracy.

    Supernet records name their score ("acc" or "nll"); journals written before they did are read by
    whether the metric is minus the recorded loss.
    """
    if "raw_metric" in record:
        return "score (with gradnorm prior)" if "gradnorm" in record else "score (with size prior)"
    score = record.get("score")
    if score is None:
        metric, loss = record.get("metric"), record.get("loss")
        numbers = isinstance(metric, (int, float)) and isinstance(loss, (int, float))
        score = "nll" if numbers and abs(metric + loss) < 1e-5 else "acc"
    return "minus cross-entropy" if score == "nll" else "accuracy (%)"


def describe_estimate(best: dict[str, Any]) -> str:
    """'accuracy (%) 24.20', 'minus cross-entropy -1.978 (top-1 22.4%)', or a prior's score and its parts."""
    name = metric_name(best)
    if "raw_metric" in best:  # a prior's percentile average: say what went into it
        inner = describe_estimate({k: v for k, v in best.items() if k not in ("raw_metric", "metric")}
                                  | {"metric": best["raw_metric"]})  # fmt: skip
        proxy = f", log gradient norm {best['gradnorm']:.3g}" if isinstance(best.get("gradnorm"), (int, float)) else ""
        return f"{name} {best['metric']:.1f} of 100 ({inner}{proxy})"
    text = f"{name} {best['metric']:.2f}" if name.startswith("accuracy") else f"{name} {best['metric']:.4g}"
    acc = best.get("acc")
    return text + (f" (top-1 {acc:.1f}%)" if isinstance(acc, (int, float)) and not name.startswith("accuracy") else "")


def search_plots(records: list[dict[str, Any]], chosen: list[str], curve: Path, scatter: Path) -> int:
    """Best-so-far curve and metric-vs-MFLOPs scatter; returns the number of points scattered."""
    plt = _plt()
    ok = [r for r in records if isinstance(r.get("metric"), (int, float)) and math.isfinite(r["metric"])]
    name = metric_name(ok[0]) if ok else "accuracy (%)"
    best, running = [], -math.inf
    for r in ok:
        running = max(running, r["metric"])
        best.append(running)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(range(1, len(best) + 1), best)
    ax.set(xlabel="architectures evaluated", ylabel=f"best search-split {name}", title="search: best so far")
    fig.tight_layout()
    fig.savefig(curve, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    pts = [(float(r.get("mflops") or 0), r["metric"]) for r in ok]
    sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, alpha=0.6, label="evaluated")
    front = pareto_front(pts)
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
    marked = [r for r in ok if r["str"] in chosen]
    ax.scatter(
        [r.get("mflops") or 0 for r in marked],
        [r["metric"] for r in marked],
        s=90,
        marker="*",
        c="red",
        label="retrained",
        zorder=3,
    )
    title = f"{name.split(' (')[0]} vs cost"
    ax.set(xlabel="MFLOPs (multiply-accumulates)", ylabel=f"search-split {name}", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(scatter, dpi=110)
    plt.close(fig)
    return len(sc.get_offsets())


def write_report(run_dir: Path, space: Space, retrained: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the plots, report.md and report.html; return their paths and what was plotted."""
    run_dir = Path(run_dir)
    figs = run_dir / "report"
    figs.mkdir(exist_ok=True)
    records = read_jsonl(RunDir(run_dir).search.journal)
    topk = json.loads(RunDir(run_dir).search.topk.read_text())
    chosen = [t["str"] for t in topk[: max(1, sum(r["arch_id"].startswith("top") for r in retrained))]]
    epochs = supernet_curves(run_dir, figs / "supernet.png")
    points = search_plots(records, chosen, figs / "best_so_far.png", figs / "scatter.png")
    space.draw(space.from_json(topk[0]["arch"]), figs / "arch.png")
    rows = [_row(r) for r in retrained]
    md = _markdown(topk[0], rows, epochs, len(records), latency_section(run_dir, figs))
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(_html(md, figs))
    info = {
        "markdown": str(run_dir / "report.md"),
        "html": str(run_dir / "report.html"),
        "plotted_points": points,
        "evaluated": len(records),
        "epochs": epochs,
    }
    (figs / "plotted.json").write_text(json.dumps(info, indent=1))
    return info


def latency_section(run_dir: Path, figs: Path) -> list[str]:
    """Markdown lines of the search's accuracy-vs-predicted-latency front (written by a search with
    `--latency-table`): its plot, copied into `figs`, and a table of its architectures; [] without."""
    search = RunDir(run_dir).search
    if not search.pareto_latency.is_file():
        return []
    front = json.loads(search.pareto_latency.read_text())
    lines = ["### Accuracy vs predicted latency", ""]
    if search.pareto_latency_plot.is_file():
        shutil.copyfile(search.pareto_latency_plot, figs / "latency.png")
        lines += ["![latency front](report/latency.png)", ""]
    name = metric_name(front[0]) if front else "metric"
    head = ["predicted latency (ms)", f"search-split {name}", "MFLOPs", "params (M)", "journal line"]
    lines += [
        f"Pareto front: {len(front)} architectures that no other evaluated one beats on both "
        f"(architectures in {search.pareto_latency.relative_to(run_dir)}).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for e in front:
        cells = (e.get("latency_ms"), e.get("metric"), e.get("mflops"), e.get("params"), e.get("index"))
        lines.append("| " + " | ".join(_fmt(v) for v in cells) + " |")
    return lines + [""]


def retrained_top1(result: dict[str, Any]) -> float | None:
    """The final test top-1 of a retrain report (raw weights; the EMA's is in the report beside it)."""
    value = (result.get("final") or {}).get("test_top1")
    return float(value) if isinstance(value, (int, float)) else None


def _row(r: dict[str, Any]) -> dict[str, Any]:
    cost = r.get("complexity") or r.get("cost") or r  # retrain's report.json keeps them under "complexity"
    ema = (r.get("final") or {}).get("ema_test_top1")
    return {
        "model": r["arch_id"],
        "test top-1 (%)": retrained_top1(r),
        "EMA test top-1 (%)": ema,
        "params (M)": cost.get("params_m", cost.get("params")),
        "MFLOPs": cost.get("mflops"),
        "MicroNet score": cost.get("micronet_score", r.get("micronet_score")),
    }


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))


def _markdown(
    best: dict[str, Any], rows: list[dict[str, Any]], epochs: int, evaluated: int, latency: list[str] | None = None
) -> str:
    head = list(rows[0]) if rows else ["model"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(_fmt(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(
        [
            "# NAS run report",
            "",
            f"Best architecture found: `{best['str']}`",
            "",
            f"Search-split estimate: {describe_estimate(best)}; {_fmt(best.get('mflops'))} MFLOPs, "
            f"{_fmt(best.get('params'))}M parameters"
            + (f", {best['latency_ms']:.3g} ms predicted latency." if "latency_ms" in best else "."),
            "",
            f"## Supernet ({epochs} epochs)",
            "",
            "![supernet](report/supernet.png)",
            "",
            f"## Search ({evaluated} architectures evaluated)",
            "",
            "![best so far](report/best_so_far.png)",
            "",
            "![scatter](report/scatter.png)",
            "",
            *(latency or []),
            "## Chosen architecture",
            "",
            "![architecture](report/arch.png)",
            "",
            "## Retrained models (test split)",
            "",
            *table,
            "",
            "MicroNet score: 0.5 * params / 36.5M + ops / 10.49B (16-bit parameters, against WideResNet-28-10).",
            "",
        ]
    )


def _html(md: str, figs: Path) -> str:
    """A self-contained page: the markdown's text with the PNGs inlined as data URIs."""
    out = [
        "<!doctype html><meta charset='utf-8'><title>NAS run report</title>",
        "<body style='font-family:sans-serif;max-width:1100px;margin:auto'>",
    ]
    table: list[str] = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
                table.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if table:
            out.append("<table border=1 cellpadding=4>" + "".join(table) + "</table>")
            table = []
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1].split("/")[-1]
            data = base64.b64encode((figs / name).read_bytes()).decode()
            out.append(f"<img src='data:image/png;base64,{data}' style='max-width:100%'>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out + ["</body>"])
