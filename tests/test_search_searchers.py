"""Searchers: each finds a toy optimum, never repeats a network, respects constraints, resumes exactly."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch

from core.errors import UserError
from search.searchers import SEARCHERS, LaNAS, make_searcher
from tests.toy_space import ToySpace

torch.set_num_threads(1)


def run(searcher, space, budget, batch=1):
    while len(searcher.archs) < budget:
        archs = searcher.propose(min(batch, budget - len(searcher.archs)))
        if not archs:
            break
        searcher.observe(archs, [space.score(a) for a in archs])
    return searcher


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name,budget", [("lanas", 120), ("evolution", 300), ("random", 1024)])
def test_finds_the_known_optimum(name, budget, seed):
    space = ToySpace(decisions=5, choices=4, seed=seed)  # 1,024 archs, optimum known by DP
    best_arch, best_score = space.optimum()
    s = run(make_searcher(name, space, seed), space, budget)
    assert best_arch in s.archs
    assert s.best()[1] == pytest.approx(best_score)


def test_lanas_beats_random_on_average():
    space = ToySpace(decisions=8, choices=4, seed=3)  # 65,536 archs
    best = space.optimum()[1]
    gap = {n: np.mean([best - run(make_searcher(n, space, s), space, 80).best()[1] for s in range(4)])
           for n in ("lanas", "random")}  # fmt: skip
    assert gap["lanas"] < gap["random"]


class FoldedToy(ToySpace):
    """Choices 2 and 3 of decision 0 are the same network: a space with a non-trivial canonical form."""

    def canonical(self, arch):
        return (min(arch[0], 2),) + arch[1:]


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_never_proposes_a_canonical_duplicate_or_infeasible_arch(name):
    space = FoldedToy(decisions=3, choices=4)
    feasible = lambda a: space.cost(a).mflops <= 16  # noqa: E731
    s = run(make_searcher(name, space, 0, feasible), space, 10_000, batch=3)
    canon = [space.canonical(a) for a in s.archs]
    assert len(canon) == len(set(canon))
    assert all(feasible(a) for a in s.archs)
    n_feasible = len({space.canonical(a) for a in np.ndindex(4, 4, 4) if feasible(tuple(int(i) for i in a))})
    # The search stops by itself once every feasible network has been proposed.
    assert len(s.archs) <= n_feasible and len(s.archs) >= n_feasible - 2


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    return json.loads(json.dumps(loaded))  # plain data: JSON-serialisable as well


CASES = [("lanas", {"rebuild_every": 3}), ("lanas", {}), ("evolution", {}), ("random", {})]


@pytest.mark.parametrize("name,opts", CASES)
def test_state_dict_resumes_exactly(name, opts):
    space = ToySpace(decisions=6, choices=4, seed=1)
    ref = run(make_searcher(name, space, 7, **opts), space, 60, batch=2)
    first = run(make_searcher(name, space, 7, **opts), space, 24, batch=2)
    again = make_searcher(name, space, 7, **opts)
    again.load_state_dict(_roundtrip(first.state_dict()))
    run(again, space, 60, batch=2)
    assert again.archs == ref.archs


def test_state_from_another_searcher_is_refused():
    space = ToySpace()
    with pytest.raises(UserError):
        make_searcher("random", space, 0).load_state_dict(make_searcher("lanas", space, 0).state_dict())


def test_lanas_proposals_satisfy_every_path_constraint_and_the_flops_bound():
    space = ToySpace(decisions=6, choices=4, seed=2)
    feasible = lambda a: space.cost(a).mflops <= 19  # noqa: E731
    s = LaNAS(space, 0, feasible, height=4, init_samples=8, min_leaf=2)
    checked = 0
    for _ in range(40):
        archs = s.propose(3)
        for arch, (tree, nid) in zip(archs, s.last_regions):
            assert feasible(arch)
            if tree is not None:
                assert tree.in_region(nid, space.encode(arch)[None].astype(float))[0]
                checked += len(tree.nodes[nid].path)
        s.observe(archs, [space.score(a) for a in archs])
    assert checked > 50  # the tree really split and constrained the proposals


def test_rejection_sampler_terminates_on_an_empty_region():
    space = ToySpace(decisions=6, choices=4)
    s = run(LaNAS(space, 0, height=3, init_samples=10, min_leaf=2), space, 20)
    s._maybe_rebuild()
    leaf = next(i for i, n in enumerate(s.tree.nodes) if n.is_leaf and n.path)
    anc = s.tree.nodes[s.tree.nodes[leaf].path[-1][0]]
    anc.w, anc.c = np.zeros_like(anc.w), 1.0  # x @ w >= 1 never holds: the good side is empty
    side = s.tree.nodes[leaf].path[-1][1]
    start = time.perf_counter()
    assert s._pick(leaf, "uniform") is None or not side
    assert s._pick(leaf, "mutants") is None or not side
    arch, nid = s._draw_in(leaf)  # backs off to the parent or anywhere, never loops forever
    assert arch is not None and time.perf_counter() - start < 5
    # With nothing feasible at all, propose returns nothing instead of hanging.
    none = LaNAS(space, 0, lambda a: False, init_samples=2)
    assert none.propose(2) == []


def test_user_searcher_by_import_path_and_bad_options():
    space = ToySpace()
    s = make_searcher("search.searchers.random_search:RandomSearch", space, 0, trusted=True)
    assert len(s.propose(3)) == 3
    with pytest.raises(UserError):
        make_searcher("lanas", space, 0, heigth=3)
    with pytest.raises(UserError):
        make_searcher("no_such_module:Cls", space, 0, trusted=True)
    with pytest.raises(UserError):
        make_searcher("lanas", space, 0, height=0)


def test_lanas_proposes_new_archs_with_1000_observations():
    space = ToySpace(decisions=25, choices=4, seed=0)  # 100-dim encoding, like the NASNet space
    rng = np.random.default_rng(0)
    archs = list({space.sample(rng) for _ in range(1000)})
    s = LaNAS(space, 0)
    s.observe(archs, [space.score(a) for a in archs])
    seen = {space.canonical(a) for a in archs}
    for _ in range(5):  # the per-proposal time (target 50 ms) is bench-search's --overhead-space figure
        a = s.propose(1)
        assert len(a) == 1 and space.canonical(a[0]) not in seen
        seen.add(space.canonical(a[0]))
        s.observe(a, [space.score(a[0])])


def test_lanas_kick_restarts_from_perturbations_of_the_best():
    space = ToySpace(decisions=6, choices=4, seed=5)
    s = LaNAS(space, 0, restart=4, kick=2, init_samples=3)
    run(s, space, 60)
    assert s._epoch > 0  # at least one climb was restarted
    assert len({space.canonical(a) for a in s.archs}) == len(s.archs)
    best = s._fin_archs[int(np.argmax(s._y[: s._epoch]))]  # the best before the last restart
    kicked = s.archs[s._epoch : s._epoch + 3]  # the new climb's first proposals
    assert all(0 < sum(x != y for x, y in zip(a, best)) <= 2 for a in kicked)
    with pytest.raises(UserError):
        make_searcher("lanas", space, 0, kick=-1)
