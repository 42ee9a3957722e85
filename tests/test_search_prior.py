"""The size prior: percentiles, the averaged metric, and `run.py search --prior`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.ranking import kendall_tau
from core.errors import UserError
from core.jsonl import read_jsonl
from search.config import SearchConfig
from search.evaluators.prior import Percentile, SizePrior
from search.loop import run_search
from tests.toy_space import ToySpace

from .test_search_evaluators import toy_table


class Counting:
    """An evaluator whose score is a fixed function of the arch; counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls, self.cache = fn, [], {}

    def evaluate(self, archs):
        self.calls.append(list(archs))
        return [{"metric": self.fn(a)} for a in archs]


def test_percentile_is_continuous_and_increasing_past_the_references():
    cdf = Percentile(list(range(100)))
    assert cdf(49.5) == pytest.approx(0.5) and cdf(0) == pytest.approx(0.005) and cdf(99) == pytest.approx(0.995)
    assert cdf(9.5) == pytest.approx(0.1) and cdf(89.5) == pytest.approx(0.9)
    grid = [cdf(x) for x in np.linspace(-0.4, 120, 300)]
    assert all(b > a for a, b in zip(grid, grid[1:], strict=False))  # strictly increasing, past the best too
    assert cdf(109) == pytest.approx(1.095) and cdf(-50) == 0.0  # linear beyond the top; floored at 0
    assert cdf(math.nan) == 0.0 and cdf(-math.inf) == 0.0
    ties = Percentile([1.0, 1.0, 2.0, 2.0, 3.0])
    assert ties(1.0) == pytest.approx(0.2) and ties(2.0) == pytest.approx(0.6) and ties(1.5) == pytest.approx(0.4)
    with pytest.raises(UserError, match="at least 2 distinct"):
        Percentile([1.0, math.nan])
    with pytest.raises(UserError, match="at least 2 distinct"):
        Percentile([3.0, 3.0, 3.0])


def test_size_prior_averages_the_two_percentiles():
    space = ToySpace(decisions=4, choices=4, seed=1)
    inner = Counting(space.score)
    prior = SizePrior(inner, space, reference=30, seed=7)
    assert len(inner.calls) == 1 and len(inner.calls[0]) == 30  # the reference, scored once up front
    again = Counting(space.score)
    SizePrior(again, space, reference=30, seed=7)
    assert again.calls == inner.calls  # the same reference archs for the same seed
    small, large = (0, 0, 0, 0), (3, 3, 3, 3)
    assert prior.combine(large, 0.0)["metric"] > prior.combine(small, 0.0)["metric"]  # bigger: higher
    assert prior.combine(small, 1.0)["metric"] > prior.combine(small, 0.0)["metric"]  # better score: higher
    assert math.isnan(prior.combine(small, math.nan)["metric"])  # a failed evaluation stays failed
    res = prior.evaluate([small, large])
    assert len(inner.calls) == 2
    for arch, r in zip([small, large], res, strict=True):
        assert r["raw_metric"] == space.score(arch) and 0 <= r["metric"] <= 100
        expected = 50 * (prior.score_cdf(r["raw_metric"]) + prior.size_cdf(math.log(space.cost(arch).params)))
        assert r["metric"] == pytest.approx(expected)
    with pytest.raises(UserError, match="params, mflops, gradnorm"):
        SizePrior(inner, space, size="depth", reference_scores=[0, 1])


def test_size_prior_ranks_better_when_score_and_size_carry_independent_signal():
    space = ToySpace(decisions=5, choices=4, seed=2)
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(300)))  # distinct archs
    size = np.array([float(sum(a)) for a in archs])
    quality, noise = rng.normal(size=len(archs)), rng.normal(size=len(archs))
    truth = quality + (size - size.mean()) / size.std()  # half of the truth is size
    score = quality + noise  # the evaluator sees the rest, noisily
    prior = SizePrior(None, space, reference_scores=score[:100])
    combined = np.array([prior.combine(a, s)["metric"] for a, s in zip(archs, score, strict=True)])
    assert kendall_tau(combined, truth) > kendall_tau(score, truth) + 0.1


def test_search_with_a_size_prior_journals_both_scores(tmp_path):
    space = ToySpace(decisions=4, choices=4, seed=5)
    table = toy_table(tmp_path, space)
    cfg = SearchConfig(run_dir=str(tmp_path / "run"), space="tests.toy_space:ToySpace", space_opts={"decisions": 4,
                       "choices": 4, "seed": 5}, evaluator="table", table=str(table), arch_column="name",
                       metric="score", budget=12, batch=3, quiet=True, seed=3, prior="params",
                       prior_reference=10)  # fmt: skip
    summary = run_search(cfg)
    lines = read_jsonl(Path(summary["journal"]))
    assert len(lines) == 12
    for r in lines:
        arch = space.from_str(r["str"])
        assert r["raw_metric"] == pytest.approx(space.score(arch))
        assert 0 <= r["size_percentile"] <= 1 and 0 <= r["metric"] <= 100
    best = max(lines, key=lambda r: r["metric"])
    assert summary["best"]["metric"] == pytest.approx(best["metric"])
    assert summary["best"]["raw_metric"] == pytest.approx(best["raw_metric"])  # topk.json keeps both
    with pytest.raises(UserError, match="prior-reference"):
        SearchConfig(run_dir=str(tmp_path / "x"), evaluator="table", table=str(table), prior="params",
                     prior_reference=1)  # fmt: skip
