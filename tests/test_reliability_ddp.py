"""A lost rank under torchrun: rank 1 dies mid-epoch, torchrun restarts both ranks, the run resumes.

Two gloo ranks on the CPU train the tiny nb201 supernet through `run.py supernet` (via
`tests/reliability/ddp_fault_worker.py`, which makes rank 1 `os._exit(1)` at step 6 the first time).
With `--max-restarts 1` the elastic agent restarts the group, `--resume auto` picks up the epoch-end
checkpoint of step 4, and the run finishes. `tests/reliability/kill_resume_harness.py --ddp` also compares the
result with an uninterrupted torchrun run (recorded in docs/reliability.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.checkpoint import load_checkpoint
from tests.conftest import ROOT
from tests.reliability.helpers import SUPERNET

WORKER = ROOT / "tests" / "reliability" / "ddp_fault_worker.py"


def torchrun(run_dir: Path, fault_step: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    """The tiny supernet on two gloo ranks (4 steps an epoch, 2 epochs), optionally with a rank failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "FAULT_STEP": str(fault_step), "FAULT_MARKER": str(run_dir.parent / f"{run_dir.name}.marker")}  # fmt: skip
    argv = [a for a in SUPERNET if a != "--quiet"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max-restarts", "1", str(WORKER), *argv, "--device", "cpu", "--run-dir", str(run_dir),
           "--resume", "auto"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_dead_rank_is_restarted_and_resumes_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = torchrun(run_dir, fault_step=6)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert (tmp_path / "run.marker").read_text() == "rank 1 died at step 6\n"  # the fault did happen
    assert f"resumed from {run_dir / 'supernet' / 'last.pt'} at step 4" in out
    state = load_checkpoint(run_dir / "supernet" / "last.pt")
    assert state["step"] == 8 and state["finished"]
