"""The learned partition behind LaNAS (Wang et al., "Sample-Efficient Neural Architecture Search by
Learning Action Space for Monte Carlo Tree Search", 2019/2021): a binary tree of fixed height.

Each internal node fits a ridge least-squares model of the metric on the encodings of the samples
that reached it and splits them at the mean prediction: samples predicted at or above the mean go
to the good child, the rest to the bad child. A node's region is the intersection of ALL the
half-spaces on its path from the root (`Tree.in_region`), written as `sign * (x @ w - c) >= 0`
rows, so checking many candidate encodings is one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Weights `w` and intercept `b` of ridge regression (intercept not penalised), closed form.

    Uses the primal or the dual system, whichever is smaller, so 1,000 samples of 100-dim
    encodings take about a millisecond.
    """
    xm, ym = x.mean(axis=0), float(y.mean())
    xc, yc = x - xm, y - ym
    n, d = xc.shape
    if d <= n:
        w = np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T @ yc)
    else:
        w = xc.T @ np.linalg.solve(xc @ xc.T + lam * np.eye(n), yc)
    return w, ym - float(xm @ w)


@dataclass
class Node:
    """One tree node: the samples that reached it and, if it split, its half-space."""

    members: np.ndarray  # indices into the searcher's observation arrays
    depth: int
    parent: int = -1
    good: int = -1  # child ids; -1 for a leaf
    bad: int = -1
    w: np.ndarray | None = None  # the split: good side is x @ w >= c
    c: float = 0.0
    model: tuple[np.ndarray, float] | None = None  # this node's ridge fit (w, b), also used to rank
    path: list[tuple[int, bool]] = field(default_factory=list)  # (ancestor id, went to good side)

    @property
    def is_leaf(self) -> bool:
        return self.good < 0


class Tree:
    """Build the partition once per rebuild; query regions and UCB statistics."""

    def __init__(self, x: np.ndarray, y: np.ndarray, height: int, min_leaf: int, lam: float) -> None:
        assert height >= 1 and min_leaf >= 1
        self.x, self.y = x, y
        self.nodes: list[Node] = [Node(members=np.arange(len(y)), depth=0)]
        stack = [0]
        while stack:
            nid = stack.pop()
            if self.nodes[nid].depth + 1 < height:
                stack.extend(self._split(nid, min_leaf, lam))

    def _split(self, nid: int, min_leaf: int, lam: float) -> list[int]:
        node = self.nodes[nid]
        idx = node.members
        if len(idx) < 2 * min_leaf:
            return []
        x, y = self.x[idx], self.y[idx]
        w, b = ridge(x, y, lam)
        node.model = (w, b)
        score = x @ w
        c = float(score.mean())  # the mean prediction, less the intercept (x @ w + b >= mean)
        good = score >= c
        # Degenerate splits (all predictions equal, or a side too small) leave a leaf.
        if good.sum() < min_leaf or (~good).sum() < min_leaf or np.ptp(y) == 0:
            return []
        node.w, node.c = w, c
        ids = []
        for side in (True, False):
            child = Node(members=idx[good == side], depth=node.depth + 1, parent=nid, path=node.path + [(nid, side)])
            self.nodes.append(child)
            ids.append(len(self.nodes) - 1)
        node.good, node.bad = ids
        return ids

    def in_region(self, nid: int, enc: np.ndarray) -> np.ndarray:
        """Boolean mask: which rows of `enc` satisfy every half-space on the path to node `nid`."""
        mask = np.ones(len(enc), dtype=bool)
        for anc, side in self.nodes[nid].path:
            a = self.nodes[anc]
            mask &= (enc @ a.w >= a.c) == side
        return mask

    def ucb_leaf(self, cp: float, visits: dict[int, int]) -> int:
        """Descend from the root by UCB: mean metric + cp * sqrt(2 ln n_parent / n_child).

        `visits` adds pending proposals to the counts, so a batch spreads over several leaves.
        """
        nid = 0
        while not self.nodes[nid].is_leaf:
            node = self.nodes[nid]
            n_parent = len(node.members) + visits.get(nid, 0)
            best, best_val = -1, -np.inf
            for child in (node.good, node.bad):
                members = self.nodes[child].members
                n_child = len(members) + visits.get(child, 0)
                val = float(self.y[members].mean()) + cp * np.sqrt(2.0 * np.log(n_parent) / n_child)
                if val > best_val:
                    best, best_val = child, val
            nid = best
        return nid

    def path_ids(self, nid: int) -> list[int]:
        return [anc for anc, _ in self.nodes[nid].path] + [nid]
