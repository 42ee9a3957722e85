"""The training skeleton the supernet and retrain stages share: set-up, save, exact resume, the loop.

A stage subclasses `Trainer` and supplies the model and the data; the skeleton owns what every run
needs the same way: the device, the ranks and the data split (`__init__`, `load_data`), the
optimiser, schedule and grad scaler (`set_schedule`), checkpoints (`state`, `save`, `try_resume`,
with the fall-back to the previous generation of `core.checkpoint`), the optimizer step
(`accept_loss`, `optimizer_step`), and the loop (`fit`): epochs of steps from the exact position of
the checkpoint, a checkpoint at each epoch's end and every `--checkpoint-minutes`, a stop at
`--max-steps` or on SIGTERM/SIGINT (after a checkpoint), progress bars and metrics.

A stage provides:
    kind                           the checkpoint's "kind" (a resume of another kind is refused)
    label                          its name in logs and progress bars ("supernet", "retrain top1")
    extra_state() -> dict          its own checkpoint entries (besides weights, optimizer, step, RNG, config)
    check_checkpoint(state, used)  refuse a checkpoint of another run (`CheckpointError`)
    load_extra(state)              restore its own entries (inside `contents_of`)
    train_step(x, y)               one step; None when the step was skipped (a NaN loss under --nan-policy skip)
    record_step(out)               account a step's output for the epoch's metrics
    end_epoch(epoch, img_s)        the epoch's metrics line (and evaluation)
    finish() -> dict               the run's summary, after the loop
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from core import amp as amp_lib
from core import distributed
from core.checkpoint import contents_of, find_resume, kept_checkpoint, restore_optimization, rng_state, save_checkpoint
from core.data import load_data
from core.errors import UserError
from core.optim import make_optimizer
from core.rundir import MetricsLogger, StageDir, commit_run_config
from core.runtime import progress, seed_everything, select_device
from core.signals import graceful_stop

log = logging.getLogger(__name__)
LOSS_READ_EVERY = 20  # steps between reads of the device-side loss (each read synchronises)


class Trainer:
    """Holds a training run's state; `fit()` trains to the end (or to `max_steps`, or to a stop signal)."""

    kind = ""
    net: nn.Module
    loader: Any

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        seed_everything(cfg.seed)  # the initial weights come from the seed
        self.device = select_device(cfg.device)
        amp_lib.check_amp(cfg.amp, self.device)
        distributed.init_distributed(self.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if cfg.batch_size % self.world:
            raise UserError(f"--batch-size {cfg.batch_size} must divide evenly over {self.world} ranks")
        self.step = 0
        self.last_loss = math.nan
        self._loss_sum, self._loss_n = torch.zeros((), dtype=torch.float64, device=self.device), 0
        self.pass_loss_sum, self.pass_loss_n = 0.0, 0

    @property
    def label(self) -> str:
        return self.kind

    def load_data(self) -> Any:
        """The dataset and its search split, as every stage carves it (same `--search-size`, `--split-seed`)."""
        cfg = self.cfg
        return load_data(
            cfg.dataset, cfg.data_dir, search_size=cfg.search_size, split_seed=cfg.split_seed,
            num_classes=cfg.num_classes, image_size=cfg.image_size, download=cfg.download, loader=cfg.loader,
        )  # fmt: skip

    def set_schedule(self, loader: Any, images: int, trained: nn.Module | list) -> None:
        """Steps per epoch of `loader` (over `images` training images), optimizer, schedule and grad scaler."""
        cfg = self.cfg
        self.loader = loader
        if hasattr(loader, "keep_empty"):  # a batch of only bad files is still its step: the count stays exact
            loader.keep_empty = True
        self.steps_per_epoch = len(loader)
        if self.steps_per_epoch == 0:
            raise UserError(f"--batch-size {cfg.batch_size} is larger than the {images} training images")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer, self.scheduler = make_optimizer(trained, cfg, self.total_steps, self.steps_per_epoch)
        self.scaler = amp_lib.grad_scaler(cfg.amp, self.device)
        self.autocast = lambda: amp_lib.autocast(cfg.amp, self.device)

    def open_stage(self, files: StageDir) -> None:
        """Where this run writes: its checkpoints and its metrics (rank 0 only)."""
        self.files = files
        self.out = files.path
        self.metrics = MetricsLogger(self.out, enabled=self.rank == 0)

    # ---- checkpoints --------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {}

    def state(self, finished: bool = False) -> dict[str, Any]:
        """Everything a resume needs: weights, optimizer, schedule, scaler, step, RNG states, config."""
        return {
            "kind": self.kind,
            **self.extra_state(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "rng": rng_state(),
            "config": asdict(self.cfg),
            "finished": finished,
        }

    def save(self, finished: bool = False) -> None:
        if self.rank == 0:
            save_checkpoint(self.state(finished), self.files.last)
        distributed.barrier()

    def check_checkpoint(self, state: dict[str, Any], used: Any) -> None:
        """Raise `CheckpointError` when `state` is not a checkpoint of this run."""

    def load_extra(self, state: dict[str, Any]) -> None:
        """Restore the stage's own entries of a checkpoint."""

    def try_resume(self) -> bool:
        """Continue from the run's newest good checkpoint (per `--resume`), if there is one."""
        found = find_resume(self.cfg.resume, self.files.last, self.metrics, self.device)
        if found is None:
            return False
        state, used = found
        self.check_checkpoint(state, used)
        with contents_of(used):
            self.net.load_state_dict(state["model"])
            self.load_extra(state)
            restore_optimization(state, self.optimizer, self.scheduler, self.scaler)
            self.step = int(state["step"])
        log.info("resumed from %s at step %d (epoch %d)", used, self.step, state["epoch"])
        return True

    # ---- one step -----------------------------------------------------------------------------
    def accept_loss(self, loss: torch.Tensor) -> bool:
        """Whether to take the step. Under `--nan-policy stop` the loss stays on the device (no sync):
        it is summed there and read every `LOSS_READ_EVERY` steps and before each checkpoint, where a
        NaN/inf stops the run (the weights are also checked before they are saved). `--nan-policy skip`
        must decide now, so it reads each step's loss (one device sync per step)."""
        if self.cfg.nan_policy == "skip":
            value = loss.item()
            if not math.isfinite(value):
                log.warning("non-finite loss at step %d: step skipped", self.step)
                return False
        self._loss_sum = self._loss_sum + loss.detach().to(torch.float64)
        self._loss_n += 1
        return True

    def read_losses(self) -> float | None:
        """The mean loss of the steps since the last read (one sync); `UserError` if it is not finite."""
        if not self._loss_n:
            return None
        value, n = self._loss_sum.item(), self._loss_n
        first = self.step - n + 1
        self._loss_sum, self._loss_n = torch.zeros((), dtype=torch.float64, device=self.device), 0
        if not math.isfinite(value):
            where = f"at step {first}" if n == 1 else f"in steps {first}-{self.step}"
            raise UserError(
                f"non-finite loss ({value}) {where}; {kept_checkpoint(self.files.last)} "
                "(lower --lr, add --grad-clip, or use --nan-policy skip)"
            )
        self.pass_loss_sum, self.pass_loss_n = self.pass_loss_sum + value, self.pass_loss_n + n
        self.last_loss = value / n
        return self.last_loss

    @property
    def pass_mean_loss(self) -> float:
        """The mean loss of this pass over the epoch's batches (read, so after `read_losses`)."""
        self.read_losses()
        return self.pass_loss_sum / max(self.pass_loss_n, 1)

    def optimizer_step(self, loss: torch.Tensor, parameters: Any) -> None:
        """Backward (scaled under fp16), gradient clipping, the optimizer step and the scaler's update."""
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(parameters, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        raise NotImplementedError

    def record_step(self, out: Any) -> None:
        """Account the output of a step that was taken (not skipped)."""

    def end_epoch(self, epoch: int, img_s: float) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        raise NotImplementedError

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self.try_resume()
        commit_run_config()  # every input was accepted: record this run's config
        self.scheduler.step_update(self.step)
        last_save = time.monotonic()
        stop_at = min(self.total_steps, cfg.max_steps) if cfg.max_steps else self.total_steps
        with graceful_stop() as stop:
            while self.step < stop_at:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self.loader.set_epoch(epoch)
                t0, seen = time.monotonic(), 0
                self.pass_loss_sum, self.pass_loss_n = 0.0, 0
                bar = progress(
                    self.loader.iter_from(start), cfg.quiet, total=self.steps_per_epoch, initial=start,
                    desc=f"{self.label} epoch {epoch + 1}/{cfg.epochs}",
                )  # fmt: skip
                self.wait_s, batches = 0.0, iter(bar)
                while True:
                    t_wait = time.monotonic()
                    try:
                        x, y = next(batches)
                    except StopIteration:
                        break
                    self.wait_s += time.monotonic() - t_wait
                    if len(y):
                        out = self.train_step(x, y)
                        seen += len(y) * self.world
                        if out is not None:
                            self.record_step(out)
                    else:  # every image of the batch was undecodable (skipped, counted): the step, no update
                        self.step += 1
                    if self._loss_n >= LOSS_READ_EVERY:
                        self.read_losses()
                        elapsed = max(time.monotonic() - t0, 1e-9)
                        bar.set_postfix(loss=f"{self.last_loss:.3f}", img_s=f"{seen / elapsed:.0f}",
                                        wait=f"{100 * self.wait_s / elapsed:.0f}%")  # fmt: skip
                    minutes = (time.monotonic() - last_save) / 60
                    if stop or self.step >= stop_at or (cfg.checkpoint_minutes and minutes >= cfg.checkpoint_minutes):
                        break
                self.read_losses()  # a NaN/inf since the last read stops here, before any checkpoint
                if self.step % self.steps_per_epoch == 0 or self.step >= self.total_steps:
                    self.data_wait = self.wait_s / max(time.monotonic() - t0, 1e-9)
                    self.end_epoch(epoch, seen / max(time.monotonic() - t0, 1e-9))
                self.save(finished=self.step >= self.total_steps)
                last_save = time.monotonic()
                if stop:
                    log.warning(
                        "stopped by %s at step %d; rerun with --resume auto to continue", stop.requested, self.step
                    )
                    break
        self.metrics.close()
        return self.finish()

    def log_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Write the epoch's metrics line (JSONL and TensorBoard) and log it.

        With `img_per_s` it carries `data_wait`, the fraction of the epoch's time spent waiting for
        batches, and on the worker path `skipped_images`, the undecodable files skipped this epoch.
        """
        if "img_per_s" in record:
            record["data_wait"] = round(getattr(self, "data_wait", 0.0), 4)
        if hasattr(self.loader, "skipped"):
            record["skipped_images"] = int(self.loader.skipped)
            if self.loader.skipped:
                log.warning("%d undecodable images were skipped this epoch", self.loader.skipped)
        self.metrics.log(record, step=epoch + 1)
        log.info(
            "%s epoch %d: %s", self.label, epoch + 1,
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
        )  # fmt: skip
