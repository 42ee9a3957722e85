"""Checkpoints, exact resume and the final report of a retraining run (a mixin of `RetrainTrainer`).

A retrain checkpoint describes itself (nanoGPT-style): `model_spec` rebuilds the network (space,
options and arch JSON, or timm name, plus the head), so teachers, exports and resumes need nothing
else. `last.pt` holds everything needed to continue exactly: weights, EMA, optimizer, schedule,
scaler, step (epoch and position in it follow), RNG states and the curve so far. At the end `ema.pt`
holds the EMA weights alone (as `model`), and `report.json` / `curve.png` the measurements.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from core import distributed
from core.checkpoint import check_classes, save_checkpoint
from core.errors import CheckpointError

log = logging.getLogger(__name__)


class StateMixin:
    """The retrain checkpoint's own entries and the final report; needs what `RetrainTrainer.__init__` sets.

    Saving, resuming and the loop are `core.trainer.Trainer`'s."""

    def meta(self) -> dict[str, Any]:
        """What a checkpoint needs to describe the model it holds."""
        return {
            "model_spec": self.spec,
            "arch_id": self.arch_id,
            "num_classes": self.num_classes,
            "classes": self.data.classes,
            "image_size": self.image_size,
            "mean": list(self.data.mean),
            "std": list(self.data.std),
        }

    def extra_state(self) -> dict[str, Any]:
        return {
            **self.meta(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "teacher": self.teacher.state_dict() if self.online else None,
            "teacher_spec": self.teacher_spec,
            "history": self.history,
            "epoch_sums": {k: float(v) for k, v in self.epoch_sums.items()},  # float() syncs once per save
            "epoch_count": self.epoch_count,
        }

    def check_checkpoint(self, state: dict[str, Any], used: Any) -> None:
        if state.get("kind") != "retrain":
            raise CheckpointError(
                f"{used} is a {state.get('kind')!r} checkpoint, not a retrain run; use another --run-dir"
            )
        check_classes(state, used, self.num_classes)
        if state.get("model_spec") != self.spec:
            raise CheckpointError(f"{used} trained another model or head; pass its options or a new --run-dir")
        if (state.get("ema") is None) != (self.ema is None) or (state.get("teacher") is None) == self.online:
            raise CheckpointError(f"{used} was trained with other --ema-decay/--kd-online settings; keep them equal")

    def load_extra(self, state: dict[str, Any]) -> None:
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        if self.online:
            self.teacher.load_state_dict(state["teacher"])
        self.history = list(state.get("history") or [])
        self.epoch_sums, self.epoch_count = dict(state.get("epoch_sums") or {}), int(state.get("epoch_count", 0))

    def finish(self) -> dict[str, Any]:
        """The run's summary; when training is complete, also ema.pt, report.json and curve.png."""
        finished = self.step >= self.total_steps
        result: dict[str, Any] = {
            "arch_id": self.arch_id,
            "out_dir": str(self.out),
            "step": self.step,
            "finished": finished,
            "checkpoint": str(self.files.last),
        }
        tested = [r for r in self.history if "test_top1" in r]
        if tested:
            result.update({k: v for k, v in tested[-1].items() if "test_" in k})
        if not finished:
            return result
        from retrain.evaluate import complexity, write_report

        cost = complexity(self.net, self.image_size)
        result.update(cost)
        if self.rank == 0:
            if self.ema is not None:
                ema_state = {"kind": "retrain-ema", **self.meta(), "model": self.ema.module.state_dict()}
                save_checkpoint(ema_state, self.files.ema, keep_previous=False)
                result["ema_checkpoint"] = str(self.files.ema)
            report = {
                "arch_id": self.arch_id,
                "model": self.spec,
                "test_split": "test",
                "final": {k: v for k, v in result.items() if "test_" in k},
                "complexity": cost,
                "teacher": self.cfg.teacher or None,
                "epochs": self.cfg.epochs,
                "steps": self.step,
                "time": round(time.time(), 3),
                "curve": self.history,
                "config": asdict(self.cfg),
            }
            result["report"] = str(write_report(self.out, report))
        distributed.barrier()
        return result
