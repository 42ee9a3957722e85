"""Supernet training: exact resume, strategies learn, bf16, NaN guard, recalibration, sandwich KD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.checkpoint import load_checkpoint
from core.errors import UserError
from supernet.config import SupernetConfig
from supernet.train import SupernetTrainer, step_loss

TINY = {"channels": 8, "cells": 1}


def make_cfg(tmp_path, **kw) -> SupernetConfig:
    base = dict(
        run_dir=str(tmp_path),
        space="nb201",
        space_opts=TINY,
        epochs=1,
        batch_size=32,
        search_size=500,
        recal_images=64,
        panel_random=1,
        quiet=True,
        lr=0.05,
        seed=3,
        checkpoint_minutes=0,
    )
    base.update(kw)
    return SupernetConfig(**base)


def _weights(path):
    return load_checkpoint(path)["model"]


def test_exact_resume_after_kill(tmp_path):
    full = SupernetTrainer(make_cfg(tmp_path / "a", max_steps=8)).fit()
    assert full["step"] == 8
    SupernetTrainer(make_cfg(tmp_path / "b", max_steps=3)).fit()  # "killed" after 3 steps
    resumed = SupernetTrainer(make_cfg(tmp_path / "b", max_steps=8, resume="auto")).fit()
    assert resumed["step"] == 8
    a, b = _weights(tmp_path / "a/supernet/last.pt"), _weights(tmp_path / "b/supernet/last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and a different seed gives different weights (the comparison can fail)
    SupernetTrainer(make_cfg(tmp_path / "c", max_steps=8, seed=4)).fit()
    c = _weights(tmp_path / "c/supernet/last.pt")
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_existing_run_needs_resume_flag(tmp_path):
    SupernetTrainer(make_cfg(tmp_path, max_steps=1)).fit()
    with pytest.raises(UserError, match="--resume auto"):
        SupernetTrainer(make_cfg(tmp_path, max_steps=2)).fit()


def _mean_loss(trainer, data, n_archs=6):
    """Train-mode loss of a few fixed random subnets on fixed real images."""
    import numpy as np

    x, y = next(iter(trainer._loader(data, 256)))
    rng = np.random.default_rng(0)
    archs = [trainer.space.sample(rng) for _ in range(n_archs)]
    trainer.net.train()
    with torch.no_grad():
        return sum(F.cross_entropy(trainer.net(x, a), y).item() for a in archs) / n_archs


@pytest.mark.parametrize("strategy", ["uniform", "sandwich", "fair", "flops"])
def test_each_strategy_learns(tmp_path, strategy):
    # 64 real training images, 10 epochs: the supernet must fit them (its loss on them falls)
    extra = {"max_mflops": 3.0, "min_mflops": 0.5} if strategy == "flops" else {}
    cfg = make_cfg(
        tmp_path,
        strategy=strategy,
        epochs=10,
        search_size=4936,
        lr=0.1,
        augment=False,
        eval_every=100,
        recal_images=0,
        panel_random=0,
        **extra,
    )
    trainer = SupernetTrainer(cfg)
    trainer.data.search = trainer.data.search.subset(torch.arange(64))  # keep the end-of-run panel cheap
    before = _mean_loss(trainer, trainer.data.train)
    result = trainer.fit()
    after = _mean_loss(trainer, trainer.data.train)
    assert result["step"] == 20 and after < before - 0.15, (before, after)
    if strategy == "flops":
        for step in range(10):
            (a,) = trainer.sampler.archs(step)
            assert 0.5 <= trainer.space.cost(a, 10).mflops <= 3.0


def test_bf16_autocast_on_cpu_trains(tmp_path):
    cfg = make_cfg(
        tmp_path,
        amp="bf16",
        epochs=10,
        search_size=4936,
        lr=0.1,
        augment=False,
        eval_every=100,
        recal_images=0,
        panel_random=0,
    )
    trainer = SupernetTrainer(cfg)
    trainer.data.search = trainer.data.search.subset(torch.arange(64))
    before = _mean_loss(trainer, trainer.data.train)
    trainer.fit()
    assert _mean_loss(trainer, trainer.data.train) < before - 0.15


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(UserError, match="bf16"):
        SupernetTrainer(make_cfg(tmp_path, amp="fp16"))


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, max_steps=2)
    SupernetTrainer(cfg).fit()
    good = _weights(tmp_path / "supernet/last.pt")
    trainer = SupernetTrainer(make_cfg(tmp_path, max_steps=6, resume="auto"))
    monkeypatch.setattr("supernet.train.step_loss", lambda *a: torch.tensor(math.nan, requires_grad=True))
    with pytest.raises(UserError, match=r"non-finite loss \(nan\) in steps 3-6; the last good checkpoint"):
        trainer.fit()  # read at the checkpoint after step 6, not per step
    after = _weights(tmp_path / "supernet/last.pt")
    assert all(torch.equal(good[k], after[k]) for k in good)
    skip = SupernetTrainer(make_cfg(tmp_path / "skip", max_steps=3, nan_policy="skip"))
    assert skip.fit()["step"] == 3


def test_the_loop_reads_the_loss_at_intervals_not_every_step(tmp_path, monkeypatch):
    """Under --nan-policy stop no step syncs with the device to read its loss; skip must read each one."""
    reads = {"n": 0}
    item = torch.Tensor.item

    def counted(self):
        reads["n"] += 1
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    counts = {}
    for policy in ("stop", "skip"):
        reads["n"] = 0
        SupernetTrainer(make_cfg(tmp_path / policy, max_steps=12, nan_policy=policy)).fit()
        counts[policy] = reads["n"]
    assert counts["skip"] - counts["stop"] >= 11, counts


def test_recalibration_is_deterministic_and_restores_state(tmp_path):
    from supernet.evaluate import recal_subset, recalibrate_bn, score_arch

    trainer = SupernetTrainer(make_cfg(tmp_path, max_steps=5))
    trainer.fit()
    arch = trainer.panel["random0"]
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    recal = trainer._loader(recal_subset(trainer.data.train, 96, 0), 32)
    ev = trainer._loader(trainer.data.search, 128)
    s1, s2 = score_arch(trainer.net, arch, recal, ev), score_arch(trainer.net, arch, recal, ev)
    assert s1 == s2 and s1["n_recal"] == 96
    after = trainer.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # scoring has no side effect
    stats = []
    for _ in range(2):
        recalibrate_bn(trainer.net, arch, recal)
        stats.append({k: v.clone() for k, v in trainer.net.state_dict().items() if "running" in k})
    assert all(torch.equal(stats[0][k], stats[1][k]) for k in stats[0])
    # the recalibrated statistics are the plain mean over the images seen, not a momentum average
    bn = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.num_batches_tracked > 0)
    assert bn.momentum == pytest.approx(1 / 3)


def test_score_reports_the_mean_cross_entropy_and_the_evaluator_can_maximise_it(tmp_path):
    from search.evaluators.supernet import SupernetEvaluator
    from supernet.evaluate import score_arch

    trainer = SupernetTrainer(make_cfg(tmp_path, max_steps=4))
    trainer.fit()
    arch = trainer.panel["random0"]
    ev = trainer._loader(trainer.data.search, 64)
    got = score_arch(trainer.net, arch, None, ev)
    trainer.net.eval()
    with torch.no_grad():
        batches = [(trainer.net(x, arch), y) for x, y in ev]
    logits, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert got["acc"] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
    ckpt = tmp_path / "supernet" / "last.pt"
    by_nll = SupernetEvaluator(trainer.space, ckpt, recal_images=0, score="nll").score(arch)
    by_acc = SupernetEvaluator(trainer.space, ckpt, recal_images=0).score(arch)
    assert by_nll["metric"] == pytest.approx(-got["loss"], rel=1e-5) and by_nll["acc"] == by_acc["metric"]
    assert (by_nll["score"], by_acc["score"]) == ("nll", "acc")  # the journal names what "metric" is
    with pytest.raises(UserError, match="unknown supernet score 'top5'"):
        SupernetEvaluator(trainer.space, ckpt, score="top5")


def test_sandwich_on_the_nasnet_cell_space(tmp_path):
    """The cell space declares its largest and smallest subnets, so the sandwich rule runs on it."""
    opts = {"channels": 4, "blocks": [1, 1], "nodes": 3, "ops": "lanas", "concat": "loose"}
    cfg = make_cfg(tmp_path, space="nasnet", space_opts=opts, strategy="sandwich", sandwich_k=1,
                   search_size=4936, recal_images=32)  # fmt: skip
    trainer = SupernetTrainer(cfg)
    trainer.data.search = trainer.data.search.subset(torch.arange(64))
    archs = trainer.sampler.archs(0)
    assert archs[:2] == [trainer.space.largest(), trainer.space.smallest()] and len(archs) == 3
    assert (
        trainer.space.cost(archs[0]).mflops > trainer.space.cost(archs[2]).mflops > trainer.space.cost(archs[1]).mflops
    )
    result = trainer.fit()
    assert result["step"] == 2 and {"acc_largest", "acc_smallest"} <= set(result)
    # under uniform sampling the cell space's panel stays random cells (the checkpoints it selects unchanged)
    uniform = SupernetTrainer(make_cfg(tmp_path / "u", space="nasnet", space_opts=opts, panel_random=2))
    assert list(uniform.panel) == ["random0", "random1"]
    from supernet.sampling import ArchSampler
    from tests.toy_space import ToySpace

    with pytest.raises(UserError, match="largest and smallest"):  # a space without them is still refused
        ArchSampler(ToySpace(), "sandwich", 0)


def test_sandwich_distillation_comes_from_largest():
    cfg = SupernetConfig(strategy="sandwich", kd_temperature=2.0, kd_weight=1.0)
    torch.manual_seed(0)
    logits = [torch.randn(4, 10, requires_grad=True) for _ in range(3)]
    y = torch.randint(0, 10, (4,))
    loss = step_loss(logits, y, cfg)
    loss.backward()
    t = 2.0
    expected = F.cross_entropy(logits[0], y)
    for z in logits[1:]:
        expected = (
            expected
            + F.kl_div(F.log_softmax(z / t, 1), F.softmax(logits[0].detach() / t, 1), reduction="batchmean") * t * t
        )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # the teacher only gets the label loss gradient: the KD terms are detached from it
    ce_grad = torch.autograd.grad(F.cross_entropy(logits[0], y), logits[0])[0]
    assert torch.allclose(logits[0].grad, ce_grad, atol=1e-6)


def test_ddp_two_ranks_identical(tmp_path):
    import json

    from tests.conftest import ROOT, run_torchrun

    proc = run_torchrun(ROOT / "tests" / "ddp_supernet_worker.py", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / f"weights.{r}.pt", weights_only=True) for r in range(2))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    a0, a1 = (json.loads((tmp_path / f"archs.{r}.json").read_text()) for r in range(2))
    assert a0 == a1 and len(a0) == 4
    assert len(set(map(tuple, a0))) > 1  # the architecture changes from step to step
    saved = load_checkpoint(tmp_path / "supernet/last.pt")
    assert saved["step"] == 4 and all(torch.equal(saved["model"][k], w0[k]) for k in w0)


def test_throughput_benchmark_runs(tmp_path):
    import json

    from bench.throughput import BenchThroughputConfig, main

    out = tmp_path / "t.json"
    res = main(BenchThroughputConfig(space_opts=TINY, strategies="uniform,fair", batch_size=16, steps=2, json=str(out)))
    assert res["strategies"]["fair"]["subnets_per_step"] == 5 and res["strategies"]["uniform"]["img_s"] > 0
    assert json.loads(out.read_text())["standalone_largest_img_s"] > 0
    paired = res["uniform_vs_same_subnet"]
    # the supernet holds every candidate's weights, so it can never need less memory than the subnet
    assert paired["steps"] == 2 and paired["time_ratio"] > 0 and paired["memory_ratio"] >= 1.0


def test_throughput_benchmark_without_a_largest_arch(tmp_path):
    from bench.throughput import BenchThroughputConfig, main

    opts = {"ops": "lanas", "nodes": 2, "channels": 4, "blocks": [1, 1]}
    space = "tests.toy_space:NasnetWithoutExtremes"
    res = main(BenchThroughputConfig(space=space, space_opts=opts, strategies="uniform", batch_size=8, steps=2))
    assert res["standalone_largest_img_s"] is None
    assert res["strategies"]["uniform"]["ratio_to_standalone_largest"] is None
    assert res["uniform_vs_same_subnet"]["memory_ratio"] >= 1.0
