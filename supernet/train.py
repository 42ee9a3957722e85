"""`run.py supernet`: train a weight-sharing supernet once, resumable to the bit.

One step: the sampler (a function of seed and step) names the subnets, one DDP forward runs them
all (`MultiPath`), the losses are summed (with in-place distillation for the sandwich rule), one
backward and one optimizer step follow. Checkpoints hold everything needed to continue exactly:
weights, optimizer, schedule, scaler, step, position in the epoch and RNG states.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import check_classes, save_checkpoint
from core.data import TRAIN_AUGMENT, Augment, ImageSet, TensorLoader
from core.data.folder import FolderLoader, MultiRes, TransformOptions, decode_split, pick
from core.errors import CheckpointError, UserError
from core.rundir import RunDir
from core.trainer import Trainer
from supernet.config import SupernetConfig
from supernet.evaluate import recal_subset, score_arch
from supernet.fewshot import FewShotSupernet, parse_few_shot
from supernet.sampling import ArchSampler, panel
from supernet.spaces.base import make_user_space

log = logging.getLogger(__name__)


class MultiPath(nn.Module):
    """Runs several subnets of one supernet in a single forward, so DDP sees one graph per step."""

    def __init__(self, net: nn.Module, default_size: int = 0) -> None:
        super().__init__()
        self.net, self.default_size = net, default_size

    def forward(self, x: torch.Tensor | MultiRes, archs: list[Hashable]) -> list[torch.Tensor]:
        # a batch at several resolutions: each subnet takes the crops at the resolution it names
        return [self.net(pick(x, int(getattr(a, "resolution", 0)) or self.default_size), a) for a in archs]


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


class SupernetTrainer(Trainer):
    """Holds the run's state; `fit()` (from `core.trainer.Trainer`) trains to the end, `max_steps` or a stop signal."""

    kind = "supernet"

    def __init__(self, cfg: SupernetConfig) -> None:
        super().__init__(cfg)
        self.data = self.load_data()
        if not len(self.data.search):
            raise UserError(
                f"the search split of {cfg.dataset} is empty: nothing to score subnets on; raise --search-size"
            )
        if cfg.train_images:  # a fixed random subset: the images are stored class by class
            keep = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(cfg.split_seed))
            self.data.train = self.data.train.subset(keep[: cfg.train_images].sort().values)
        self.space = make_user_space(cfg.space, **cfg.space_opts)  # the user's own --space
        self.num_classes = self.data.num_classes
        self.few_shot = parse_few_shot(cfg.few_shot, self.space) if cfg.few_shot else None
        if self.few_shot:  # K copies of the supernet, routed by one decision (supernet/fewshot.py)
            net = FewShotSupernet(self.space, self.num_classes, *self.few_shot[:2]).to(self.device)
        else:
            net = self.space.supernet(self.num_classes).to(self.device)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.model: nn.Module = MultiPath(net, self.data.image_size)  # the size of an arch that names none
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
        loader = self._loader(
            self.data.train,
            cfg.batch_size // self.world,
            shuffle=True,
            augment=TRAIN_AUGMENT if cfg.augment else Augment(),
            shard=(self.rank, self.world),
        )
        if isinstance(loader, FolderLoader) and hasattr(self.space, "resolutions"):
            # per-batch resolution: the workers crop each step's batch at the resolution of every subnet
            # sampled for that step (a function of seed and step: the same on every rank)
            loader.resolution_of = self.step_resolution
        self.set_schedule(loader, len(self.data.train), self.net)
        self.split_step = int(cfg.few_shot_warmup * self.total_steps)
        self.best, self.summary = -math.inf, {}
        self._decoded: dict[tuple[str, int], ImageSet] = {}  # worker path: splits decoded once per resolution
        extremes = cfg.strategy == "sandwich" or getattr(self.space, "panel_extremes", True)
        self.panel = panel(self.space, cfg.seed, cfg.panel_random, extremes)
        self.open_stage(RunDir(cfg.run_dir).supernet)

    def step_resolution(self, step: int) -> int | tuple[int, ...]:
        """The crop size(s) of step `step`: the resolutions of the subnets sampled for it, largest first
        (one int when they all name the same)."""
        sizes = sorted({int(getattr(a, "resolution", 0)) or self.data.image_size for a in self.sampler.archs(step)})
        return sizes[0] if len(sizes) == 1 else tuple(reversed(sizes))

    def _loader(self, data: Any, batch: int, **kw: Any) -> TensorLoader | FolderLoader:
        if data.on_workers:
            cfg = self.cfg
            return FolderLoader(
                data, batch, mean=self.data.mean, std=self.data.std, train=kw.get("augment", Augment()) != Augment(),
                transform=TransformOptions.from_config(cfg), shuffle=kw.get("shuffle", False), seed=cfg.seed,
                drop_last=kw.get("shuffle", False), device=self.device, channels_last=self.channels_last,
                shard=kw.get("shard", (0, 1)), workers=cfg.workers, timeout=cfg.loader_timeout,
                strict=cfg.strict_images,
            )  # fmt: skip
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
    def extra_state(self) -> dict[str, Any]:
        return {
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
            "best": self.best,
            "few_shot": self.net.describe() if self.few_shot else None,
        }

    def check_checkpoint(self, state: dict[str, Any], used: Any) -> None:
        if state.get("kind") != "supernet" or state.get("space") != self.cfg.space:
            raise CheckpointError(
                f"{used} is a {state.get('kind')} checkpoint of space {state.get('space')!r}, "
                f"not a supernet of {self.cfg.space!r}; pass the matching --space or another run"
            )
        check_classes(state, used, self.num_classes)
        mine = self.net.describe() if self.few_shot else None
        if state.get("few_shot") != mine:
            raise CheckpointError(
                f"{used} is a supernet with few-shot split {state.get('few_shot')}, not {mine}; "
                "pass the same --few-shot or a new --run-dir"
            )
        if state.get("space_opts") != self.space.options():
            raise CheckpointError(
                f"{used} was trained with space options {state.get('space_opts')}, not {self.space.options()}; "
                "pass the same --space-opts or a new --run-dir"
            )

    def load_extra(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])

    # ---- training -----------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        if self.few_shot and self.step >= self.split_step and not bool(self.net.is_split):
            self.net.split(self.optimizer)
            log.info("few-shot: split into %d sub-supernets on %s at step %d", self.net.k, self.net.decision, self.step)
        archs = self.sampler.archs(self.step)
        with self.autocast():
            logits = self.model(x, archs)
            loss = step_loss(logits, y, self.cfg)
        if not self.accept_loss(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            return None
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_step(loss, self.net.parameters())
        self.step += 1
        self.scheduler.step_update(self.step)
        return loss.detach()

    def finish(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "finished": self.step >= self.total_steps,
            "checkpoint": str(self.files.last),
            **self.summary,
        }

    def end_epoch(self, epoch: int, img_s: float) -> None:
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": self.pass_mean_loss,
            "img_per_s": round(img_s, 1),
        }
        if (epoch + 1) % self.cfg.eval_every == 0 or self.step >= self.total_steps:
            record.update(self.validate_panel())
            mean = record.get("panel_mean_acc", -math.inf)
            if mean > self.best and self.rank == 0:
                self.best = mean
                save_checkpoint(self.state(), self.files.best, keep_previous=False)
        self.log_epoch(epoch, record)
        self.summary = record

    def validate_panel(self) -> dict[str, float]:
        """Accuracy of the fixed subnet panel on the search split, each after BN recalibration."""
        if self.data.train.on_workers:
            return self._validate_panel_decoded()
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

    def _split_at(self, name: str, size: int) -> ImageSet:
        """The search split or the recalibration images, decoded with the evaluation transform at `size`, once."""
        key = (name, size)
        if key not in self._decoded:
            cfg = self.cfg
            data = self.data.search if name == "search" else recal_subset(self.data.train, cfg.recal_images,
                                                                          cfg.split_seed)  # fmt: skip
            self._decoded[key] = decode_split(data, size, TransformOptions.from_config(cfg), cfg.workers,
                                              cfg.loader_timeout, cfg.strict_images)  # fmt: skip
        return self._decoded[key]

    def _validate_panel_decoded(self) -> dict[str, float]:
        """The panel on the worker path: each subnet scored at its own resolution, evaluation transform."""
        out: dict[str, Any] = {}
        for name, arch in self.panel.items():
            size = int(getattr(arch, "resolution", 0)) or self.data.image_size
            recal = self._loader(self._split_at("recal", size), self.cfg.batch_size) if self.cfg.recal_images else None
            evaluate = self._loader(self._split_at("search", size), 256, shard=(self.rank, self.world))
            out[f"acc_{name}"] = score_arch(self.net, arch, recal, evaluate, self.autocast())["acc"]
        out["panel_mean_acc"] = sum(out.values()) / max(len(out), 1)
        out["recal_images"] = self.cfg.recal_images
        return out


def main(cfg: SupernetConfig) -> dict[str, Any]:
    """Entry point of `run.py supernet`."""
    return SupernetTrainer(cfg).fit()
