"""The pipeline end to end on real images (test-tiny preset: the demo's code path), kill and rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from core.jsonl import read_jsonl
from tests.conftest import ROOT, run_cli


def _start(run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "pipeline",
            "--preset",
            "test-tiny",
            "--run-dir",
            str(run_dir),
            "--threads",
            "1",
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory):
    """Kill the pipeline with SIGKILL once the search has journaled an architecture, then rerun it."""
    run_dir = tmp_path_factory.mktemp("pipe")
    journal = run_dir / "search" / "journal.jsonl"
    proc = _start(run_dir)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not read_jsonl(journal):
        time.sleep(0.05)
    assert proc.poll() is None, "the pipeline ended before the search started: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    supernet_ckpt = run_dir / "supernet" / "last.pt"
    before = (supernet_ckpt.stat().st_mtime_ns, supernet_ckpt.read_bytes())
    partial = len(read_jsonl(journal))
    rerun = run_cli("pipeline", "--preset", "test-tiny", "--run-dir", str(run_dir), "--threads", "1", timeout=400)
    return run_dir, before, partial, rerun


def test_rerun_completes_without_redoing_the_supernet(killed_and_rerun):
    run_dir, before, partial, rerun = killed_and_rerun
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ckpt = run_dir / "supernet" / "last.pt"
    assert (ckpt.stat().st_mtime_ns, ckpt.read_bytes()) == before  # the supernet was not retrained
    assert "supernet: finished checkpoint found" in rerun.stderr
    records = read_jsonl(run_dir / "search" / "journal.jsonl")
    assert 1 <= partial < len(records) == 8
    assert len({r["str"] for r in records}) == len(records)  # nothing evaluated twice
    for arch_id in ("top1", "baseline-random"):
        report = json.loads((run_dir / "retrain" / arch_id / "report.json").read_text())
        assert 0 <= report["final"]["test_top1"] <= 100


def test_report_files_and_plots(killed_and_rerun):
    run_dir = killed_and_rerun[0]
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    assert "Best architecture found" in md and "MicroNet score" in md and "| top1 |" in md
    best = json.loads((run_dir / "search" / "topk.json").read_text())[0]
    assert best["metric"] == pytest.approx(-best["loss"], abs=1e-5) and 0 <= best["acc"] <= 100  # score: nll
    assert best["score"] == "nll"
    assert f"Search-split estimate: minus cross-entropy {best['metric']:.4g} (top-1 {best['acc']:.1f}%)" in md
    row = next(line for line in md.splitlines() if line.startswith("| top1 |")).split("|")[2:-1]
    top1 = json.loads((run_dir / "retrain" / "top1" / "report.json").read_text())
    acc, _, params, mflops, score = (cell.strip() for cell in row)  # EMA column: "-" without EMA
    assert float(acc) == top1["final"]["test_top1"]
    assert float(params) == pytest.approx(top1["complexity"]["params_m"], rel=1e-3)
    assert float(mflops) == pytest.approx(top1["complexity"]["mflops"], rel=1e-3)
    assert float(score) == pytest.approx(top1["complexity"]["micronet_score"], rel=1e-3)
    assert html.count("data:image/png;base64,") == 4
    for name in ("supernet.png", "best_so_far.png", "scatter.png", "arch.png"):
        with Image.open(run_dir / "report" / name) as img:
            img.verify()
        with Image.open(run_dir / "report" / name) as img:
            assert img.size[0] > 300 and img.size[1] > 200
            assert len(img.convert("L").getcolors(maxcolors=1 << 16) or []) > 10  # not a blank canvas
    plotted = json.loads((run_dir / "report" / "plotted.json").read_text())
    assert plotted["plotted_points"] == plotted["evaluated"] == len(read_jsonl(run_dir / "search" / "journal.jsonl"))
    assert plotted["epochs"] == 2


def test_second_rerun_skips_everything(killed_and_rerun):
    run_dir = killed_and_rerun[0]
    t0 = time.monotonic()
    again = run_cli("pipeline", "--preset", "test-tiny", "--run-dir", str(run_dir), "--threads", "1")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "search: 8 evaluations already in the journal, skipped" in again.stderr
    assert "retrain top1: report found, skipped" in again.stderr
    assert time.monotonic() - t0 < 60


def test_the_estimate_is_described_by_what_the_search_maximised():
    from pipeline.report import describe_estimate, metric_name

    assert describe_estimate({"metric": 24.2}) == "accuracy (%) 24.20"
    nll = {"metric": -1.97851, "loss": 1.978512, "acc": 22.4}
    assert metric_name(nll) == "minus cross-entropy"
    assert describe_estimate(nll) == "minus cross-entropy -1.979 (top-1 22.4%)"
    assert metric_name({"metric": 0.8, "raw_metric": -1.9, "loss": 1.9}) == "score (with size prior)"
    prior = {"metric": 80.0, "raw_metric": -1.9, "gradnorm": 0.7, "loss": 1.9, "acc": 30.0, "score": "nll"}
    assert metric_name(prior) == "score (with gradnorm prior)"
    want = "score (with gradnorm prior) 80.0 of 100 (minus cross-entropy -1.9 (top-1 30.0%), log gradient norm 0.7)"
    assert describe_estimate(prior) == want
    # the recorded score name wins over the inference from metric == -loss (kept for older journals)
    assert metric_name({"metric": -1.9, "loss": 1.5, "score": "nll"}) == "minus cross-entropy"
    assert metric_name({"metric": -1.9, "loss": 1.9, "score": "acc"}) == "accuracy (%)"


def test_the_random_baseline_matches_the_retrained_mflops_without_leaning_larger():
    """Matched at the retraining width, and below the space's typical cost not mostly by larger archs."""
    from types import SimpleNamespace

    import numpy as np

    from core.config import load_yaml, preset_path
    from pipeline.run import random_same_flops
    from supernet.spaces.base import make_space

    demo = load_yaml(preset_path("demo"))
    retrained = make_space(demo["space"], **{**demo["space_opts"], **demo["retrain"]["space_opts"]})
    rng = np.random.default_rng(0)
    costs = {}
    for _ in range(400):
        arch = retrained.sample(rng)
        costs[retrained.canonical(arch)] = (retrained.cost(arch).mflops, arch)
    # the 20th-percentile arch: where a wide window holds mostly larger ones (demo searches often pick there)
    target, best = sorted(costs.values(), key=lambda c: c[0])[len(costs) // 5]
    gaps = []
    for seed in range(40):
        cfg = SimpleNamespace(space=demo["space"], space_opts=demo["space_opts"], retrain=demo["retrain"], seed=seed)
        arch = retrained.from_json(random_same_flops(cfg, {"arch": retrained.to_json(best), "mflops": 0.0}))
        gaps.append(retrained.cost(arch).mflops / target - 1)
    assert max(abs(g) for g in gaps) <= 0.02  # matched at the supernet's width, up to 5% off retrained
    assert abs(sum(gaps) / len(gaps)) < 0.006  # a ±10% window leans about +1.5% larger


def test_demo_spread_ranks_archs_with_each_runs_supernet(killed_and_rerun):
    """Scoring the journal's archs again, as the search did, orders them exactly as the journal does."""
    from bench import demo_spread
    from core.config import load_yaml, preset_path
    from supernet.spaces.base import make_space

    run_dir = killed_and_rerun[0]
    tiny = load_yaml(preset_path("test-tiny"))
    space = make_space(tiny["space"], **tiny["space_opts"])
    records = read_jsonl(run_dir / "search" / "journal.jsonl")
    archs = [space.from_json(r["arch"]) for r in records]
    taus = demo_spread.supernet_taus(space, archs, [r["metric"] for r in records], [str(run_dir)], tiny["search"])
    assert taus[0]["tau_nll"] == pytest.approx(1.0)  # the journal's metric is the same minus cross-entropy
    # with the gradnorm prior it also scores the proxy alone, as GradNorm does with the run's own config
    from types import SimpleNamespace

    from search.evaluators.gradnorm import GradNorm

    proxy = GradNorm(space, SimpleNamespace(**load_yaml(str(run_dir / "pipeline.config.yaml"))), reps=1)
    search = {**tiny["search"], "prior": "gradnorm", "prior_reference": 4, "prior_reps": 1}
    with_prior = demo_spread.supernet_taus(space, archs, [proxy(a) for a in archs], [str(run_dir)], search)
    assert with_prior[0]["tau_gradnorm"] == pytest.approx(1.0) and -1 <= with_prior[0]["tau_prior_eq"] <= 1
    upside_down = demo_spread.supernet_taus(space, archs, [r["loss"] for r in records], [str(run_dir)], tiny["search"])
    assert upside_down[0]["tau_nll"] == pytest.approx(-1.0)


def test_heldout_evaluation_reproduces_the_retrain_report(killed_and_rerun, tmp_path):
    """bench/demo_vs_random.py --heldout scores a run's models as the retrain's own evaluation does."""
    import zipfile

    import torch

    from bench import demo_vs_random
    from core.data.datasets import MINI_ZIP, test_images_not_in
    from retrain.train import _spread

    run_dir = killed_and_rerun[0]
    # an "embedded" set whose test split shares no file with cifar10-mini's: all 1,000 test images are held out
    with zipfile.ZipFile(MINI_ZIP) as src, zipfile.ZipFile(tmp_path / "other.zip", "w") as dst:
        for name in src.namelist():
            if "/train/" in name and name.endswith("0000.jpg"):
                dst.writestr(name, src.read(name))
                dst.writestr(name.replace("/train/", "/test/"), src.read(name))
    test = test_images_not_in(MINI_ZIP, embedded=tmp_path / "other.zip")
    assert len(test) == 1000
    test = test.subset(_spread(200, 1000))  # the test-tiny preset's test_images
    for arch_id in ("top1", "baseline-random"):
        report = json.loads((run_dir / "retrain" / arch_id / "report.json").read_text())
        assert demo_vs_random.heldout_top1(run_dir, arch_id, test) == pytest.approx(report["final"]["test_top1"])
    # the figure is kept next to the checkpoint and reused only for the same checkpoint and images
    cache = run_dir / "retrain" / "top1" / "heldout.json"
    saved = json.loads(cache.read_text())
    cache.write_text(json.dumps({**saved, "top1": -1.0}))
    assert demo_vs_random.heldout_top1(run_dir, "top1", test) == -1.0
    fewer = test.subset(torch.arange(100))
    assert demo_vs_random.heldout_top1(run_dir, "top1", fewer) >= 0
    assert json.loads(cache.read_text())["n"] == 100
    cache.unlink()
