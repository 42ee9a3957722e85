"""LaNAS: Latent Action Neural Architecture Search, after Wang et al., "Sample-Efficient Neural
Architecture Search by Learning Action Space for Monte Carlo Tree Search" (TPAMI 2021).

Each round: (re)build the learned partition (`lanas_tree.Tree`) every `rebuild_every`
observations, descend by UCB to a leaf, and draw new architectures inside that leaf's region (the
intersection of every half-space on its path). Written from the paper, not from its code; the
known faults of the public code are avoided: a candidate must satisfy ALL path constraints, the
sampler is bounded (rejection sampling, then mutations of the region's members, then backing off to
the parent, then any new arch), Cp scales with the spread of the observed metric, and the RNG is
seeded and saved.

Beyond plain LaNAS (`sampler="uniform", select="random"` reproduces it), candidates in the chosen
leaf also come from mutating the leaf's best members (`sampler="mutation"`, the default), and the
candidate with the best predicted metric under the leaf's ridge model is proposed
(`select="model"`): the tree decides where to look, the linear model which point to try first.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from supernet.spaces.base import Space

from .base import Arch, Constraint, Searcher, check_opt
from .lanas_tree import Tree, ridge

log = logging.getLogger(__name__)


class LaNAS(Searcher):
    """Monte Carlo tree search over a learned linear partition of the space."""

    name = "lanas"

    def __init__(
        self,
        space: Space,
        rng_seed: int,
        constraint: Constraint | None = None,
        height: int = 5,
        init_samples: int = 20,
        rebuild_every: int = 1,
        cp: float = 0.5,
        ridge_lambda: float = 0.1,
        min_leaf: int = 3,
        sampler: str = "mutation",
        select: str = "model",
        n_random: int = 200,
        top_parents: int = 5,
        mutations: int = 30,
    ) -> None:
        super().__init__(space, rng_seed, constraint)
        check_opt(height >= 1, f"lanas: height must be >= 1, got {height}")
        check_opt(init_samples >= 1, f"lanas: init_samples must be >= 1, got {init_samples}")
        check_opt(rebuild_every >= 1, f"lanas: rebuild_every must be >= 1, got {rebuild_every}")
        check_opt(cp >= 0 and ridge_lambda > 0, "lanas: cp must be >= 0 and ridge_lambda > 0")
        check_opt(min_leaf >= 1, f"lanas: min_leaf must be >= 1, got {min_leaf}")
        check_opt(sampler in ("mutation", "uniform"), f"lanas: sampler must be mutation or uniform, not {sampler!r}")
        check_opt(select in ("model", "random"), f"lanas: select must be model or random, not {select!r}")
        check_opt(n_random >= 0 and top_parents >= 1 and mutations >= 0, "lanas: n_random, mutations >= 0")
        self.height, self.init_samples, self.rebuild_every = int(height), int(init_samples), int(rebuild_every)
        self.cp, self.ridge_lambda, self.min_leaf = float(cp), float(ridge_lambda), int(min_leaf)
        self.sampler, self.select = sampler, select
        self.n_random, self.top_parents, self.mutations = int(n_random), int(top_parents), int(mutations)
        self._enc: list[np.ndarray] = []  # encodings of finite observations, same order as _y
        self._y: list[float] = []
        self._fin_archs: list[Arch] = []
        self.tree: Tree | None = None
        self._built_at = -1  # number of observations the tree was built on
        self._built_at_saved = -1  # after a resume: the history prefix the saved tree was built on
        # (tree, node) whose region each arch of the latest proposal was drawn in (-1: anywhere).
        self.last_regions: list[tuple[Tree | None, int]] = []

    # ---- observations ----------------------------------------------------------------------
    def _observed(self, archs: list[Arch], metrics: list[float]) -> None:
        for arch, m in zip(archs, metrics):
            if np.isfinite(m):
                self._enc.append(np.asarray(self.space.encode(arch), dtype=np.float64))
                self._y.append(m)
                self._fin_archs.append(arch)

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._enc, self._y, self._fin_archs = [], [], []
        self._observed(self.archs, self.metrics)
        self.tree, self._built_at = None, -1
        # The tree is a pure function of the history at its build time; rebuild it exactly there.
        self._built_at_saved = int(extra.get("built_at", -1))

    def _extra_state(self) -> dict[str, Any]:
        return {"built_at": int(self._built_at)}

    def _maybe_rebuild(self) -> None:
        n = len(self._y)
        saved = self._built_at_saved
        if self.tree is None and saved >= 2:
            # After a resume: rebuild on the same prefix of the history as before the save.
            self._built_at_saved = -1
            self.tree = Tree(np.stack(self._enc[:saved]), np.asarray(self._y[:saved]), *self._tree_args())
            self._built_at = saved
        if self.tree is None or n - self._built_at >= self.rebuild_every:
            self.tree = Tree(np.stack(self._enc), np.asarray(self._y), *self._tree_args())
            self._built_at = n

    def _tree_args(self) -> tuple[int, int, float]:
        return self.height, self.min_leaf, self.ridge_lambda

    # ---- proposals -------------------------------------------------------------------------
    def _propose(self, n: int) -> list[Arch]:
        out: list[Arch] = []
        self.last_regions = []
        visits: dict[int, int] = {}
        for _ in range(n):
            if len(self._y) + len(self.pending) + len(out) < self.init_samples or len(self._y) < 2:
                arch, leaf = self.random_new(), -1
            else:
                self._maybe_rebuild()
                assert self.tree is not None
                std = float(np.std(self._y))
                leaf = self.tree.ucb_leaf(self.cp * std, visits)
                arch, leaf = self._draw_in(leaf)
                for nid in self.tree.path_ids(leaf) if leaf >= 0 else []:
                    visits[nid] = visits.get(nid, 0) + 1
            if arch is None or not self._take(arch, out):
                break
            self.last_regions.append((self.tree, leaf) if leaf >= 0 else (None, -1))
        return out

    def _draw_in(self, leaf: int) -> tuple[Arch | None, int]:
        """A new arch inside `leaf`'s region, backing off towards the root; bounded work.

        Plain LaNAS (`sampler="uniform"`) tries rejection sampling and then mutations in each node
        before backing off. The mutation sampler first walks the neighbourhoods of the best members
        from the leaf up to the root, so a local search is never walled in by a split, and uses
        uniform samples only when every neighbourhood on the path is used up.
        """
        assert self.tree is not None
        path = list(reversed(self.tree.path_ids(leaf)))
        if self.sampler == "uniform":
            plan = [(nid, stage) for nid in path for stage in ("uniform", "mutants")]
        else:
            plan = [(nid, stage) for stage in ("mutants", "uniform") for nid in path]
        for nid, stage in plan:
            arch = self._pick(nid, stage)
            if arch is not None:
                return arch, nid
        log.debug("lanas: no new arch on the path to leaf %d; sampling anywhere", leaf)
        return self.random_new(), -1

    def _pick(self, nid: int, stage: str) -> Arch | None:
        """The best-predicted (or a random) new feasible arch inside node `nid`'s region, or None.

        Region membership is checked first, in one matrix product; the costlier checks (canonical
        form, FLOPs constraint) run lazily in rank order until one candidate passes.
        """
        tree = self.tree
        assert tree is not None
        if stage == "uniform":
            pools = [self._uniform]
        elif self.sampler == "uniform":
            pools = [lambda: self._mutants(nid, self.top_parents)]
        else:
            # Neighbours of the node's best member first, then of the next best: a local search.
            pools = [lambda k=k: self._mutants(nid, 1, k) for k in range(self.top_parents)]
        for pool in pools:  # built lazily: most picks never need the later pools
            cands = pool()
            if not cands:
                continue
            enc = np.stack([self.space.encode(a) for a in cands]).astype(np.float64)
            inside = np.flatnonzero(tree.in_region(nid, enc))
            if self.select == "random":
                order = self.rng.permutation(inside)
            else:
                w, b = self._rank_model(nid)
                order = inside[np.argsort(-(enc[inside] @ w + b), kind="stable")]
            for i in order:
                if self.is_new(cands[i]):
                    return cands[i]
        return None

    def _rank_model(self, nid: int) -> tuple[np.ndarray, float]:
        """The ridge model of the deepest node on the path with one (the leaf's own if it has one)."""
        tree = self.tree
        assert tree is not None
        for anc in reversed(tree.path_ids(nid)):
            if tree.nodes[anc].model is not None:
                return tree.nodes[anc].model
        members = tree.nodes[nid].members
        return ridge(tree.x[members], tree.y[members], self.ridge_lambda)

    def _mutants(self, nid: int, count: int, skip: int = 0) -> list[Arch]:
        """Distinct one-decision mutations of the node's best members ranked skip..skip+count-1."""
        tree = self.tree
        assert tree is not None
        members = tree.nodes[nid].members
        parents = members[np.argsort(-tree.y[members], kind="stable")][skip : skip + count]
        out = {self.space.mutate(self._fin_archs[i], self.rng): None for i in parents for _ in range(self.mutations)}
        return list(out)

    def _uniform(self) -> list[Arch]:
        """`n_random` uniform samples: the rejection-sampling pool, so the loop is bounded."""
        return list({self.space.sample(self.rng): None for _ in range(self.n_random)})
