"""Rank correlation of supernet scores with ground truth: Kendall's tau-b, Spearman's rho, bootstrap CIs.

Written in numpy (no scipy at run time) and checked against `scipy.stats` in the tests:
- `kendall_tau` is tau-b (Kendall 1945), which corrects for ties in either variable, as
  `scipy.stats.kendalltau` computes by default. Supernet accuracies on a 1,000-image split tie
  often, so tau-a would understate the agreement.
- `spearman_rho` is Pearson's r of the average ranks, as `scipy.stats.spearmanr`.
- `bootstrap_ci` resamples (score, truth) pairs with replacement (percentile bootstrap, Efron 1979).

`scatter_plot` draws supernet score against table accuracy, one panel per supernet configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Stat = Callable[[np.ndarray, np.ndarray], float]


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy's `rankdata(method="average")`)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # group boundaries of equal values; each group gets the mean of the ranks it spans
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _check(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-d sequences of equal length, got shapes {x.shape} and {y.shape}")
    return x, y


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b; NaN when fewer than two points or one variable is constant.

    O(n^2) memory in blocks of rows: exact and fast enough for the few thousand points a
    benchmark scores (scipy's O(n log n) algorithm matters only far beyond that).
    """
    x, y = _check(x, y)
    n = len(x)
    if n < 2:
        return float("nan")
    concordant = tie_x = tie_y = 0.0
    block = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n, block):
        dx = np.sign(x[start : start + block, None] - x[None, :])
        dy = np.sign(y[start : start + block, None] - y[None, :])
        concordant += float((dx * dy).sum())  # concordant minus discordant, every pair counted twice
        tie_x += float((dx == 0).sum())
        tie_y += float((dy == 0).sum())
    pairs = n * (n - 1)  # ordered pairs; the diagonal is a tie in both and is removed below
    n1, n2 = pairs - (tie_x - n), pairs - (tie_y - n)  # pairs not tied in x (in y)
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    return float(concordant / np.sqrt(n1 * n2))


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Pearson's r of average ranks); NaN when a variable is constant."""
    x, y = _check(x, y)
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def bootstrap_ci(
    stat: Stat, x: Sequence[float], y: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat(x, y)` over resampled pairs; NaNs (constant resamples) dropped."""
    x, y = _check(x, y)
    if len(x) < 3 or n_boot < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([stat(x[i], y[i]) for i in rng.integers(len(x), size=(n_boot, len(x)))])
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def correlation_report(
    scores: Sequence[float], truth: Sequence[float], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """n, tau, rho and their 95% bootstrap intervals, as plain JSON-ready numbers."""
    x, y = _check(scores, truth)
    return {
        "n": int(len(x)),
        "tau": kendall_tau(x, y),
        "tau_ci": list(bootstrap_ci(kendall_tau, x, y, n_boot, seed)),
        "rho": spearman_rho(x, y),
        "rho_ci": list(bootstrap_ci(spearman_rho, x, y, n_boot, seed)),
    }


def scatter_plot(panels: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, ylabel: str) -> None:
    """One panel per configuration: supernet score (x) vs table accuracy (y), titled with its tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, max(1, len(panels)))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, (name, (score, truth, tau)) in zip(axes.ravel(), panels.items()):
        ax.scatter(score, truth, s=8, alpha=0.6)
        # disconnected cells (10% in the table) would squash the interesting band: clip and say so
        floor = float(np.percentile(truth, 5)) - 2 if len(truth) else 0.0
        hidden = int((np.asarray(truth) < floor).sum())
        if hidden:
            ax.set_ylim(bottom=floor)
        note = f", {hidden} below {floor:.0f}% not shown" if hidden else ""
        ax.set_title(f"{name}\ntau={tau:.3f} (n={len(score)}{note})", fontsize=8)
        prior = "+" in name  # "<strategy>/recal<N>+<size>": the score averaged with a size prior
        xlabel = "score averaged with the size percentile" if prior else "supernet accuracy on the search split (%)"
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
