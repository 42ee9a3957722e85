"""Compare the rankings of several `run.py bench-nb201` results on their common draw of cells.

    python -m bench.nb201.compare docs/bench/nb201-70min-sandwich.json:sandwich/recal500 \
        docs/bench/nb201-110min-sandwich.json:sandwich/recal500

Each argument is RESULT_JSON:SCORE_KEY (a key of the result's "scores"). Per ranking it prints
Kendall's tau and Spearman's rho on the uniform draw; the mean score by op on the input-to-output
edge (3<-0) among all scored cells above 93% in the table; the largest per-edge op biases
(`bench.nb201.bias.op_bias`); and the same bias by the number of convolutions on the cell's
longest input-to-output path (positive: deeper cells are undervalued). With two or more rankings
it also prints their rank-averaged ensemble. All results must hold the same drawn cells.

Two reference rankings need no result file: `params` (parameter count of the published C=16, N=5
net) and `table:COLUMN` (a column of the table, e.g. `table:c10_valid_12ep`, read from `--table CSV`,
default ../shared/benchmarks/nb201.csv). `--corrected` adds, as a diagnostic that uses the table's
labels (not a method), the tau after a per-(edge, op) ridge correction fitted on 4/5 of the draw and
applied to the held-out fifth. `--size-prior` adds each ranking averaged with the parameter-count
percentile, as `run.py bench-nb201 --size-prior params` computes it (`search/evaluators/prior.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench.nb201.bias import conv_depth, op_bias, percentile_residual, worst_bias
from bench.ranking import bootstrap_ci, kendall_tau, rankdata, spearman_rho
from core.errors import UserError
from search.evaluators.prior import SizePrior
from search.evaluators.table import load_table
from supernet.nets.nb201 import OPS
from supernet.spaces.base import make_space

TABLE = "../shared/benchmarks/nb201.csv"


def corrected_tau(cells: list, score: np.ndarray, truth: np.ndarray, folds: int = 5, lam: float = 1.0) -> float:
    """tau after a cross-validated ridge fit of the percentile residual on the one-hot (edge, op) encoding."""
    space = make_space("nb201")
    x = np.c_[np.array([space.encode(c) for c in cells]), np.ones(len(cells))]
    residual, rank = percentile_residual(score, truth), rankdata(score) / len(score)
    order = np.random.default_rng(0).permutation(len(cells))
    predicted = np.zeros(len(cells))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        w = np.linalg.solve(x[train].T @ x[train] + lam * np.eye(x.shape[1]), x[train].T @ residual[train])
        predicted[test] = x[test] @ w
    return kendall_tau(rank + predicted, truth)


def describe(name: str, archs: list, score: np.ndarray, truth: np.ndarray, n: int, corrected: bool = False) -> None:
    """tau, rho and op biases on the uniform draw (the first n); edge-3 means on every scored cell."""
    tau, rho = kendall_tau(score[:n], truth[:n]), spearman_rho(score[:n], truth[:n])
    lo, hi = bootstrap_ci(kendall_tau, score[:n], truth[:n], 1000, 0)
    good = truth > 93.0
    by_op = {op: score[good & np.array([a[3] == op for a in archs])] for op in OPS}
    means = ", ".join(f"{op} {v.mean():.2f} (n={len(v)})" for op, v in by_op.items() if len(v))
    bias = op_bias(archs[:n], score[:n], truth[:n])
    biases = ", ".join(f"{e} {op} {v:+.2f}" for e, op, v in worst_bias(bias))
    print(f"{name}: tau {tau:.3f} [{lo:.2f}, {hi:.2f}] rho {rho:.3f}")
    print(f"  edge 3<-0 among cells > 93%: {means}")
    print(f"  largest op biases (truth - score percentile): {biases}")
    residual = percentile_residual(score[:n], truth[:n])
    depths = np.array([conv_depth(a) for a in archs[:n]])
    by_depth = ", ".join(f"{d}: {residual[depths == d].mean():+.3f} (n={(depths == d).sum()})"
                         for d in sorted(set(depths.tolist())) if d >= 0)  # fmt: skip
    print(f"  bias by convs on the longest input-output path: {by_depth}")
    if corrected:
        print(f"  tau after a cross-validated per-(edge, op) correction (uses labels): "
              f"{corrected_tau(archs[:n], score[:n], truth[:n]):.3f}")  # fmt: skip


def with_size_prior(score: np.ndarray, archs: list[str], n: int, space_opts: dict) -> np.ndarray:
    """`score` averaged with the parameter-count percentile; the first n (the uniform draw) place the scores."""
    space = make_space("nb201", **space_opts)
    prior = SizePrior(None, space, reference_scores=score[:n])
    return np.array([prior.combine(space.from_str(a), s)["metric"] for a, s in zip(archs, score, strict=True)])


def _reference(key: str, archs: list[str], table: str) -> np.ndarray:
    """Scores of a reference ranking: `params` or `table:COLUMN`."""
    if key == "params":
        space = make_space("nb201")
        return np.array([space.cost(space.from_str(a)).params for a in archs], dtype=float)
    rows = load_table(table, "arch", (key.partition(":")[2],))
    return np.array([rows[a][0] for a in archs])


def main(args: list[str]) -> int:
    table, corrected, size_prior = TABLE, "--corrected" in args, "--size-prior" in args
    args = [a for a in args if a not in ("--corrected", "--size-prior")]
    if "--table" in args:
        i = args.index("--table")
        table, args = (args[i + 1] if i + 1 < len(args) else ""), args[:i] + args[i + 2 :]
    files = [a for a in args if a != "params" and not a.startswith("table:")]
    if not files:
        print(__doc__)
        return 2
    archs, truth, scores, opts, n = None, None, {}, {}, 0
    for arg in files:
        path, sep, key = arg.rpartition(":")
        if not sep or not Path(path).is_file():
            print(f"error: {arg!r}: give RESULT_JSON:SCORE_KEY with an existing file", file=sys.stderr)
            return 2
        result = json.loads(Path(path).read_text())
        n = result["sample"]["n_uniform"]  # the uniform draw comes first, then cells of the best tenth
        if key not in result["scores"]:
            print(f"error: {path} has no scores {key!r}; it has {sorted(result['scores'])}", file=sys.stderr)
            return 2
        these = result["sample"]["archs"]
        if archs is None:
            archs, truth = these, np.array(result["sample"]["truth"])
        elif these != archs:
            print(f"error: {path} drew other cells; rerun it with the same --sample-seed", file=sys.stderr)
            return 2
        scores[arg] = np.array(result["scores"][key])
        opts[arg] = result.get("config", {}).get("space_opts", {})
    references = {}
    for key in (a for a in args if a not in files):
        try:
            references[key] = _reference(key, archs, table)
        except (UserError, KeyError) as exc:
            print(f"error: reference {key!r}: {exc}; pass --table with the NB201 CSV", file=sys.stderr)
            return 2
    cells = [make_space("nb201").from_str(a) for a in archs]
    for name, score in scores.items():
        describe(name, cells, score, truth, n, corrected)
        if size_prior:
            describe(f"{name} with the size prior", cells, with_size_prior(score, archs, n, opts[name]), truth, n)
    if len(scores) > 1:
        ensemble = sum(rankdata(s) for s in scores.values()) / len(scores)
        describe("rank-averaged ensemble", cells, ensemble, truth, n)
    for name, score in references.items():
        describe(f"reference {name}", cells, score, truth, n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
