"""The search benchmark on a table: figures per searcher, JSON and plot written, overhead measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.search_table import BenchSearchConfig, _Lookup, measure_overhead, run_bench_search
from core.errors import UserError
from tests.toy_space import ToySpace

from .test_search_evaluators import toy_table


def test_bench_on_a_toy_table(tmp_path):
    space = ToySpace(decisions=4, choices=4, seed=2)
    table = toy_table(tmp_path, space)
    cfg = BenchSearchConfig(table=str(table), arch_column="name", metric="score", report_metric="other",
                            searchers="lanas,random", seeds=3, budget=256, json=str(tmp_path / "b.json"),
                            plot=str(tmp_path / "b.png"), searcher_opts={"lanas.height": 2}, quiet=True)  # fmt: skip
    out = run_bench_search(cfg, space)
    assert out["target"] == pytest.approx(space.optimum()[1])
    for name in ("lanas", "random"):
        s = out["searchers"][name]
        assert s["found"] == 3  # 256 distinct evaluations cover the whole space
        assert 1 <= s["median_evals_to_best"] <= 256 and set(s["mean_best"]) == {"50", "100", "200"}
    assert json.loads((tmp_path / "b.json").read_text())["searchers"]["lanas"]["hits"]
    assert (tmp_path / "b.png").stat().st_size > 0


def test_noisy_lookup_is_fixed_per_seed_and_arch():
    space = ToySpace(decisions=4, choices=4, seed=2)
    archs = [tuple(int(i) for i in idx) for idx in np.ndindex(4, 4, 4, 4)]
    rows = {space.to_str(a): (float(i), 2.0 * i) for i, a in enumerate(archs)}
    exact = _Lookup(space, rows)
    assert [exact(a, seed=5)[0] for a in archs] == [float(i) for i in range(len(archs))]
    noisy = _Lookup(space, rows, noise=2.0)
    first = np.array([noisy(a, seed=0)[0] for a in archs])
    assert np.array_equal(first, [noisy(a, seed=0)[0] for a in archs])  # the same arch, the same error
    assert not np.array_equal(first, [noisy(a, seed=1)[0] for a in archs])  # each seed its own landscape
    errors = first - np.arange(len(archs))
    assert 1.5 < errors.std() < 2.5 and abs(errors.mean()) < 0.5
    assert [noisy(a, seed=0)[1:] for a in archs] == [(float(i), 2.0 * i) for i in range(len(archs))]


def test_noisy_bench_returns_the_best_observed_arch(tmp_path):
    space = ToySpace(decisions=4, choices=4, seed=2)
    table = toy_table(tmp_path, space)
    cfg = BenchSearchConfig(table=str(table), arch_column="name", metric="score", searchers="random", seeds=4,
                            budget=256, noise=1e3, quiet=True)  # fmt: skip
    out = run_bench_search(cfg, space)["searchers"]["random"]
    assert out["found"] == 4  # the whole space is evaluated, so the true best is always seen
    # with errors 1,000x the metric, the best observed is a near-random arch, not the true best
    assert out["mean_best_report"]["200"] < space.optimum()[1] - 1e-6


def test_bench_options_are_checked():
    with pytest.raises(UserError):
        BenchSearchConfig(table="x.csv", noise=-1.0)
    with pytest.raises(UserError):
        BenchSearchConfig(table="")
    with pytest.raises(UserError):
        BenchSearchConfig(table="x.csv", searcher_opts={"height": 3}).opts_for("lanas")


def test_overhead_measure():
    out = measure_overhead(ToySpace(decisions=10, choices=4), {}, n_obs=200, proposals=5)
    assert 0 < out["median"] <= out["max"] and out["dim"] == 40
