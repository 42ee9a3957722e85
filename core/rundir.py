"""Run directories: where a command writes its config, log, metrics and TensorBoard events.

checkpoints/<run>/config.yaml, log.txt
checkpoints/<run>/<stage>/metrics.jsonl, tb/, last.pt ...
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from core.config import save_config
from core.errors import UserError
from core.jsonl import append_jsonl, read_jsonl

ROOT = Path("checkpoints")
log = logging.getLogger(__name__)


def resolve_run_dir(cfg: Any, command: str, preset: str | None = None) -> Path:
    """Fill in `cfg.run_dir` (default `checkpoints/<run_name or command-preset>`) and check it is writable."""
    if not cfg.run_dir:
        name = cfg.run_name or "-".join(p for p in (command, preset) if p)
        cfg.run_dir = str(ROOT / name)
    path = Path(cfg.run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"run directory {path} is not writable ({exc.strerror}); pass --run-dir to a writable folder"
        ) from None
    return path


def save_run_config(cfg: Any, run_dir: Path, name: str = "config.yaml") -> Path:
    """Save the resolved configuration beside the run's outputs."""
    target = run_dir / name
    save_config(cfg, target)
    return target


class MetricsLogger:
    """One JSONL line per event (epoch, evaluated arch) plus TensorBoard scalars; rank 0 only."""

    def __init__(self, directory: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self.path = self.directory / "metrics.jsonl"
        self._tb = None
        if enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(self.directory / "tb"))

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, {"time": round(time.time(), 3), **record}, fsync=False)
        if self._tb is not None and step is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def drop_after(self, step: int) -> int:
        """On resume: remove lines logged after the checkpoint of `step` (they will be logged again)."""
        if not self.enabled or not self.path.exists():
            return 0
        records = read_jsonl(self.path)
        keep = [r for r in records if int(r.get("step", 0)) <= step]
        if len(keep) < len(records):
            tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
            tmp.write_text("".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in keep))
            os.replace(tmp, self.path)
            log.warning("%s: dropped %d lines logged after step %d", self.path, len(records) - len(keep), step)
        return len(records) - len(keep)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
