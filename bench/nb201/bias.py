"""How well a ranking of NAS-Bench-201 cells follows the table, and where it errs.

`ranking_report` gives the figures `run.py bench-nb201` saves per ranking: tau and rho with their
intervals on the uniform draw and on the table's best tenth, and `op_bias`, the error by op on each
edge. `conv_depth` groups cells by the number of convolutions on their longest input-to-output path
(`bench.nb201.compare`). Both biases compare percentiles, (truth percentile - score
percentile): negative where the scorer overvalues a group of cells, positive where it undervalues
it; a scorer whose errors are noise gives about 0.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from bench.ranking import correlation_report, rankdata
from supernet.nets.nb201 import EDGES, OPS


def ranking_report(score: np.ndarray, sample: dict[str, Any], bootstrap: int, seed: int) -> dict[str, Any]:
    """tau/rho of `score` on the uniform draw and on every scored arch in the table's best tenth; op bias."""
    n, truth = sample["n_uniform"], sample["truth"]
    top = truth >= sample["threshold"]
    best = int(np.argmax(score[:n]))  # what picking the scorer's favourite of the draw would give
    return {
        "uniform": correlation_report(score[:n], truth[:n], bootstrap, seed),
        "top10": correlation_report(score[top], truth[top], bootstrap, seed),
        "best_of_draw_truth": float(truth[best]),
        "best_of_draw_score": float(score[best]),
        "op_bias": op_bias(sample["archs"][:n], score[:n], truth[:n]),
    }


def percentile_residual(score: Sequence[float], truth: Sequence[float]) -> np.ndarray:
    """(rank of truth - rank of score) / n, per cell."""
    return (rankdata(np.asarray(truth, float)) - rankdata(np.asarray(score, float))) / len(score)


def op_bias(archs: list[Hashable], score: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Per edge ("to<-from") and op: the mean percentile residual of the cells with that op there."""
    if len(archs) < 2:
        return {}
    residual = percentile_residual(score, truth)
    out: dict[str, dict[str, float]] = {}
    for e, (to, frm) in enumerate(EDGES):
        ops = np.array([arch[e] for arch in archs])
        out[f"{to}<-{frm}"] = {op: round(float(residual[ops == op].mean()), 4) for op in OPS if (ops == op).any()}
    return out


def worst_bias(bias: dict[str, dict[str, float]], k: int = 3) -> list[tuple[str, str, float]]:
    """The k (edge, op, bias) entries of `op_bias` with the largest magnitude."""
    flat = [(edge, op, v) for edge, per_op in bias.items() for op, v in per_op.items()]
    return sorted(flat, key=lambda t: -abs(t[2]))[:k]


def conv_depth(arch: Sequence[str]) -> int:
    """Convolutions on the longest path from the cell's input (node 0) to its output (node 3); -1 if cut off."""
    depth = {0: 0}
    for node in (1, 2, 3):
        inbound = [depth[frm] + op.startswith("nor_conv") for (to, frm), op in zip(EDGES, arch)
                   if to == node and op != "none" and depth[frm] >= 0]  # fmt: skip
        depth[node] = max(inbound, default=-1)
    return depth[3]
