"""LaNAS: Latent Action Neural Architecture Search, after Wang et al., "Sample-Efficient Neural
Architecture Search by Learning Action Space for Monte Carlo Tree Search" (TPAMI 2021).

Each round: (re)build the learned partition (`lanas_tree.Tree`) every `rebuild_every`
observations, descend by UCB to a leaf, and draw new architectures inside that leaf's region (the
intersection of every half-space on its path). Written from the paper, not from its code; the
known faults of the public code are avoided: a candidate must satisfy ALL path constraints, the
sampler is bounded (rejection sampling, then mutations of the region's members, then backing off to
the parent, then any new arch), Cp scales with the spread of the observed metric, and the RNG is
seeded and saved.

Beyond plain LaNAS (`sampler="uniform", select="random"` reproduces it), the default sampler
searches locally inside the chosen region: it takes the best member of the leaf (then of its
parent, ..., then the second best of each) and proposes the one-decision mutation of it that lies in
the region and that the node's ridge model predicts best (`select="model"`). The tree decides where
to look, the linear model which neighbour to try first; members whose neighbourhood is used up are
skipped, and when every neighbourhood on the path is used up a uniform sample from the region
(`explore`) restarts the climb elsewhere. After `restart` observations without progress the climb
restarts from `kick`-edit perturbations of the best arch (iterated local search), which gets it out
of local optima that a linear model cannot see past. See docs/search_benchmark.md for what each part is worth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from supernet.spaces.base import Space

from .base import Arch, Constraint, Searcher, check_opt
from .lanas_tree import Tree, ridge

log = logging.getLogger(__name__)
_CACHE_MAX = 200_000  # encodings kept in memory (bounds memory on huge spaces)


class LaNAS(Searcher):
    """Monte Carlo tree search over a learned linear partition of the space."""

    name = "lanas"

    def __init__(
        self,
        space: Space,
        rng_seed: int,
        constraint: Constraint | None = None,
        height: int = 3,
        init_samples: int = 12,
        rebuild_every: int = 1,
        rebuild_growth: float = 0.02,
        cp: float = 0.25,
        ridge_lambda: float = 0.1,
        min_leaf: int = 3,
        sampler: str = "mutation",
        select: str = "model",
        explore: str = "random",
        n_random: int = 200,
        top_parents: int = 5,
        mutations: int = 30,
        restart: int = 20,
        kick: int = 5,
        pending: str = "ignore",
        lie: str = "mean",
        fill: str = "mutate",
    ) -> None:
        super().__init__(space, rng_seed, constraint)
        check_opt(height >= 1, f"lanas: height must be >= 1, got {height}")
        check_opt(init_samples >= 1, f"lanas: init_samples must be >= 1, got {init_samples}")
        check_opt(rebuild_every >= 1, f"lanas: rebuild_every must be >= 1, got {rebuild_every}")
        check_opt(rebuild_growth >= 0, f"lanas: rebuild_growth must be >= 0, got {rebuild_growth}")
        self.rebuild_growth = float(rebuild_growth)
        check_opt(cp >= 0 and ridge_lambda > 0, "lanas: cp must be >= 0 and ridge_lambda > 0")
        check_opt(min_leaf >= 1, f"lanas: min_leaf must be >= 1, got {min_leaf}")
        check_opt(sampler in ("mutation", "uniform"), f"lanas: sampler must be mutation or uniform, not {sampler!r}")
        for name, value in (("select", select), ("explore", explore)):
            check_opt(value in ("model", "random"), f"lanas: {name} must be model or random, not {value!r}")
        check_opt(n_random >= 1 and top_parents >= 1 and mutations >= 1, "lanas: n_random, top_parents, mutations >= 1")
        self.height, self.init_samples, self.rebuild_every = int(height), int(init_samples), int(rebuild_every)
        self.cp, self.ridge_lambda, self.min_leaf = float(cp), float(ridge_lambda), int(min_leaf)
        self.sampler, self.select, self.explore = sampler, select, explore
        self.n_random, self.top_parents, self.mutations = int(n_random), int(top_parents), int(mutations)
        check_opt(restart >= 0, f"lanas: restart must be >= 0 (0: never), got {restart}")
        self.restart = int(restart)
        check_opt(kick >= 0, f"lanas: kick must be >= 0 (0: restart from uniform samples), got {kick}")
        self.kick = int(kick)
        check_opt(pending in ("ignore", "liar"), f"lanas: pending must be ignore or liar, not {pending!r}")
        # Proposals in flight (asynchronous search): "ignore" leaves them out of the tree (they are only
        # never proposed again); "liar" adds them to it at each rebuild as if they had scored the mean (or
        # `lie`: min, max) observed metric, a constant liar, so the partition and UCB see pending work.
        self.pending_mode = pending
        check_opt(lie in ("mean", "min", "max"), f"lanas: lie must be mean, min or max, not {lie!r}")
        self.lie = lie  # the constant liar's value: the mean, lowest or highest observed metric
        check_opt(fill in ("uniform", "mutate"), f"lanas: fill must be uniform or mutate, not {fill!r}")
        # Asynchronous search, before `init_samples` results are in but once that many are proposed:
        # "mutate" proposes one-decision mutations of the best result so far, "uniform" more uniform
        # samples. With one in flight the case never arises, so the choice changes nothing there.
        self.fill = fill
        self._real_built = 0  # finite observations in the current tree (members beyond are pending lies)
        self._epoch = 0  # index into the finite observations where the current climb started
        self._enc: list[np.ndarray] = []  # encodings of finite observations, same order as _y
        self._X = np.zeros((0, 0))  # the same, stacked (see _matrix)
        self._y: list[float] = []
        self._fin_archs: list[Arch] = []
        self._enc_cache: dict[Arch, np.ndarray] = {}
        self._fails: dict[Arch, int] = {}  # parent -> draws of its mutants that found nothing new
        self.tree: Tree | None = None
        self._ranked: dict[int, list[tuple[Arch, int]]] = {}  # node id -> its members, best first
        self._built_at = -1  # number of observations the tree was built on
        self._built_at_saved = -1  # after a resume: the history prefix the saved tree was built on
        # (tree, node) whose region each arch of the latest proposal was drawn in (-1: anywhere).
        self.last_regions: list[tuple[Tree | None, int]] = []

    # ---- observations and state ------------------------------------------------------------
    def _observed(self, archs: list[Arch], metrics: list[float]) -> None:
        for arch, m in zip(archs, metrics):
            if np.isfinite(m):
                self._enc.append(self.encode(arch))
                self._y.append(m)
                self._fin_archs.append(arch)

    def _extra_state(self) -> dict[str, Any]:
        fails = [[self.space.to_json(a), int(n)] for a, n in self._fails.items()]
        return {"built_at": int(self._built_at), "fails": fails, "epoch": int(self._epoch)}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._enc, self._y, self._fin_archs, self._X = [], [], [], np.zeros((0, 0))
        self._observed(self.archs, self.metrics)
        self._fails = {self.space.from_json(a): int(n) for a, n in extra.get("fails", [])}
        self._epoch = int(extra.get("epoch", 0))
        self.tree, self._built_at = None, -1
        # The tree is a pure function of the history at its build time; rebuild it exactly there.
        self._built_at_saved = int(extra.get("built_at", -1))

    def encode(self, arch: Arch) -> np.ndarray:
        vec = self._enc_cache.get(arch)
        if vec is None:
            if len(self._enc_cache) > _CACHE_MAX:
                self._enc_cache.clear()
            vec = self._enc_cache[arch] = np.asarray(self.space.encode(arch), dtype=np.float64)
        return vec

    def _maybe_rebuild(self) -> None:
        n, saved = len(self._y), self._built_at_saved
        args = (self.height, self.min_leaf, self.ridge_lambda)
        if self.tree is None and saved >= 2:
            # After a resume: rebuild on the same prefix of the history as before the save.
            self._built_at_saved = -1
            self.tree, self._built_at = Tree(self._matrix()[:saved], np.asarray(self._y[:saved]), *args), saved
            self._ranked, self._real_built = {}, saved
        # Rebuild every `rebuild_every` observations, and no more often than every `rebuild_growth`
        # of the history: a rebuild refits every node's model on the whole history, so its cost grows
        # with the history, and rebuilding on a fixed share of it keeps the total cost linear
        # (per-proposal times: docs/search_benchmark.md).
        every = max(self.rebuild_every, int(self.rebuild_growth * self._built_at))
        if self.tree is None or n - self._built_at >= every:
            x, y = self._matrix(), np.asarray(self._y)
            if self.pending_mode == "liar" and self.pending:
                lies = np.stack([self.encode(a) for a in self.pending])
                x, y = np.concatenate([x, lies]), np.concatenate([y, np.full(len(lies), getattr(np, self.lie)(y))])
            self.tree, self._built_at = Tree(x, y, *args), n
            self._ranked, self._real_built = {}, n

    def _matrix(self) -> np.ndarray:
        """All finite observations' encodings as one array, extended in place of re-stacking."""
        have = len(self._X)
        if have < len(self._enc):
            new = np.stack(self._enc[have:])
            self._X = np.concatenate([self._X, new]) if have else new
        return self._X

    # ---- proposals -------------------------------------------------------------------------
    def _propose(self, n: int) -> list[Arch]:
        out: list[Arch] = []
        self.last_regions = []
        visits: dict[int, int] = {}
        for _ in range(n):
            # Uniform samples until `init_samples` results are in (those of this batch counted ahead).
            # Proposals in flight elsewhere (asynchronous search) are not counted: their results are
            # not known yet, and a climb started from a tree of two or three results goes astray. Once
            # `init_samples` are proposed, though, more uniform samples add little: `fill="mutate"`
            # tries neighbours of the best result while the rest of the initial samples finish.
            if len(self._y) + len(out) < self.init_samples or len(self._y) < 2:
                enough = len(self._y) + len(self.pending) + len(out) >= self.init_samples
                if self.fill == "mutate" and enough and len(self._y) >= 2:
                    arch = self._kicked(kick=1) or self.random_new()
                else:
                    arch = self.random_new()
                leaf = -1
            else:
                self._maybe_rebuild()
                assert self.tree is not None
                leaf = self.tree.ucb_leaf(self.cp * float(np.std(self._y)), visits)
                arch, leaf = self._draw_in(leaf, restarting=self._restarting(len(out)))
                for nid in self.tree.path_ids(leaf) if leaf >= 0 else []:
                    visits[nid] = visits.get(nid, 0) + 1
            if arch is None or not self._take(arch, out):
                break
            self.last_regions.append((self.tree, leaf) if leaf >= 0 else (None, -1))
        return out

    def _restarting(self, proposed: int) -> bool:
        """Iterated local search: after `restart` observations without a better arch in the current
        climb, start a new climb from `init_samples` uniform samples of the chosen leaf's region, or
        with `kick` > 0 from `init_samples` perturbations of the best arch so far (`kick` random
        one-decision mutations each), the classic ILS kick into a neighbouring basin."""
        if not self.restart or self.sampler != "mutation":
            return False
        ys = self._y[self._epoch :]
        if len(ys) >= self.init_samples and len(ys) - 1 - int(np.argmax(ys)) >= self.restart:
            self._epoch = len(self._y)
            self._ranked = {}
            log.debug("lanas: no progress in %d observations; restarting the climb", self.restart)
        return len(self._y) - self._epoch + proposed < self.init_samples

    def _draw_in(self, leaf: int, restarting: bool = False) -> tuple[Arch | None, int]:
        """A new arch inside `leaf`'s region, backing off towards the root; bounded work.

        Plain LaNAS (`sampler="uniform"`) tries rejection sampling and then mutations of the best
        members in each node before backing off. The mutation sampler first walks the
        neighbourhoods of the best members, leaf to root and best to `top_parents`-th, so a local
        search is never walled in by a split, and samples uniformly only when those are used up.
        """
        assert self.tree is not None
        path = list(reversed(self.tree.path_ids(leaf)))
        if self.sampler == "uniform":
            plan = [(nid, stage) for nid in path for stage in ("uniform", "mutants")]
        else:
            plan = [] if restarting else [(nid, k) for k in range(self.top_parents) for nid in path]
            plan += [(nid, "uniform") for nid in path]
        if restarting and self.kick:
            arch = self._kicked()
            if arch is not None:
                return arch, -1
        for nid, stage in plan:
            arch = self._pick(nid, stage)
            if arch is not None:
                return arch, nid
        log.debug("lanas: no new arch on the path to leaf %d; sampling anywhere", leaf)
        return self.random_new(), -1

    def _pick(self, nid: int, stage: int | str) -> Arch | None:
        """A new feasible arch inside node `nid`'s region from one pool of candidates, or None.

        `stage` is "uniform" (rejection sampling), "mutants" (neighbours of the node's best
        members) or k (neighbours of the node's k-th best member whose neighbourhood is not used up).
        """
        tree = self.tree
        assert tree is not None
        if stage == "uniform":
            return self._first_new(nid, self._uniform(), self.explore if self.sampler == "mutation" else self.select)
        ranked = self._ranked.get(nid)
        if ranked is None:  # the node's members, best first (cached until the next rebuild)
            members = tree.nodes[nid].members
            members = members[members < self._real_built]  # pending lies are no parents
            order = members[np.argsort(-tree.y[members], kind="stable")]
            ranked = self._ranked[nid] = [(self._fin_archs[i], int(i)) for i in order]
        if stage == "mutants":
            return self._first_new(nid, self._mutants([a for a, _ in ranked[: self.top_parents]]), self.select)
        assert isinstance(stage, int)
        live = [a for a, i in ranked if self._fails.get(a, 0) < 2 and i >= self._epoch]
        if stage >= len(live):
            return None
        parent = live[stage]
        cands = self._mutants([parent])
        if not any(self.is_new(a) for a in cands):
            # Two empty draws in a row: the neighbourhood is (almost surely) used up; skip it.
            self._fails[parent] = self._fails.get(parent, 0) + 1
            return None
        return self._first_new(nid, cands, self.select)

    def _first_new(self, nid: int, cands: list[Arch], how: str) -> Arch | None:
        """The best-predicted (or a random) candidate that is in the region, new and feasible.

        Region membership is one matrix product; the costlier checks (canonical form, FLOPs
        constraint) run lazily in rank order until one candidate passes.
        """
        tree = self.tree
        assert tree is not None
        if not cands:
            return None
        enc = np.stack([self.encode(a) for a in cands])
        inside = np.flatnonzero(tree.in_region(nid, enc))
        if how == "random":
            order = self.rng.permutation(inside)
        else:
            w, b = self._rank_model(nid)
            order = inside[np.argsort(-(enc[inside] @ w + b), kind="stable")]
        for i in order:
            if self.is_new(cands[i]):
                return cands[i]
        return None

    def _rank_model(self, nid: int) -> tuple[np.ndarray, float]:
        """The ridge model of the deepest node on the path that has one (fitted when it split)."""
        tree = self.tree
        assert tree is not None
        for anc in reversed(tree.path_ids(nid)):
            if tree.nodes[anc].model is not None:
                return tree.nodes[anc].model
        members = tree.nodes[nid].members
        return ridge(tree.x[members], tree.y[members], self.ridge_lambda)

    def _mutants(self, parents: list[Arch]) -> list[Arch]:
        """Distinct one-decision mutations of `parents` (`mutations` draws each; may leave the region)."""
        mutate: Callable[[Arch, np.random.Generator], Arch] = self.space.mutate
        return list({mutate(p, self.rng): None for p in parents for _ in range(self.mutations)})

    def _kicked(self, tries: int = 100, kick: int | None = None) -> Arch | None:
        """A new feasible arch `kick` random mutations away from the best observed one (bounded)."""
        best = self._fin_archs[int(np.argmax(self._y))]
        for _ in range(tries):
            arch = best
            for _ in range(self.kick if kick is None else kick):
                arch = self.space.mutate(arch, self.rng)
            if self.is_new(arch):
                return arch
        return None

    def _uniform(self) -> list[Arch]:
        """`n_random` uniform samples: the rejection-sampling pool, so the loop is bounded."""
        return list({self.space.sample(self.rng): None for _ in range(self.n_random)})
