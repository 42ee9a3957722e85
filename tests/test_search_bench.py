"""The search benchmark on a table: figures per searcher, JSON and plot written, overhead measured."""

from __future__ import annotations

import json

import pytest

from core.errors import UserError
from search.bench import measure_overhead, run_bench_search
from search.config import BenchSearchConfig
from search.toy import ToySpace

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


def test_bench_options_are_checked():
    with pytest.raises(UserError):
        BenchSearchConfig(table="")
    with pytest.raises(UserError):
        BenchSearchConfig(table="x.csv", searcher_opts={"height": 3}).opts_for("lanas")


def test_overhead_measure():
    out = measure_overhead(ToySpace(decisions=10, choices=4), {}, n_obs=200, proposals=5)
    assert 0 < out["median"] <= out["max"] and out["dim"] == 40
