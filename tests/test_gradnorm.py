"""The gradnorm zero-cost proxy and the search prior built on it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data import TensorLoader, load_data
from core.errors import UserError
from search.evaluators.gradnorm import GradNorm
from search.evaluators.prior import SizePrior
from supernet.spaces.base import make_space
from tests.toy_space import ToySpace

CFG = SimpleNamespace(seed=3, device="cpu", dataset="cifar10-mini", data_dir="", search_size=200, num_classes=0,
                      image_size=0, download=False)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    space = make_space("nasnet", ops="lanas", nodes=2, channels=4, blocks=[1, 1])
    return space, GradNorm(space, CFG, reps=2, batch_size=16)


def test_gradnorm_is_the_log_gradient_norm_at_initialisation(tiny):
    space, proxy = tiny
    arch = space.sample(np.random.default_rng(0))
    data = load_data("cifar10-mini", search_size=200)
    loader = TensorLoader(data.train, 16, shuffle=True, drop_last=True, mean=data.mean, std=data.std, seed=3)
    logs = []
    for rep, (x, y) in zip(range(2), loader, strict=False):  # the seeded shuffle's first batches
        torch.manual_seed(3 * 1000 + rep)
        net = space.build(arch, 10).train()
        F.cross_entropy(net(x), y).backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        logs.append(math.log(grads.norm().item()))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert proxy(arch) == pytest.approx(sum(logs) / 2, rel=1e-5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert space.canonical(arch) in proxy.cache


def test_gradnorm_is_deterministic_and_tells_archs_apart(tiny):
    space, proxy = tiny
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(4)]
    again = GradNorm(space, CFG, reps=2, batch_size=16)
    values = [proxy(a) for a in archs]
    assert [again(a) for a in archs] == values  # a fresh instance, same seed: the same numbers
    assert len(set(values)) == len(values) and all(math.isfinite(v) for v in values)


def test_gradnorm_prior_averages_the_proxy_percentile():
    space = ToySpace(decisions=4, choices=4, seed=1)
    proxy = lambda a: float(a[0] - a[1])  # noqa: E731  # any per-arch number
    prior = SizePrior(SimpleNamespace(evaluate=lambda archs: [{"metric": float(sum(a))} for a in archs]), space,
                      size="gradnorm", reference=30, seed=7, proxy=proxy)  # fmt: skip
    hi, lo = (3, 0, 0, 0), (0, 3, 0, 0)  # the same score (3), the proxy at its top and bottom
    r_hi, r_lo = prior.combine(hi, 3.0), prior.combine(lo, 3.0)
    assert r_hi["metric"] > r_lo["metric"] and r_hi["gradnorm"] == 3.0 and r_lo["gradnorm"] == -3.0
    for arch, r in ((hi, r_hi), (lo, r_lo)):
        expected = 50 * (prior.score_cdf(3.0) + prior.size_cdf(proxy(arch)))
        assert r["metric"] == pytest.approx(expected) and r["gradnorm_percentile"] == prior.size_cdf(proxy(arch))
        assert "size_percentile" not in r
    with pytest.raises(UserError, match="needs its proxy"):
        SizePrior(None, space, size="gradnorm", reference_scores=[0, 1])


def by_size(archs, space):
    """A label-free evaluator for the test below: smaller cells score higher."""
    return [-space.cost(a).mflops for a in archs]


def test_search_with_the_gradnorm_prior_journals_the_proxy(tmp_path):
    from core.jsonl import read_jsonl
    from search.config import SearchConfig
    from search.loop import run_search

    opts = {"ops": "lanas", "nodes": 2, "channels": 4, "blocks": [1, 1]}
    cfg = SearchConfig(run_dir=str(tmp_path), space="nasnet", space_opts=opts, evaluator="tests.test_gradnorm:by_size",
                       searcher="random", budget=4, batch=2, dataset="cifar10-mini", search_size=200, seed=3,
                       prior="gradnorm", prior_reference=4, prior_reps=1, quiet=True, threads=1)  # fmt: skip
    summary = run_search(cfg)
    space = make_space("nasnet", **opts)
    proxy = GradNorm(space, cfg, reps=1)
    lines = read_jsonl(summary["journal"])
    assert len(lines) == 4
    for r in lines:
        arch = space.from_json(r["arch"])
        assert r["gradnorm"] == pytest.approx(proxy(arch)) and r["raw_metric"] == pytest.approx(-r["mflops"])
        assert 0 <= r["gradnorm_percentile"] and r["metric"] >= 0
    with pytest.raises(UserError, match="prior-reps"):
        SearchConfig(run_dir=str(tmp_path / "x"), prior="gradnorm", prior_reps=0)
