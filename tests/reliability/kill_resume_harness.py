#!/usr/bin/env python
"""Kill-and-resume harness: every command, killed at random moments, must finish as if never stopped.

For each scenario (`run.py supernet`, `search` with the table and with the supernet evaluator,
`retrain`, `pipeline`, at tiny sizes with one thread), the harness

1. runs the command once uninterrupted (the reference), timing its work phase;
2. runs it again in a fresh run directory and sends SIGKILL (or SIGTERM / SIGINT) at random,
   seeded moments of the work phase, restarting with `--resume auto` after each kill until the
   command exits on its own;
3. compares the two run directories: every `last.pt`'s model (and EMA) state dict must be equal
   bit for bit, the search journal must hold the same architectures with the same metrics in the
   same order, and no journal line may be missing or duplicated.

After a SIGTERM or SIGINT the command must exit on its own (no traceback) having written a
checkpoint at a later step than the one on disk when the signal was sent.

    python -m tests.reliability.kill_resume_harness --kills 3 --seed 0 --json docs/reliability-harness.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository: run.py
log = logging.getLogger("harness")
LANET_TINY = "2,3,1,0,0,1,1,2"  # a 2-node LaNet cell for the test-tiny nasnet space


@dataclass
class Scenario:
    """One command line and where its work shows progress (the first file that appears once it works)."""

    name: str
    argv: list[str]
    progress: str  # a checkpoint under the run dir: a signal sent after it is rewritten hits the training loop
    needs: str = ""  # a scenario whose finished run directory is copied in first (search on a supernet)
    signal: int = signal.SIGKILL


def scenarios(scale: int = 1, table: str = "") -> dict[str, Scenario]:
    """The tiny command lines; `scale` multiplies the work so random kills land inside it."""
    common = ["--preset", "test-tiny", "--threads", "1", "--quiet", "--seed", "0"]
    sn = ["supernet", *common, "--epochs", str(2 * scale), "--checkpoint-minutes", "0.01"]
    toy = ["--space", "tests.toy_space:ToySpace", "--space-opts", "decisions=5", "--space-opts", "choices=4",
           "--space-opts", "seed=5", "--evaluator", "table", "--table", table, "--arch-column", "name",
           "--metric", "score", "--report-metric", "other"]  # fmt: skip
    out = {
        "supernet": Scenario("supernet", sn, "supernet/last.pt"),
        "search-table": Scenario(
            "search-table",
            ["search", *common[2:], *toy, "--budget", str(200 * scale), "--batch", "2"],
            "search/state.pt",
        ),  # no preset: its nasnet space options do not apply to the toy space
        "search-supernet": Scenario(
            "search-supernet", ["search", *common, "--budget", str(6 * scale)], "search/state.pt", needs="supernet"
        ),
        "retrain": Scenario(
            "retrain",
            [
                "retrain",
                *common,
                "--lanet",
                LANET_TINY,
                "--arch-id",
                "tiny",
                "--epochs",
                str(2 * scale),
                "--checkpoint-minutes",
                "0.01",
            ],  # fmt: skip
            "retrain/tiny/last.pt",
        ),
        "pipeline": Scenario("pipeline", ["pipeline", *common], "supernet/last.pt"),
    }
    for name in ("supernet", "retrain", "search-table"):
        for sig in (signal.SIGTERM, signal.SIGINT):
            s = out[name]
            key = f"{name}-{signal.Signals(sig).name}"
            out[key] = Scenario(key, s.argv, s.progress, s.needs, sig)
    return out


def toy_table(path: Path) -> Path:
    """The CSV fixture of the search-table scenario: every arch of a 5-decision, 4-choice toy space with its score."""
    import csv

    import numpy as np

    from tests.toy_space import ToySpace

    space = ToySpace(decisions=5, choices=4, seed=5)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "score", "other"])
        for idx in np.ndindex(*(space.k,) * space.d):
            arch = tuple(int(i) for i in idx)
            w.writerow([space.to_str(arch), space.score(arch), -space.score(arch)])
    return path


# ---- running ---------------------------------------------------------------------------------------


def start(argv: list[str], run_dir: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "run.py"), *argv, "--run-dir", str(run_dir)]
    if resume:
        cmd += ["--resume", "auto"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, path: Path, timeout: float = 600, since: float | None = None) -> bool:
    """Wait until `path` exists (and was written after `since`, a time.time()) (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.exists() and (since is None or path.stat().st_mtime >= since):
                return True
        except FileNotFoundError:  # replaced between the two calls
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"{path} did not appear in {timeout} s")


def saved_step(run_dir: Path) -> int | None:
    """The newest step among the run's last.pt files (search: evaluations in state.pt)."""
    from core.checkpoint import load_checkpoint
    from core.errors import CheckpointError

    steps = []
    for p in run_dir.rglob("*.pt"):
        if p.name in ("last.pt", "state.pt"):
            try:
                state = load_checkpoint(p)
            except CheckpointError:
                continue
            steps.append(int(state.get("step", state.get("evaluated", 0))))
    return max(steps) if steps else None


@dataclass
class Attempt:
    kill_at: float | None  # seconds after the progress file appeared; None: ran to the end
    returncode: int
    killed: bool
    step_before: int | None = None
    step_after: int | None = None
    stderr_tail: str = ""


@dataclass
class Outcome:
    scenario: str
    attempts: list[Attempt] = field(default_factory=list)
    reference_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def started(s: Scenario, run_dir: Path) -> Path:
    """The file `run.py` writes once its arguments are parsed and its imports done: the work begins."""
    return run_dir / f"{s.argv[0]}.config.yaml"


def run_reference(s: Scenario, run_dir: Path) -> float:
    """Run uninterrupted; return the seconds from the start of its work to the exit."""
    t_start = time.time()
    proc = start(s.argv, run_dir, resume=bool(s.needs))
    seen = wait_for(proc, started(s, run_dir), since=t_start - 1)
    t0 = time.monotonic()
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"reference {s.name} failed ({proc.returncode}): {err[-2000:]}")
    return time.monotonic() - t0 if seen else 0.0


def run_with_kills(s: Scenario, run_dir: Path, kills: int, work_seconds: float, rng: random.Random) -> Outcome:
    """Start, kill `kills` times at random moments of the work phase, restart until it ends by itself."""
    outcome = Outcome(s.name, reference_seconds=work_seconds)
    resume = bool(s.needs)
    for attempt in range(kills + 20):
        t_start = time.time()
        proc = start(s.argv, run_dir, resume=resume or attempt > 0)
        kill_at = None
        want = len([a for a in outcome.attempts if a.killed]) < kills
        if want and wait_for(proc, started(s, run_dir), since=t_start - 1):
            kill_at = rng.uniform(0.0, 0.6) * work_seconds
            if s.signal != signal.SIGKILL:  # a graceful stop is tested inside the training loop:
                wait_for(proc, run_dir / s.progress, since=time.time())  # just after a checkpoint
                kill_at = rng.uniform(0.0, 0.3)
            time.sleep(kill_at)
        before = saved_step(run_dir) if kill_at is not None else None
        if kill_at is not None and proc.poll() is None:
            proc.send_signal(s.signal)
        _, err = proc.communicate()
        killed = proc.returncode == -s.signal or (kill_at is not None and s.signal != signal.SIGKILL)
        a = Attempt(kill_at, proc.returncode, killed, before, saved_step(run_dir), err[-800:])
        outcome.attempts.append(a)
        if s.signal != signal.SIGKILL and kill_at is not None:
            check_graceful(a, outcome)
        if proc.returncode == 0 and kill_at is not None and not killed and not any(a.killed for a in outcome.attempts):
            # the run was faster than the reference and ended before its first kill: start it over
            if sum(a.kill_at is not None for a in outcome.attempts) <= 3:
                _reset(run_dir, s)
                continue
        if proc.returncode == 0 and (kill_at is None or not killed):
            return outcome
        if proc.returncode not in (0, -signal.SIGKILL):
            outcome.problems.append(f"attempt {attempt} exited {proc.returncode}: {err[-500:]}")
            return outcome
    outcome.problems.append("did not finish after many restarts")
    return outcome


def _reset(run_dir: Path, s: Scenario) -> None:
    """Empty a run directory but keep what a dependent scenario was given (the supernet of a search)."""
    import shutil

    for p in run_dir.iterdir():
        if s.needs and (p.name == "supernet" or p.name.startswith("supernet.")):
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def check_graceful(a: Attempt, outcome: Outcome) -> None:
    """SIGTERM/SIGINT: a clean exit, no traceback, and a checkpoint not older than the one before."""
    if "stopped by SIG" not in a.stderr_tail:
        outcome.problems.append(f"the signal did not stop the loop (too late?): {a.stderr_tail[-300:]}")
    if a.returncode != 0 or "Traceback" in a.stderr_tail:
        outcome.problems.append(f"signal stop exited {a.returncode}: {a.stderr_tail[-300:]}")
    elif a.step_after is None or (a.step_before is not None and a.step_after < a.step_before):
        outcome.problems.append(f"signal stop saved step {a.step_after} after {a.step_before}")


# ---- comparing -------------------------------------------------------------------------------------


def compare_runs(ref: Path, got: Path) -> list[str]:
    """Differences between two run directories' final weights and journals (empty: identical)."""
    import torch

    from core.checkpoint import load_checkpoint
    from core.jsonl import read_jsonl

    problems = []
    ref_ckpts = sorted(p.relative_to(ref) for p in ref.rglob("last.pt"))
    got_ckpts = sorted(p.relative_to(got) for p in got.rglob("last.pt"))
    if ref_ckpts != got_ckpts:
        problems.append(f"checkpoints differ: {ref_ckpts} vs {got_ckpts}")
    for rel in set(ref_ckpts) & set(got_ckpts):
        a, b = load_checkpoint(ref / rel), load_checkpoint(got / rel)
        if a.get("step") != b.get("step"):
            problems.append(f"{rel}: step {a.get('step')} vs {b.get('step')}")
        for key in ("model", "ema"):
            sa, sb = a.get(key) or {}, b.get(key) or {}
            bad = [k for k in sa if k not in sb or not torch.equal(sa[k], sb[k])] + [k for k in sb if k not in sa]
            if bad:
                problems.append(f"{rel} {key}: {len(bad)} tensors differ, e.g. {bad[:3]}")
    for rel in sorted(p.relative_to(ref) for p in ref.rglob("journal.jsonl")):
        a, b = journal(ref / rel), journal(got / rel)
        problems += journal_problems(b, str(rel))
        if a != b:
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            problems.append(f"{rel}: {len(a)} vs {len(b)} lines, first difference at line {first}")
    for rel in sorted(p.relative_to(got) for p in got.rglob("metrics.jsonl")):
        epochs = [r.get("epoch") for r in read_jsonl(got / rel)]
        if len(epochs) != len(set(epochs)):
            problems.append(f"{rel}: epoch lines duplicated {epochs}")
    return problems


def journal(path: Path) -> list[tuple]:
    """The journal as (index, arch string, metric, report metric) per line, wall-clock fields left out."""
    from core.jsonl import read_jsonl

    return [(r["index"], r["str"], r["metric"], r.get("report_metric")) for r in read_jsonl(path)]


def journal_problems(lines: list[tuple], where: str) -> list[str]:
    """Lost lines show as gaps in the index, duplicated ones as repeated indices or archs."""
    out = []
    if [line[0] for line in lines] != list(range(len(lines))):
        out.append(f"{where}: indices are not 0..{len(lines) - 1} (a line lost or duplicated)")
    if len({line[1] for line in lines}) != len(lines):
        out.append(f"{where}: an architecture appears twice")
    return out


# ---- a lost rank under torchrun ---------------------------------------------------------------------


def run_ddp(base: Path, rng: random.Random) -> Outcome:
    """Two gloo ranks; rank 1 dies once at a random step of epoch 2; torchrun restarts; same weights?"""
    from tests.reliability.helpers import SUPERNET

    argv = [a for a in SUPERNET if a != "--quiet"]
    outcome = Outcome("ddp-rank-failure")
    dirs = {}
    for name, fault in (("ref", 0), ("fault", rng.randint(5, 7))):
        run_dir = base / f"ddp-{name}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
               "FAULT_STEP": str(fault), "FAULT_MARKER": str(base / f"ddp-{name}.marker")}  # fmt: skip
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--max-restarts", "1", str(ROOT / "tests/reliability/ddp_fault_worker.py"), *argv, "--device", "cpu",
               "--run-dir", str(run_dir), "--resume", "auto"]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        died = (base / f"ddp-{name}.marker").exists()
        outcome.attempts.append(Attempt(fault or None, proc.returncode, died, stderr_tail=proc.stderr[-800:]))
        if proc.returncode != 0 or (fault and not died):
            outcome.problems.append(f"{name}: exit {proc.returncode}, rank died: {died}: {proc.stderr[-400:]}")
        if name == "ref":
            outcome.reference_seconds = time.monotonic() - t0
        dirs[name] = run_dir
    if not outcome.problems:
        outcome.problems += compare_runs(dirs["ref"], dirs["fault"])
    return outcome


# ---- main ------------------------------------------------------------------------------------------


def run_scenario(s: Scenario, base: Path, kills: int, rng: random.Random, refs: dict[str, Any]) -> Outcome:
    import shutil

    got = base / f"{s.name}-killed"
    if s.needs:
        shutil.copytree(refs[s.needs], got)
    key = json.dumps([s.argv, s.needs])
    if key not in refs:  # the signal variants share the reference of their command line
        ref = base / f"{s.name}-ref"
        if s.needs:
            shutil.copytree(refs[s.needs], ref)
        refs[key + "-seconds"] = run_reference(s, ref)  # type: ignore[assignment]
        refs[key] = ref
    ref, work = refs[key], float(refs[key + "-seconds"])  # type: ignore[arg-type]
    refs[s.name] = ref
    outcome = run_with_kills(s, got, kills, work, rng)
    outcome.problems += compare_runs(ref, got)
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs per scenario")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--scale", type=int, default=1, help="multiply the work of each command")
    p.add_argument("--only", default="", help="comma-separated scenario names, or none (default: all)")
    p.add_argument("--json", default="", help="write the outcomes to this file")
    p.add_argument("--keep", default="", help="keep the run directories under this folder")
    p.add_argument("--ddp", action="store_true", help="also kill a rank under torchrun --max-restarts 1")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    rng = random.Random(args.seed)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kill-resume-"))
    base.mkdir(parents=True, exist_ok=True)
    all_s = scenarios(args.scale, str(toy_table(base / "toy.csv")))
    names = [n for n in args.only.split(",") if n and n != "none"] if args.only else list(all_s)
    refs: dict[str, Any] = {}
    results = []
    for name in names:
        s = all_s[name]
        if s.needs and s.needs not in refs:
            run_reference(all_s[s.needs], base / f"{s.needs}-ref")
            refs[s.needs] = base / f"{s.needs}-ref"
        kills = args.kills if s.signal == signal.SIGKILL else 1
        t0 = time.monotonic()
        outcome = run_scenario(s, base, kills, rng, refs)
        results.append(outcome)
        n_killed = sum(a.killed for a in outcome.attempts)
        log.info("%-24s %d signals, %d starts, %.0f s: %s", name, n_killed, len(outcome.attempts),
                 time.monotonic() - t0, "; ".join(outcome.problems) or "identical, nothing lost")  # fmt: skip
    if args.ddp:
        outcome = run_ddp(base, rng)
        results.append(outcome)
        log.info("%-24s %s", outcome.scenario, "; ".join(outcome.problems) or "identical to the uninterrupted run")
    if args.json:
        Path(args.json).write_text(json.dumps([_plain(o) for o in results], indent=1))
    return 1 if any(o.problems for o in results) else 0


def _plain(o: Outcome) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(o)
    for a in d["attempts"]:
        a.pop("stderr_tail")
    return d


if __name__ == "__main__":
    sys.exit(main())
