"""`run.py supernet`: train a weight-sharing supernet once, resumable to the bit.

One step: the sampler (a function of seed and step) names the subnets, one DDP forward runs them
all (`MultiPath`), the losses are summed (with in-place distillation for the sandwich rule), one
backward and one optimizer step follow. Checkpoints hold everything needed to continue exactly:
weights, optimizer, schedule, scaler, step, position in the epoch and RNG states.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core import amp as amp_lib
from core import distributed
from core.checkpoint import (
    check_classes,
    contents_of,
    find_resume,
    kept_checkpoint,
    restore_optimization,
    rng_state,
    save_checkpoint,
)
from core.data import TRAIN_AUGMENT, Augment, TensorLoader, load_data
from core.errors import CheckpointError, UserError
from core.optim import make_optimizer
from core.rundir import MetricsLogger, RunDir, commit_run_config
from core.runtime import progress, seed_everything, select_device
from core.signals import graceful_stop
from supernet.config import SupernetConfig
from supernet.evaluate import recal_subset, score_arch
from supernet.sampling import ArchSampler, panel
from supernet.spaces.base import make_user_space

log = logging.getLogger(__name__)


class MultiPath(nn.Module):
    """Runs several subnets of one supernet in a single forward, so DDP sees one graph per step."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, archs: list[Hashable]) -> list[torch.Tensor]:
        return [self.net(x, a) for a in archs]


def step_loss(logits: list[torch.Tensor], y: torch.Tensor, cfg: SupernetConfig) -> torch.Tensor:
    """Sum of the subnets' losses; under the sandwich rule the first (largest) teaches the others."""
    ce = F.cross_entropy(logits[0], y, label_smoothing=cfg.label_smoothing)
    if cfg.strategy != "sandwich":
        return sum((F.cross_entropy(z, y, label_smoothing=cfg.label_smoothing) for z in logits[1:]), ce)
    t = cfg.kd_temperature
    teacher = F.softmax(logits[0].detach().float() / t, dim=1)  # no gradient flows into the teacher
    total = ce
    for z in logits[1:]:
        kd = F.kl_div(F.log_softmax(z.float() / t, dim=1), teacher, reduction="batchmean") * t * t
        total = total + cfg.kd_weight * kd + (1 - cfg.kd_weight) * F.cross_entropy(z, y)
    return total


class SupernetTrainer:
    """Holds the run's state; `fit()` trains to the end (or to `max_steps`, or to a stop signal)."""

    def __init__(self, cfg: SupernetConfig) -> None:
        self.cfg = cfg
        seed_everything(cfg.seed)  # the supernet's initial weights come from the seed
        self.device = select_device(cfg.device)
        amp_lib.check_amp(cfg.amp, self.device)
        distributed.init_distributed(self.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if cfg.batch_size % self.world:
            raise UserError(f"--batch-size {cfg.batch_size} must divide evenly over {self.world} ranks")
        self.files = RunDir(cfg.run_dir).supernet
        self.out = self.files.path
        self.data = load_data(
            cfg.dataset,
            cfg.data_dir,
            search_size=cfg.search_size,
            split_seed=cfg.split_seed,
            num_classes=cfg.num_classes,
            image_size=cfg.image_size,
            download=cfg.download,
        )
        if not len(self.data.search):
            raise UserError(
                f"the search split of {cfg.dataset} is empty: nothing to score subnets on; raise --search-size"
            )
        if cfg.train_images:  # a fixed random subset: the images are stored class by class
            keep = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(cfg.split_seed))
            self.data.train = self.data.train.subset(keep[: cfg.train_images].sort().values)
        self.space = make_user_space(cfg.space, **cfg.space_opts)  # the user's own --space
        self.num_classes = self.data.num_classes
        net = self.space.supernet(self.num_classes).to(self.device)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.model: nn.Module = MultiPath(net)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # unsampled ops get no gradient in a step: let DDP find them each iteration
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        self.sampler = ArchSampler(
            self.space,
            cfg.strategy,
            cfg.seed,
            sandwich_k=cfg.sandwich_k,
            min_mflops=cfg.min_mflops,
            max_mflops=cfg.max_mflops,
            num_classes=self.num_classes,
        )
        self.loader = self._loader(
            self.data.train,
            cfg.batch_size // self.world,
            shuffle=True,
            augment=TRAIN_AUGMENT if cfg.augment else Augment(),
            shard=(self.rank, self.world),
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise UserError(f"--batch-size {cfg.batch_size} is larger than the {len(self.data.train)} training images")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer, self.scheduler = make_optimizer(self.net, cfg, self.total_steps, self.steps_per_epoch)
        self.scaler = amp_lib.grad_scaler(cfg.amp, self.device)
        self.autocast = lambda: amp_lib.autocast(cfg.amp, self.device)
        self.step, self.best = 0, -math.inf
        self.panel = panel(self.space, cfg.seed, cfg.panel_random)
        self.metrics = MetricsLogger(self.out, enabled=self.rank == 0)

    def _loader(self, data: Any, batch: int, **kw: Any) -> TensorLoader:
        return TensorLoader(
            data,
            batch,
            mean=self.data.mean,
            std=self.data.std,
            seed=self.cfg.seed,
            device=self.device,
            channels_last=self.channels_last,
            drop_last=kw.get("shuffle", False),
            **kw,
        )

    # ---- checkpoints --------------------------------------------------------------------------
    def state(self, finished: bool = False) -> dict[str, Any]:
        return {
            "kind": "supernet",
            "space": self.cfg.space,
            "space_opts": self.space.options(),
            "num_classes": self.num_classes,
            "classes": self.data.classes,
            "data": {
                "dataset": self.cfg.dataset,
                "data_dir": self.cfg.data_dir,
                "search_size": self.cfg.search_size,
                "split_seed": self.cfg.split_seed,
                "image_size": self.cfg.image_size,
            },
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "best": self.best,
            "rng": rng_state(),
            "config": asdict(self.cfg),
            "finished": finished,
        }

    def save(self, finished: bool = False) -> None:
        if self.rank == 0:
            save_checkpoint(self.state(finished), self.files.last)
        distributed.barrier()

    def try_resume(self) -> bool:
        found = find_resume(self.cfg.resume, self.files.last, self.metrics, self.device)
        if found is None:
            return False
        state, used = found
        if state.get("kind") != "supernet" or state.get("space") != self.cfg.space:
            raise CheckpointError(
                f"{used} is a {state.get('kind')} checkpoint of space {state.get('space')!r}, "
                f"not a supernet of {self.cfg.space!r}; pass the matching --space or another run"
            )
        check_classes(state, used, self.num_classes)
        if state.get("space_opts") != self.space.options():
            raise CheckpointError(
                f"{used} was trained with space options {state.get('space_opts')}, not {self.space.options()}; "
                "pass the same --space-opts or a new --run-dir"
            )
        with contents_of(used):
            self.net.load_state_dict(state["model"])
            restore_optimization(state, self.optimizer, self.scheduler, self.scaler)
            self.step, self.best = int(state["step"]), float(state["best"])
        log.info("resumed from %s at step %d (epoch %d)", used, self.step, state["epoch"])
        return True

    # ---- training -----------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        archs = self.sampler.archs(self.step)
        with self.autocast():
            logits = self.model(x, archs)
            loss = step_loss(logits, y, self.cfg)
        value = loss.item()  # .item() syncs with the GPU; needed to refuse a non-finite loss before the update
        if not math.isfinite(value):
            if self.cfg.nan_policy == "stop":
                raise UserError(
                    f"non-finite loss ({value}) at step {self.step}; {kept_checkpoint(self.files.last)} "
                    "(lower --lr, add --grad-clip, or use --nan-policy skip)"
                )
            log.warning("non-finite loss at step %d: step skipped", self.step)
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            return None
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.scheduler.step_update(self.step)
        return value

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self.try_resume()
        commit_run_config()  # inputs accepted: record this run's config
        self.scheduler.step_update(self.step)
        last_save = time.monotonic()
        stop_at = min(self.total_steps, cfg.max_steps) if cfg.max_steps else self.total_steps
        summary: dict[str, Any] = {}
        with graceful_stop() as stop:
            while self.step < stop_at:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self.loader.set_epoch(epoch)
                losses, t0, seen = [], time.monotonic(), 0
                bar = progress(
                    self.loader.iter_from(start),
                    cfg.quiet,
                    total=self.steps_per_epoch,
                    initial=start,
                    desc=f"supernet epoch {epoch + 1}/{cfg.epochs}",
                )
                for x, y in bar:
                    value = self.train_step(x, y)
                    seen += len(y) * self.world
                    if value is not None:
                        losses.append(value)
                        bar.set_postfix(loss=f"{value:.3f}", img_s=f"{seen / (time.monotonic() - t0):.0f}")
                    minutes = (time.monotonic() - last_save) / 60
                    if stop or self.step >= stop_at or (cfg.checkpoint_minutes and minutes >= cfg.checkpoint_minutes):
                        break
                if self.step % self.steps_per_epoch == 0 or self.step >= self.total_steps:
                    summary = self.end_epoch(epoch, losses, seen / max(time.monotonic() - t0, 1e-9))
                self.save(finished=self.step >= self.total_steps)
                last_save = time.monotonic()
                if stop:
                    log.warning(
                        "stopped by %s at step %d; rerun with --resume auto to continue", stop.requested, self.step
                    )
                    break
        self.metrics.close()
        return {
            "step": self.step,
            "finished": self.step >= self.total_steps,
            "checkpoint": str(self.files.last),
            **summary,
        }

    def end_epoch(self, epoch: int, losses: list[float], img_s: float) -> dict[str, Any]:
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": sum(losses) / max(len(losses), 1),
            "img_per_s": round(img_s, 1),
        }
        if (epoch + 1) % self.cfg.eval_every == 0 or self.step >= self.total_steps:
            record.update(self.validate_panel())
            mean = record.get("panel_mean_acc", -math.inf)
            if mean > self.best and self.rank == 0:
                self.best = mean
                save_checkpoint(self.state(), self.files.best, keep_previous=False)
        self.metrics.log(record, step=epoch + 1)
        log.info(
            "supernet epoch %d: %s",
            epoch + 1,
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
        )
        return record

    def validate_panel(self) -> dict[str, float]:
        """Accuracy of the fixed subnet panel on the search split, each after BN recalibration."""
        recal = (
            self._loader(recal_subset(self.data.train, self.cfg.recal_images, self.cfg.split_seed), self.cfg.batch_size)
            if self.cfg.recal_images
            else None
        )
        evaluate = self._loader(self.data.search, 256, shard=(self.rank, self.world))
        out = {
            f"acc_{name}": score_arch(self.net, arch, recal, evaluate, self.autocast())["acc"]
            for name, arch in self.panel.items()
        }
        out["panel_mean_acc"] = sum(out.values()) / max(len(out), 1)
        out["recal_images"] = self.cfg.recal_images
        return out


def main(cfg: SupernetConfig) -> dict[str, Any]:
    """Entry point of `run.py supernet`."""
    return SupernetTrainer(cfg).fit()
