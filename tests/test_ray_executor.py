"""`--executor ray`: asynchronous search on a local Ray (2 CPUs), retries after a killed worker,
a killed and resumed driver, failing trials, and the one-line error without Ray.

The schedule itself (pending proposals, retries, sync batches) is tested first on the simulated
clock, without Ray.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from core.jsonl import read_jsonl
from search.async_loop import AsyncDriver
from search.config import SearchConfig
from search.executors import Outcome, SimulatedExecutor, parse_durations
from search.searchers import make_searcher
from tests.toy_space import ToySpace

from .conftest import ROOT
from .test_search_evaluators import toy_table

TOY = {"decisions": 4, "choices": 4, "seed": 5}


# ---- the schedule, on a simulated clock -----------------------------------------------------------------
class Recorder:
    """An executor wrapper that checks every submission against what is pending or done."""

    def __init__(self, space, lose=()):
        self.space, self.inner = space, SimulatedExecutor(lambda a: {"metric": space.score(a)})
        self.submitted: list[str] = []
        self.lose = set(lose)  # keys whose first attempt is reported lost

    def submit(self, trial):
        self.submitted.append(trial.key)
        self.inner.submit(trial)

    def wait(self, timeout=None):
        out = self.inner.wait(timeout)
        for o in out:
            if o.trial.key in self.lose and o.trial.attempt == 1:
                out = [Outcome(o.trial, error="WorkerCrashedError", lost=True)]
        return out

    def cancel_all(self):
        self.inner.cancel_all()


@pytest.mark.parametrize(
    "name,opts", [("lanas", {}), ("lanas", {"pending": "liar", "lie": "max"}), ("evolution", {}), ("random", {})]
)
def test_asynchronous_searchers_never_propose_a_pending_or_done_arch(name, opts):
    space = ToySpace(**TOY)
    searcher = make_searcher(name, space, 0, **opts)
    ex = Recorder(space)
    driver = AsyncDriver(searcher, ex, space, workers=6, budget=100, durations=parse_durations("lognormal:1,1", 0))
    done: list[str] = []
    stop = driver.run(lambda o: done.append(o.trial.key) or o.result["metric"])
    assert stop == "budget" and len(done) == 100
    assert len(set(ex.submitted)) == len(ex.submitted) == 100  # nothing pending or done proposed again
    assert not searcher.pending and len(searcher.archs) == 100
    assert driver.stats()["utilisation"] > 0.8  # simulated clock: slots refilled as results arrive


def test_lanas_starts_climbing_when_init_samples_results_are_in_not_proposed():
    """With proposals in flight, LaNAS starts its tree when `init_samples` results are known; meanwhile
    it samples uniformly (`fill=uniform`) or, the default, tries neighbours of the best result."""
    space = ToySpace(**TOY)
    for fill in ("uniform", "mutate"):
        searcher = make_searcher("lanas", space, 0, init_samples=4, fill=fill)
        first = searcher.propose(6)
        scores = [space.score(a) for a in first[:3]]
        searcher.observe(first[:3], scores)  # 3 results in, 3 still in flight
        uniform = []
        real = searcher.random_new
        searcher.random_new = lambda real=real, uniform=uniform: uniform.append(1) or real()
        (arch,) = searcher.propose(1)
        assert searcher.last_regions[-1] == (None, -1)  # not from a tree: 3 results are not enough
        best = first[scores.index(max(scores))]
        if fill == "uniform":
            assert uniform
        else:
            assert not uniform and sum(a != b for a, b in zip(arch, best)) == 1  # one decision changed
        searcher.observe(first[3:4], [space.score(first[3])])
        searcher.propose(1)
        assert searcher.last_regions[-1][1] >= 0  # 4 results in: drawn inside a node of the tree


def test_a_lost_trial_is_retried_up_to_max_retries_then_recorded_as_failed():
    space = ToySpace(**TOY)
    searcher = make_searcher("random", space, 0)
    ex = Recorder(space, lose={space.to_str(a) for a in make_searcher("random", space, 0).propose(3)})
    got: dict[str, Outcome] = {}
    driver = AsyncDriver(searcher, ex, space, workers=3, budget=10, max_retries=1)
    driver.run(lambda o: got.setdefault(o.trial.key, o) and (o.result or {"metric": math.nan})["metric"])
    assert driver.retries == 3 and len(got) == 10
    assert all(o.trial.attempt == 2 and not o.lost for k, o in got.items() if k in ex.lose)
    ex2 = Recorder(space, lose=ex.lose)
    ex2.wait = lambda timeout=None: [Outcome(o.trial, error="NodeDiedError", lost=True) for o in ex2.inner.wait()]
    driver = AsyncDriver(make_searcher("random", space, 0), ex2, space, workers=3, budget=3, max_retries=2)
    errors = []
    driver.run(lambda o: errors.append(o.error) or math.nan)
    assert len(errors) == 3 and all("lost on all 3 attempts" in e for e in errors)


def test_sync_mode_waits_for_the_whole_batch():
    space = ToySpace(**TOY)
    durations = parse_durations("lognormal:1,1", 3)
    runs = {}
    for sync in (False, True):
        ex = Recorder(space)
        driver = AsyncDriver(make_searcher("random", space, 0), ex, space, workers=8, budget=80, sync=sync,
                             durations=durations)  # fmt: skip
        driver.run(lambda o: o.result["metric"])
        runs[sync] = ex.inner.now
    batches = [max(durations(i) for i in range(b, b + 8)) for b in range(0, 80, 8)]
    assert runs[True] == pytest.approx(sum(batches))
    assert runs[False] < 0.75 * runs[True]


def test_eval_seconds_are_seeded_with_the_given_mean():
    draw = parse_durations("lognormal:2,0.5", 7)
    values = [draw(i) for i in range(4000)]
    assert values[:5] == [parse_durations("lognormal:2,0.5", 7)(i) for i in range(5)]
    assert sum(values) / len(values) == pytest.approx(2.0, rel=0.05)
    for bad in ("lognormal:0,1", "normal:1,1", "lognormal:a,b", "lognormal:1,-1"):
        with pytest.raises(UserError, match="lognormal:MEAN,SIGMA"):
            parse_durations(bad, 0)


class Killed(BaseException):
    """Stands for kill -9 of the driver: nothing after it runs (the test also stops state saves)."""


def test_a_driver_killed_between_state_saves_resubmits_exactly_what_it_had_sent(tmp_path, monkeypatch):
    import search.async_loop as async_loop
    from search.loop import _resume, search_dir

    space = ToySpace(**TOY)
    cfg = config(tmp_path, "sim", searcher="random", budget=20, ray_workers=4)
    real_save, dead = async_loop.save_checkpoint, []
    monkeypatch.setattr(async_loop, "SAVE_EVERY", 0.0)  # the state is saved at every step until the kill
    monkeypatch.setattr(async_loop, "save_checkpoint", lambda *a: None if dead else real_save(*a))

    class Dying(Recorder):
        def wait(self, timeout=None):
            if len(self.submitted) >= 10:  # 10 sent, 6 finished, 4 in flight
                dead.append(1)
                raise Killed
            return super().wait(timeout)

    first = Dying(space)
    out = search_dir(cfg)
    searcher = make_searcher("random", space, cfg.seed)
    with pytest.raises(Killed):
        async_loop.run_async_search(cfg, space, searcher, out, [], 0, 0.0, executor=first)
    before = {r["str"] for r in read_jsonl(out.journal)}
    inflight = set(first.submitted) - before
    assert len(before) == 6 and len(inflight) == 4

    dead.clear()
    resumed = SearchConfig(**{**cfg.to_dict(), "resume": "auto"})
    searcher = make_searcher("random", space, cfg.seed)
    records, done, elapsed = _resume(resumed, searcher, out)
    assert done > 0  # a state was saved before the kill, with fewer trials sent than the journal shows
    # Results arrive in another order on a real cluster, so what the searcher proposes next differs
    # from what the killed driver proposed after its last save: stand for that with another stream.
    searcher.rng = np.random.default_rng(999)
    second = Recorder(space)
    summary = async_loop.run_async_search(resumed, space, searcher, out, records, done, elapsed, executor=second)
    assert set(second.submitted[:4]) == inflight  # the trials in flight are sent again first
    assert not before & set(second.submitted)  # no finished trial is evaluated again
    final = read_jsonl(out.journal)
    assert summary["evaluated"] == len(final) == 20 and len({r["str"] for r in final}) == 20
    assert inflight <= {r["str"] for r in final}


def test_ray_options_are_checked():
    for kw, match in (({"batch": 4}, "--ray-workers"), ({"ray_workers": -1}, "--ray-workers"),
                      ({"cpus_per_trial": 0.0}, "cpus-per-trial"), ({"prior": "params"}, "--prior")):  # fmt: skip
        with pytest.raises(UserError, match=match):
            SearchConfig(executor="ray", evaluator="table", table="x.csv", **kw)


def test_executor_ray_without_ray_is_one_line_and_exit_code_2(tmp_path):
    code = (
        "import sys, runpy; sys.modules['ray'] = None; sys.argv = ['run.py'] + sys.argv[1:]; "
        f"sys.path.insert(0, {str(ROOT)!r}); runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')"
    )
    args = ["search", "--executor", "ray", "--evaluator", "table", "--table", "x.csv", "--run-dir", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[ray]'" in lines[0], proc.stderr


# ---- on a local Ray -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs, one thread per worker, no dashboard."""
    ray = pytest.importorskip("ray")
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env},
             logging_level="WARNING")  # fmt: skip
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def config(tmp_path, run, **kw):
    base = dict(run_dir=str(tmp_path / run), space="tests.toy_space:ToySpace", space_opts=TOY, budget=40,
                quiet=True, seed=3, executor="ray", ray_workers=2)  # fmt: skip
    base.update(kw)
    return SearchConfig(**base)


def marked(tmp_path, delay=0.0):
    (tmp_path / "marks").mkdir(exist_ok=True)
    return {"space": "tests.ray_helpers:MarkedToySpace", "space_opts": {**TOY, "marker": str(tmp_path / "marks"),
            "delay": delay}}  # fmt: skip


def journal(cfg):
    return read_jsonl(Path(cfg.run_dir) / "search" / "journal.jsonl")


def starts(tmp_path):
    """Start markers per arch string."""
    counts: dict[str, int] = {}
    for p in (tmp_path / "marks").glob("start-*"):
        key = p.name[len("start-") : p.name.rindex("-")]
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_asynchronous_search_on_a_toy_table_finds_the_optimum(tmp_path, local_ray):
    from search.loop import run_search

    space = ToySpace(**TOY)
    table = toy_table(tmp_path, space)
    cfg = config(tmp_path, "run", evaluator="table", table=str(table), arch_column="name", metric="score",
                 report_metric="other", budget=120)  # fmt: skip
    summary = run_search(cfg)
    records = journal(cfg)
    assert summary["evaluated"] == len(records) == 120
    assert len({r["str"] for r in records}) == 120 and [r["index"] for r in records] == list(range(120))
    assert max(r["metric"] for r in records) == pytest.approx(space.optimum()[1])
    assert summary["best"]["str"] == space.to_str(space.optimum()[0])
    for r in records:
        assert r["metric"] == pytest.approx(space.score(space.from_json(r["arch"])))
        assert r["attempt"] == 1 and r["worker"] and r["node"] and r["seconds"] >= 0
    assert (Path(cfg.run_dir) / "search" / "topk.json").is_file()
    assert summary["executor"]["workers"] == 2


@pytest.mark.timeout(180)
def test_a_killed_worker_has_its_trial_retried_and_each_arch_is_journaled_once(tmp_path, local_ray):
    from search.loop import run_search

    cfg = config(tmp_path, "kill", evaluator="tests.ray_helpers:victim_score", budget=12, max_retries=2,
                 **marked(tmp_path, delay=0.05))  # fmt: skip
    victim = tmp_path / "marks" / "victim"
    killed = []

    def kill_when_started():
        deadline = time.monotonic() + 120
        while not victim.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid, key = victim.read_text().split()
        os.kill(int(pid), signal.SIGKILL)
        killed.append(key)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    summary = run_search(cfg)
    killer.join(5)
    records = journal(cfg)
    assert killed, "the victim trial never started"
    assert summary["evaluated"] == len(records) == 12
    assert len({r["str"] for r in records}) == 12  # each finished architecture once
    rec = next(r for r in records if r["str"] == killed[0])
    assert rec["attempt"] == 2 and math.isfinite(rec["metric"]) and "error" not in rec
    assert summary["executor"]["retries"] == 1
    assert starts(tmp_path)[killed[0]] == 2


def test_a_failing_trial_is_recorded_and_the_search_continues(tmp_path, local_ray):
    from search.loop import run_search

    cfg = config(tmp_path, "fail", evaluator="tests.ray_helpers:fail_once", budget=15, **marked(tmp_path))
    summary = run_search(cfg)
    records = journal(cfg)
    failed = [r for r in records if "error" in r]
    key = (tmp_path / "marks" / "failed").read_text()
    assert summary["evaluated"] == len(records) == 15 and summary["executor"]["failed"] == 1
    assert [r["str"] for r in failed] == [key] and math.isnan(failed[0]["metric"])
    assert failed[0]["error"] == "FloatingPointError: loss is NaN at step 3" and failed[0]["attempt"] == 1
    assert starts(tmp_path)[key] == 1  # not retried
    assert all(math.isfinite(r["metric"]) for r in records if r is not failed[0])


@pytest.mark.timeout(240)
def test_a_killed_driver_resumes_with_no_duplicated_or_lost_trial(tmp_path, local_ray):
    from search.loop import run_search

    opts = marked(tmp_path, delay=0.3)
    cfg = config(tmp_path, "driver", evaluator="tests.ray_helpers:slow_score", budget=16, **opts)
    args = ["search", "--executor", "ray", "--ray-address", local_ray, "--ray-workers", "2", "--run-dir", cfg.run_dir,
            "--space", cfg.space, "--evaluator", cfg.evaluator, "--budget", "16", "--seed", "3", "--quiet",
            *[a for k, v in cfg.space_opts.items() for a in ("--space-opts", f"{k}={v}")]]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    path = Path(cfg.run_dir) / "search" / "journal.jsonl"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None and len(read_jsonl(path)) < 6:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    before = {r["str"] for r in read_jsonl(path)}
    assert 6 <= len(before) < 16
    time.sleep(0.5)  # let the dead driver's trials be torn down by Ray
    marks_before = starts(tmp_path)
    summary = run_search(SearchConfig(**{**cfg.to_dict(), "resume": "auto"}))
    records = journal(cfg)
    assert summary["evaluated"] == len(records) == 16
    assert len({r["str"] for r in records}) == 16 and sorted(r["index"] for r in records) == list(range(16))
    after = starts(tmp_path)
    assert all(after[k] == marks_before[k] == 1 for k in before)  # no finished trial evaluated again


def test_pipeline_passes_the_executor_to_its_search_stage(tmp_path):
    pytest.importorskip("ray")
    from pipeline.config import PipelineConfig
    from pipeline.run import stage_config

    cfg = PipelineConfig(run_dir=str(tmp_path), executor="ray", ray_workers=3, max_retries=1)
    search = stage_config(SearchConfig, cfg, {"evaluator": "supernet", **cfg.search}, "search")
    assert (search.executor, search.ray_workers, search.max_retries) == ("ray", 3, 1)
    assert stage_config(SearchConfig, PipelineConfig(run_dir=str(tmp_path)), {}, "search").executor == "inprocess"


def test_bench_search_on_ray_reports_the_four_figures(tmp_path, local_ray):
    from bench.search_table import BenchSearchConfig, run_bench_search

    table = toy_table(tmp_path, ToySpace(**TOY))
    cfg = BenchSearchConfig(table=str(table), arch_column="name", metric="score", space="tests.toy_space:ToySpace",
                            space_opts=TOY, searchers="lanas", seeds=3, budget=100, executor="ray", workers=2,
                            eval_seconds="lognormal:0.02,1", async_budget=12, overhead_results=20, quiet=True,
                            json=str(tmp_path / "b.json"))  # fmt: skip
    out = run_bench_search(cfg)
    assert 0 < out["utilisation"] <= 1.05 and out["speedup_over_sync"] > 0 and out["driver_ms_per_result"] > 0
    assert out["evals_ratio"] > 0 and out["runs"]["overhead"]["results"] == 20
    assert out["evals_to_best"]["lanas"]["1"]["found"] == 3  # 256 archs, budget 100: LaNAS finds the best
    with pytest.raises(UserError, match="lognormal:MEAN,SIGMA"):
        BenchSearchConfig(table=str(table), executor="ray", eval_seconds="uniform:1")


def test_train_evaluator_on_a_worker_gives_the_in_process_result(tmp_path, local_ray):
    from search.evaluators.train import TrainingEvaluator
    from search.loop import run_search
    from supernet.spaces.base import make_user_space

    cfg = SearchConfig(run_dir=str(tmp_path / "train"), space="nb201", evaluator="train", dataset="synthetic",
                       image_size=16, search_size=128, train_epochs=1, budget=2, seed=1, searcher="random",
                       executor="ray", ray_workers=2, quiet=True, device="cpu")  # fmt: skip
    run_search(cfg)
    records = journal(cfg)
    assert len(records) == 2 and all("error" not in r for r in records)
    space = make_user_space("nb201")
    here = TrainingEvaluator(space, cfg)
    for r in records:  # same architecture and seed: the same score on a Ray worker as in this process
        assert here.train_and_score(space.from_json(r["arch"]))["metric"] == r["metric"]
