"""`run.py bench-nb201` at a toy budget, and the rank statistics against scipy."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import scipy.stats

from bench.nb201.bias import op_bias, worst_bias
from bench.nb201.config import BenchNB201Config
from bench.nb201.oneshot import main
from bench.nb201.train import EdgeSplitSampler, FewShotEvaluator, TimeCosine
from bench.ranking import bootstrap_ci, kendall_tau, rankdata, spearman_rho
from core.errors import UserError
from tests.conftest import NB201_CSV, ROOT

TABLE = NB201_CSV if NB201_CSV.exists() else ROOT / "tests" / "data" / "nb201_tiny.csv"

# ---- statistics -----------------------------------------------------------------------------------

FIXED = [
    ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]),
    ([1, 1, 2, 2, 3, 3], [1, 2, 1, 3, 3, 3]),  # ties in both
    ([70.1, 70.1, 70.1, 80.0, 90.0], [93.1, 92.0, 93.1, 94.0, 91.0]),
    ([3, 1, 2], [1, 2, 3]),
]


@pytest.mark.parametrize(("x", "y"), FIXED)
def test_tau_rho_match_scipy_on_fixed_data(x, y):
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y)[0], abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tau_rho_match_scipy_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 300).astype(float)  # heavy ties, like accuracies on a small split
    y = x + rng.normal(0, 2, 300).round()
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y)[0], abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    assert np.array_equal(rankdata(x), scipy.stats.rankdata(x))


def test_degenerate_inputs_and_bootstrap():
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman_rho([1, 2, 3], [4, 4, 4]))
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1, 2, 3])
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    lo, hi = bootstrap_ci(kendall_tau, x, y, n_boot=300, seed=0)
    assert lo < kendall_tau(x, y) < hi and hi - lo < 0.3
    assert bootstrap_ci(kendall_tau, x, y, n_boot=300, seed=0) == (lo, hi)  # seeded


# ---- pieces of the benchmark ------------------------------------------------------------------------


def test_edge_split_sampler_and_time_cosine():
    class Base:
        def archs(self, step):
            return [("none",) * 6, ("skip_connect",) * 6]

    sampler = EdgeSplitSampler(Base(), 2, "nor_conv_3x3")
    for a, b in zip(sampler.archs(0), Base().archs(0)):
        assert a[2] == "nor_conv_3x3" and a[:2] + a[3:] == b[:2] + b[3:]

    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = _cfg("/tmp/unused", lr=0.1, min_lr=0.001, warmup=0.0)
    sched = TimeCosine(opt, cfg, seconds=100.0)
    sched.step_update(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1, rel=1e-3)
    sched.t0 -= 50.0  # half the budget spent
    sched.step_update(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001 + 0.5 * 0.099, rel=1e-3)
    sched.t0 -= 100.0  # past the budget: annealed
    sched.step_update(2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)
    by_steps = TimeCosine(opt, cfg, seconds=math.inf, steps=10)  # a step horizon ignores the clock
    by_steps.step_update(5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001 + 0.5 * 0.099, rel=1e-3)
    by_steps.step_update(10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)


def test_config_rejects_bad_values():
    for bad in ({"strategies": ["bogus"]}, {"recal": [-1]}, {"n_archs": 2}, {"fewshot_edge": 6}, {"budget_minutes": 0}):
        with pytest.raises(UserError):
            BenchNB201Config(**bad)
    with pytest.raises(UserError, match="--table"):
        main(_cfg("/tmp/unused", table=""))


# ---- the benchmark at a toy budget ----------------------------------------------------------------


def _cfg(run_dir, **kw):
    base = dict(
        run_dir=str(run_dir), dataset="cifar10-mini", table=str(TABLE), budget_minutes=0.2, max_steps=3,
        strategies=["uniform"], recal=[32, 0], n_archs=12, n_top=3, bootstrap=50, search_size=100,
        searchers=["lanas", "evolution", "random"], search_seeds=1, search_budget=6, search_batch=3,
        space_opts={"channels": 4, "cells": 1}, batch_size=32, quiet=True,
    )  # fmt: skip
    base.update(kw)
    return BenchNB201Config(**base)


def _table_truth(column="c10_test_200ep"):
    with open(TABLE, newline="") as fh:
        return {row["arch"]: float(row[column]) for row in csv.DictReader(fh)}


def test_op_bias_finds_an_overvalued_op_on_one_edge():
    rng = np.random.default_rng(0)
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    archs = [tuple(ops[i] for i in rng.integers(5, size=6)) for _ in range(300)]
    truth = rng.normal(size=300)
    bonus = np.array([3.0 if a[3] == "nor_conv_3x3" else 0.0 for a in archs])  # edge 3 is 3<-0
    honest = op_bias(archs, truth + 0.1 * rng.normal(size=300), truth)
    assert max(abs(v) for per_op in honest.values() for v in per_op.values()) < 0.05
    biased = op_bias(archs, truth + bonus, truth)
    edge, op, value = worst_bias(biased, k=1)[0]
    assert (edge, op) == ("3<-0", "nor_conv_3x3") and value < -0.2  # overvalued: scored above its truth
    assert all(v > 0 for o, v in biased["3<-0"].items() if o != "nor_conv_3x3")  # the others pay for it
    assert set(biased) == {"1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"}


def test_toy_benchmark_gives_tau_from_table_values(tmp_path):
    cfg = _cfg(tmp_path, json=str(tmp_path / "out.json"))
    result = main(cfg)
    saved = json.loads((tmp_path / "out.json").read_text())
    assert (tmp_path / "ranking.png").stat().st_size > 1000
    truth = _table_truth()
    archs, n = saved["sample"]["archs"], saved["sample"]["n_uniform"]
    assert len(set(archs)) == len(archs) and n == min(12, len(truth))
    assert saved["sample"]["truth"] == [truth[a] for a in archs]  # the ground truth is the table's own column
    assert result["supernets"]["uniform"]["steps"] == 3
    for name in ("uniform/recal32", "uniform/recal0"):
        score = saved["scores"][name]
        rep = saved["ranking"][name]["uniform"]
        assert len(score) == len(archs) and all(0 <= s <= 100 for s in score)
        expected = scipy.stats.kendalltau(score[:n], [truth[a] for a in archs[:n]])[0]
        assert rep["tau"] == pytest.approx(expected, abs=1e-12)
        assert -1 <= rep["tau"] <= 1 and -1 <= rep["tau_ci"][0] <= rep["tau_ci"][1] <= 1
        assert len(saved["ranking"][name]["op_bias"]) == 6
    runs = saved["search"]["uniform/recal32"]
    assert set(runs) >= {"lanas", "evolution", "random", "seconds"}
    for name in ("lanas", "evolution", "random"):
        run = runs[name]["runs"][0]
        assert run["evals"] == 6 and run["arch"].count("~") == 6
        if NB201_CSV.exists():
            assert run["truth"] == truth[run["arch"]]
        # every distinct cell the search scored, best-scored first, with its table value
        visited = run["visited"]
        assert 1 <= len(visited) <= 6 and visited[0][1] == run["score"]
        assert [v[1] for v in visited] == sorted((v[1] for v in visited), reverse=True)
        if NB201_CSV.exists():
            assert all(v[2] == truth[v[0]] for v in visited)
            assert run["best_visited"] == max(v[2] for v in visited) >= run["truth"]
            assert visited[run["best_visited_score_rank"] - 1][2] == run["best_visited"]
    baseline = saved["baselines"]["params"]["uniform"]
    assert -1 <= baseline["tau"] <= 1
    # the size prior: the same supernet scores averaged with the parameter-count percentile
    prior, score = saved["scores"]["uniform/recal32+params"], saved["scores"]["uniform/recal32"]
    assert len(prior) == len(archs) and all(p >= 0 for p in prior) and prior != score  # > 100 past the references
    expected = scipy.stats.kendalltau(prior[:n], [truth[a] for a in archs[:n]])[0]
    assert saved["ranking"]["uniform/recal32+params"]["uniform"]["tau"] == pytest.approx(expected, abs=1e-12)
    assert saved["search"]["uniform/recal32+params"]["lanas"]["runs"][0]["evals"] == 6
    assert "uniform/recal0+params" in saved["ranking"] and "uniform/recal0+params" not in saved["search"]
    # bench/nb201/compare.py --size-prior recomputes the same ranking from the saved scores
    from bench.nb201 import compare

    again = compare.with_size_prior(np.array(score), archs, n, saved["config"]["space_opts"])
    assert again.tolist() == pytest.approx(prior)


def test_fewshot_dispatches_to_its_sub_supernet_and_reuses(tmp_path):
    from search.evaluators.supernet import SupernetEvaluator
    from supernet.nets.nb201 import OPS
    from supernet.spaces.base import make_space

    cfg = _cfg(tmp_path, strategies=["fewshot"], max_steps=2, recal=[32], n_archs=5, n_top=0, search_on="none")
    result = main(cfg)
    stats = result["supernets"]["fewshot"]
    assert stats["steps"] == 2 * (1 + len(OPS)) and set(OPS) <= set(stats)
    space = make_space("nb201", channels=4, cells=1)
    ckpts = {op: tmp_path / "fewshot" / f"split-{op}" / "supernet" / "last.pt" for op in OPS}
    few = FewShotEvaluator(space, ckpts, edge=0, recal_images=32)
    arch = space.canonical(("nor_conv_1x1", "nor_conv_3x3", "skip_connect", "avg_pool_3x3", "none", "nor_conv_3x3"))
    direct = SupernetEvaluator(space, ckpts[arch[0]], recal_images=32).score(arch)
    other = SupernetEvaluator(space, ckpts["avg_pool_3x3"], recal_images=32).score(arch)
    few.score(space.canonical(("avg_pool_3x3",) + arch[1:]))  # load another sub-supernet first
    assert few.score(arch)["metric"] == direct["metric"]
    assert 0 <= other["metric"] <= 100
    import torch

    w_none, w_conv = (torch.load(ckpts[op], weights_only=True)["model"] for op in ("none", "nor_conv_3x3"))
    assert any(not torch.equal(w_none[k], w_conv[k]) for k in w_none)  # the sub-supernets were fine-tuned apart
    again = main(cfg)  # same settings: the trained sub-supernets are reused, not retrained
    assert again["supernets"]["fewshot"].get("reused") is True


def test_fewshot_sandwich_teaches_with_each_sub_supernets_largest(tmp_path):
    from supernet.nets.nb201 import OPS

    cfg = _cfg(tmp_path, strategies=["fewshot"], fewshot_inner="sandwich", fewshot_edge=3, max_steps=1, recal=[32],
               n_archs=5, n_top=0, search_on="none")  # fmt: skip
    stats = main(cfg)["supernets"]["fewshot"]
    assert stats["base"]["paths_per_step"] == 2 + cfg.sandwich_k  # largest, smallest and k random
    assert all(stats[op]["paths_per_step"] == 2 + cfg.sandwich_k for op in OPS)
    saved = json.loads((tmp_path / "fewshot" / "train.json").read_text())
    assert saved["signature"]["fewshot_inner"] == "sandwich"  # a uniform few-shot supernet is not reused for it
    sampler = EdgeSplitSampler(_StubSampler(), edge=3, op="skip_connect")
    assert all(a[3] == "skip_connect" for a in sampler.archs(0))
    assert sampler.archs(0)[0][:3] == ("nor_conv_3x3",) * 3  # the teacher: the largest with the edge fixed


class _StubSampler:
    def archs(self, step):
        return [("nor_conv_3x3",) * 6, ("none",) * 6]


# ---- the final stage: the search's best cells trained alone ---------------------------------------


def test_top_candidates_are_distinct_canonical_cells_best_first():
    from bench.nb201.final import top_candidates
    from supernet.spaces.base import make_space

    space = make_space("nb201", channels=4, cells=1)
    a = ("nor_conv_3x3",) * 6
    b = ("nor_conv_1x1",) + ("nor_conv_3x3",) * 5
    dead = ("none",) * 6
    same_as_dead = ("none", "none", "none", "none", "nor_conv_3x3", "none")  # output unreachable: one cell
    got = top_candidates(space, [dead, a, same_as_dead, b, a], np.array([90.0, 80.0, 95.0, math.nan, 70.0]), 3)
    assert [score for _, score in got] == [95.0, 80.0]  # one of the two dead cells; a once; NaN dropped
    assert got[0][0] == space.canonical(dead) and got[1][0] == space.canonical(a)
    assert len(top_candidates(space, [a, b], np.array([1.0, 2.0]), 1)) == 1


def test_final_stage_trains_each_cell_alone_and_keeps_the_best_on_the_search_split(tmp_path):
    import torch

    from bench.nb201.final import FinalStage
    from supernet.spaces.base import make_space

    cfg = _cfg(tmp_path, max_steps=3, recal=[32], final_k=2, final_epochs=0.5)
    space = make_space("nb201", **cfg.space_opts)
    conv = ("nor_conv_3x3",) * 6
    skip = ("nor_conv_3x3",) * 3 + ("skip_connect",) + ("nor_conv_3x3",) * 2
    stage = FinalStage(cfg, tmp_path)
    chosen = stage.choose([(conv, 80.0), (skip, 79.0)])
    rows = chosen["candidates"]
    assert [r["score"] for r in rows] == [80.0, 79.0] and all(r["steps"] == 3 for r in rows)
    assert chosen["val_acc"] == max(r["val_acc"] for r in rows) and 0 <= chosen["val_acc"] <= 100
    assert chosen["arch"] == rows[int(np.argmax([r["val_acc"] for r in rows]))]["arch"]
    # trained alone: both start from the same weights, and the ops neither cell uses stay untouched
    ckpts = {json.loads((p.parent.parent / "final.json").read_text())["result"]["arch"]: p
             for p in (tmp_path / "final").glob("*/supernet/last.pt")}  # fmt: skip
    w_conv, w_skip = (torch.load(ckpts[space.to_str(a)], weights_only=True)["model"] for a in (conv, skip))
    weights = [k for k in w_conv if k.endswith("weight")]
    assert all(torch.equal(w_conv[k], w_skip[k]) for k in weights if "nor_conv_1x1" in k or "avg_pool" in k)
    for edge in (3, 0):  # edge 3: trained in the conv cell only; edge 0: trained in both, apart
        key = f"cells.0.edges.{edge}.nor_conv_3x3.1.weight"
        assert not torch.equal(w_conv[key], w_skip[key])
    again = FinalStage(cfg, tmp_path)  # same settings: read back from disk, nothing retrained
    assert again.choose([(conv, 80.0), (skip, 79.0)]) == chosen and again.train_seconds == 0
    opts = {"channels": 4, "cells": 2}
    deeper = FinalStage(_cfg(tmp_path, max_steps=1, recal=[32], final_k=1, final_space_opts=opts), tmp_path)
    deeper.accuracy(skip)  # another macro network: trained anew in it, not read back from the shallow one
    assert deeper.train_seconds > 0 and deeper.cache[space.to_str(skip)]["steps"] == 1
    assert deeper.path(skip) != stage.path(skip)
    model = torch.load(deeper.path(skip) / "supernet" / "last.pt", weights_only=True)["model"]
    n_cells = {k.split(".")[1] for k in model if k.startswith("cells.")}
    assert len(n_cells) == 2 * 3 + 2  # two cells per stage and two reduction blocks


def test_toy_benchmark_with_the_final_stage(tmp_path):
    out = str(tmp_path / "out.json")
    cfg = _cfg(tmp_path, recal=[32], searchers=["lanas", "random", "evolution"], search_seeds=2, final_k=2,
               final_epochs=0.2, final_searchers=["lanas", "random"], final_workers=2, json=out)  # fmt: skip
    main(cfg)
    saved = json.loads((tmp_path / "out.json").read_text())
    # --final-on prior (the default): only the searches on the size-prior score go through the stage
    assert all("final" not in r for r in saved["search"]["uniform/recal32"]["lanas"]["runs"])
    saved["search"]["uniform/recal32"] = saved["search"]["uniform/recal32+params"]
    truth = _table_truth()
    res = saved["search"]["uniform/recal32"]["lanas"]
    for run in res["runs"]:
        final = run["final"]
        assert 1 <= len(final["candidates"]) <= 2 and final["arch"] in [c["arch"] for c in final["candidates"]]
        assert final["candidates"][0]["score"] == pytest.approx(run["score"])  # the search's best is a candidate
        if NB201_CSV.exists():
            assert final["truth"] == truth[final["arch"]]
    if NB201_CSV.exists():  # without the full table the chosen cells have no recorded truth
        assert res["mean_truth_final"] == pytest.approx(np.mean([r["final"]["truth"] for r in res["runs"]]))
    evolution = saved["search"]["uniform/recal32"]["evolution"]
    assert "final" not in evolution["runs"][0] and "mean_truth_final" not in evolution  # not a --final-searchers
    stage = saved["final_stage"]
    trained = {c["arch"] for c in stage["cells"]}
    wanted = {c["arch"] for s in ("lanas", "random") for r in saved["search"]["uniform/recal32"][s]["runs"]
              for c in r["final"]["candidates"]}  # fmt: skip
    assert trained == wanted  # each cell trained once, however many searches proposed it


def test_a_supernet_is_reused_whichever_directory_names_its_data(tmp_path, monkeypatch, caplog):
    from bench.nb201.train import _signature, train_supernet

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path / "run", data_dir="data")
    saved = _signature(cfg, "uniform")
    assert saved["data_dir"] == str(tmp_path / "data")  # recorded absolute
    out = tmp_path / "run" / "uniform"
    (out / "supernet").mkdir(parents=True)
    (out / "supernet" / "last.pt").write_bytes(b"")  # reuse only checks that it is there
    (out / "train.json").write_text(json.dumps({"signature": saved, "stats": {"steps": 7}}))
    monkeypatch.chdir(tmp_path / "run")  # the same data named relatively from another directory
    stats, _ = train_supernet(_cfg(tmp_path / "run", data_dir="../data"), "uniform", tmp_path / "run")
    assert stats == {"steps": 7, "reused": True}

    def trained(*a, **k):
        raise RuntimeError("trained")

    monkeypatch.setattr("bench.nb201.train.SupernetTrainer", trained)
    with pytest.raises(RuntimeError, match="trained"):  # other settings: said, then trained again
        train_supernet(_cfg(tmp_path / "run", data_dir="../data", lr=0.1), "uniform", tmp_path / "run")
    assert "lr 0.05 -> 0.1" in caplog.text
