"""Test set-up: one compute thread per process, no hub access, a private decoded-data cache."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CIFAR_ZIP = SHARED / "data" / "cifar10-jpeg.zip"
NB201_CSV = SHARED / "benchmarks" / "nb201.csv"


@pytest.fixture(scope="session")
def mini_data():
    """The embedded CIFAR-10 subset, decoded once per test session."""
    from core.data import load_data

    return load_data("cifar10-mini", search_size=1000)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict | None = None):
    """Run `python run.py ...` in a subprocess with one thread; returns the CompletedProcess."""
    import subprocess
    import sys

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def run_torchrun(script: Path, *args: str, nproc: int = 2, timeout: float = 300):
    """Run `torchrun --standalone --nproc_per_node N script args...` (gloo, one thread per rank)."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return subprocess.run(
        [*cmd, str(script), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
