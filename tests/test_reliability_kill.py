"""Real processes killed at random (seeded) moments, then resumed: the result equals an uninterrupted run.

The small version of `tests/reliability/kill_resume_harness.py`: `run.py supernet`, `search` (table evaluator)
and `retrain` are started as subprocesses side by side and receive SIGKILL at a random moment after
their first checkpoint; `supernet` also gets a SIGTERM and `retrain` a SIGINT, after which each must
exit cleanly with a newer checkpoint. The references and the resumed runs run in this process
(`run.main`, the same code path). The pipeline's SIGKILL-and-rerun is in `test_pipeline.py`; the
larger harness (more kills, the pipeline, the supernet evaluator) is recorded in docs/reliability.md.
"""

from __future__ import annotations

import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.jsonl import read_jsonl
from tests.reliability.helpers import RETRAIN, SUPERNET, cli, model_of, same_tensors, step_of
from tests.reliability.kill_resume_harness import journal, journal_problems, start, toy_table, wait_for

SEED = 2024
# More steps an epoch than the in-process tests use, so that a signal lands well inside the run.
SUPERNET = [*SUPERNET, "--train-images", "256"]
RETRAIN = [*RETRAIN, "--train-images", "256"]


def _search(table: Path) -> list:
    return ["search", "--space", "tests.toy_space:ToySpace", "--space-opts", "decisions=5", "--space-opts", "choices=4",
            "--space-opts", "seed=5", "--evaluator", "table", "--table", str(table), "--arch-column", "name",
            "--metric", "score", "--report-metric", "other", "--budget", "150", "--batch", "2", "--seed", "3",
            "--threads", "1", "--quiet"]  # fmt: skip


def _victim(argv: list, run_dir: Path, progress: str, sig: int, delay: float) -> tuple[int, str, int | None]:
    """Start `run.py argv`, wait for `progress` to appear, wait `delay` s, send `sig`; (exit code, stderr, step)."""
    proc = start([str(a) for a in argv], run_dir, resume=False)
    step = None
    if wait_for(proc, run_dir / progress, timeout=300):
        step = step_of(run_dir / progress) if progress.endswith("last.pt") else None
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err, step


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Victims killed in subprocesses side by side, then the references run here; {name: (code, stderr, step)}."""
    base = tmp_path_factory.mktemp("kill")
    table = toy_table(base / "toy.csv")
    rng = random.Random(SEED)
    victims = {
        "supernet": (SUPERNET, "supernet/last.pt", signal.SIGKILL, rng.uniform(0, 0.5)),
        "search": (_search(table), "search/state.pt", signal.SIGKILL, rng.uniform(0, 0.3)),
        "retrain": (RETRAIN, "retrain/tiny/last.pt", signal.SIGKILL, rng.uniform(0, 0.3)),
        "supernet-SIGTERM": (SUPERNET, "supernet/last.pt", signal.SIGTERM, rng.uniform(0, 0.3)),
        "retrain-SIGINT": (RETRAIN, "retrain/tiny/last.pt", signal.SIGINT, rng.uniform(0, 0.2)),
    }
    # The watching threads only poll and sleep; the references run afterwards, so that no busy thread
    # of this process holds the GIL while a watcher should be sending its signal.
    with ThreadPoolExecutor(len(victims)) as pool:
        futures = {n: pool.submit(_victim, v[0], base / n, *v[1:]) for n, v in victims.items()}
        outcomes = {n: f.result() for n, f in futures.items()}
    for name, argv in (("supernet", SUPERNET), ("search", _search(table)), ("retrain", RETRAIN)):
        assert cli([*argv, "--run-dir", base / f"{name}-ref"])[0] == 0
    return base, table, outcomes


@pytest.mark.parametrize("name", ["supernet", "search", "retrain"])
def test_sigkill_then_resume_matches_uninterrupted_run(runs, name):
    base, table, outcomes = runs
    code, err, _ = outcomes[name]
    assert code == -signal.SIGKILL, f"{name} was not killed mid-run (exit {code}): {err[-1500:]}"
    argv = {"supernet": SUPERNET, "search": _search(table), "retrain": RETRAIN}[name]
    assert cli([*argv, "--run-dir", base / name, "--resume", "auto"])[0] == 0
    if name == "search":
        got, ref = journal(base / name / "search/journal.jsonl"), journal(base / "search-ref/search/journal.jsonl")
        assert journal_problems(got, "journal") == [] and got == ref and len(got) == 150
    else:
        rel = "supernet/last.pt" if name == "supernet" else "retrain/tiny/last.pt"
        assert step_of(base / name / rel) == step_of(base / f"{name}-ref" / rel)
        assert same_tensors(model_of(base / name / rel), model_of(base / f"{name}-ref" / rel))


@pytest.mark.parametrize("name", ["supernet-SIGTERM", "retrain-SIGINT"])
def test_sigterm_sigint_save_then_resume_matches(runs, name):
    base, _, outcomes = runs
    code, err, step_before = outcomes[name]
    kind = name.split("-")[0]
    rel = "supernet/last.pt" if kind == "supernet" else "retrain/tiny/last.pt"
    signame = name.split("-")[1]
    assert code == 0 and "Traceback" not in err, err[-1500:]
    assert f"stopped by {signame}" in err  # stopped on purpose, not by reaching the end
    saved = step_of(base / name / rel)
    # a newer checkpoint than the one seen before the signal; on a fast, idle machine the signal can
    # land in the last step, and then the run stops (and saves) at its final step
    assert step_before is not None and step_before < saved <= step_of(base / f"{kind}-ref" / rel)
    argv = SUPERNET if kind == "supernet" else RETRAIN
    assert cli([*argv, "--run-dir", base / name, "--resume", "auto"])[0] == 0
    assert same_tensors(model_of(base / name / rel), model_of(base / f"{kind}-ref" / rel))
    epochs = [r["epoch"] for r in read_jsonl(base / name / rel.replace("last.pt", "metrics.jsonl"))]
    assert epochs == [1, 2]  # one metrics line per epoch, none lost or repeated
