"""`run.py` under torchrun with one injected rank failure: rank FAULT_RANK dies at step FAULT_STEP, once.

    torchrun --standalone --nproc_per_node 2 --max-restarts 1 tests/reliability/ddp_fault_worker.py \
        supernet --run-dir RUN --resume auto ...

The fault is injected here, by wrapping `SupernetTrainer.train_step`, not in production code. The
marker file FAULT_MARKER makes it happen the first time only, so the restarted ranks run through.
Without FAULT_STEP the worker is a plain `run.py` (the uninterrupted reference).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import run  # noqa: E402
from supernet.train import SupernetTrainer  # noqa: E402

FAULT_STEP = int(os.environ.get("FAULT_STEP", "0"))
FAULT_RANK = int(os.environ.get("FAULT_RANK", "1"))
MARKER = Path(os.environ.get("FAULT_MARKER", "fault.marker"))

if FAULT_STEP:
    original = SupernetTrainer.train_step

    def train_step(self, x, y):  # type: ignore[no-untyped-def]
        if self.rank == FAULT_RANK and self.step == FAULT_STEP and not MARKER.exists():
            MARKER.write_text(f"rank {self.rank} died at step {self.step}\n")
            os._exit(1)  # a crash: no cleanup, no checkpoint, no goodbye to the other rank
        return original(self, x, y)

    SupernetTrainer.train_step = train_step  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(run.main(sys.argv[1:]))
