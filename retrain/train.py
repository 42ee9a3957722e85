"""`run.py retrain`: train one architecture from scratch with the bag of tricks, then measure it.

The recipe of DARTS / LaNet retraining (cosine SGD, drop path ramp, auxiliary head, Cutout) with the
MicroNet entry's additions (AutoAugment/RandAugment, Mixup/CutMix, EMA, distillation from a
retrained teacher, cosine head). One step: augmented batch (a function of seed, epoch and batch
index), one forward of the student (and of the teacher, frozen or trained jointly), the combined
loss (`retrain.losses`), one backward and optimizer step, an EMA update. Checkpoints hold all state
(`retrain.state`), so a run killed at any step continues to the same weights.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core import amp as amp_lib
from core import distributed
from core.checkpoint import contents_of
from core.data import ImageSet, TensorLoader
from core.data.folder import FolderLoader, TransformOptions
from core.rundir import RunDir
from core.trainer import Trainer
from retrain.augment import AugmentLoader, AugmentOptions, WorkerAugmentLoader
from retrain.config import RetrainConfig
from retrain.heads import DropPathSchedule
from retrain.inputs import build_model, load_teacher_record, resolve_spec, to_device, user_spaces
from retrain.losses import RetrainLoss, split_output
from retrain.state import StateMixin

log = logging.getLogger(__name__)


class Joint(nn.Module):
    """Student and teacher in one module, so DDP sees one graph when both train (online distillation)."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, x: torch.Tensor, x_teacher: torch.Tensor) -> tuple[Any, Any]:
        return self.student(x), self.teacher(x_teacher)


class RetrainTrainer(StateMixin, Trainer):
    """Holds the run's state; `fit()` (from `core.trainer.Trainer`) trains to the end, `max_steps` or a stop signal."""

    kind = "retrain"

    def __init__(self, cfg: RetrainConfig) -> None:
        super().__init__(cfg)
        self.spec, self.arch_id = resolve_spec(cfg)  # bad input fails before any data is read
        self.data = self.load_data()
        # an architecture that names its resolution is trained, evaluated and exported at it
        self.num_classes, self.image_size = self.data.num_classes, arch_resolution(self.spec) or self.data.image_size
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        self.net = to_device(
            build_model(self.spec, self.num_classes, user_spaces(cfg)), self.device, self.channels_last
        )
        self.teacher, self.teacher_spec = self._teacher()
        self.online = cfg.kd_online and self.teacher is not None
        self.trainable: nn.Module = Joint(self.net, self.teacher) if self.online else self.net
        self.model: nn.Module = self.trainable
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.trainable, device_ids=ids, find_unused_parameters=self._unused_parameters()
            )
        train_set = self._train_set()
        if train_set.on_workers:
            loader: Any = WorkerAugmentLoader(
                train_set, cfg.batch_size // self.world, options=AugmentOptions.from_config(cfg, self.image_size),
                num_classes=self.num_classes, mean=self.data.mean, std=self.data.std, shuffle=True, seed=cfg.seed,
                drop_last=True, device=self.device, channels_last=self.channels_last, shard=(self.rank, self.world),
                transform=TransformOptions.from_config(cfg), workers=cfg.workers, timeout=cfg.loader_timeout,
                strict=cfg.strict_images, size=self.image_size,
            )  # fmt: skip
        else:
            loader = AugmentLoader(
                train_set, cfg.batch_size // self.world, options=AugmentOptions.from_config(cfg, self.data.image_size),
                num_classes=self.num_classes, mean=self.data.mean, std=self.data.std, shuffle=True, seed=cfg.seed,
                drop_last=True, device=self.device, channels_last=self.channels_last, shard=(self.rank, self.world),
                size=self._resize_to(),
            )  # fmt: skip
        self.set_schedule(loader, len(loader.labels), self.trainable)
        self.test_loader = self._test_loader()
        self.ema = self._ema()
        self.drop_path = DropPathSchedule(self.net, cfg.drop_path)
        self.criterion = RetrainLoss(
            label_smoothing=cfg.label_smoothing, am_scale=cfg.am_scale if cfg.head == "cosine" else 0.0,
            am_margin=cfg.am_margin, aux_weight=cfg.auxiliary_weight,
            kd_weight=cfg.kd_weight if self.teacher is not None else 0.0, kd_temperature=cfg.kd_temperature,
        )  # fmt: skip
        self.history: list[dict[str, Any]] = []
        # loss sums of the epoch so far, checkpointed so a resumed epoch reports the same means
        self.epoch_sums: dict[str, Any] = {}
        self.epoch_count = 0
        self.open_stage(RunDir(cfg.run_dir).retrain(self.arch_id))

    @property
    def label(self) -> str:
        return f"retrain {self.arch_id}"

    # ---- set-up -------------------------------------------------------------------------------
    def _train_set(self) -> ImageSet:
        train = self.data.train
        if self.cfg.use_search_split and len(self.data.search):
            train = train.concat(self.data.search)
        return train.subset(_spread(self.cfg.train_images, len(train))) if self.cfg.train_images else train

    def _test_loader(self) -> TensorLoader:
        test = self.data.test
        if self.cfg.test_images:
            test = test.subset(_spread(self.cfg.test_images, len(test)))
        # every rank takes every world-th image, so each is evaluated exactly once
        mine = test.subset(torch.arange(self.rank, len(test), self.world))
        if mine.on_workers:
            cfg = self.cfg
            return FolderLoader(
                mine, cfg.eval_batch_size, mean=self.data.mean, std=self.data.std,
                transform=TransformOptions.from_config(cfg), device=self.device, channels_last=self.channels_last,
                workers=cfg.workers, timeout=cfg.loader_timeout, strict=cfg.strict_images, size=self.image_size,
            )  # fmt: skip
        return TensorLoader(
            mine, self.cfg.eval_batch_size, mean=self.data.mean, std=self.data.std, device=self.device,
            channels_last=self.channels_last, size=self._resize_to(),
        )  # fmt: skip

    def _resize_to(self) -> int:
        """In-memory images at another size than the architecture's resolution are resized to it on the device."""
        return self.image_size if self.image_size != self.data.image_size else 0

    def _unused_parameters(self) -> bool:
        """Whether the trained module has parameters no forward reaches (then DDP must look for them).

        Found by one probe forward on rank 0, shared with every rank; a network that uses all its
        parameters keeps DDP's faster default.
        """
        unused = False
        if self.rank == 0:
            size = (2, 3, self.image_size, self.image_size)  # a private generator: no global RNG is drawn from
            x = torch.randn(size, generator=torch.Generator().manual_seed(0)).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            inputs = (x, self._teacher_input(x)) if self.online else (x,)
            with amp_lib.autocast(self.cfg.amp, self.device):
                unused = distributed.has_unused_parameters(self.trainable, *inputs)
            if unused:
                log.info("some parameters of %s are never used in a forward: DDP looks for them", self.arch_id)
        return bool(distributed.broadcast_object(unused))

    def _teacher(self) -> tuple[nn.Module | None, dict | None]:
        self.teacher_info: dict[str, Any] | None = None
        if not self.cfg.teacher:
            return None, None
        with contents_of(
            self.cfg.teacher, "give a retrain run directory of this tool, its last.pt/ema.pt or timm:<name>"
        ):
            teacher, spec, self.teacher_info = load_teacher_record(
                self.cfg.teacher, self.num_classes, self.cfg.teacher_ema, self.cfg
            )
        teacher = to_device(teacher, self.device, self.channels_last)
        if not self.cfg.kd_online:
            teacher.eval().requires_grad_(False)  # a fixed teacher: BN statistics frozen too
        acc = self.teacher_info.get("test_top1")
        log.info("distilling from %s (%s, test top-1 %s)", self.cfg.teacher, spec.get("str", spec.get("name")), acc)
        return teacher, spec

    def _ema(self) -> Any:
        if not self.cfg.ema_decay:
            return None
        from timm.utils import ModelEmaV3

        return ModelEmaV3(self.net, decay=self.cfg.ema_decay, use_warmup=self.cfg.ema_warmup)

    # ---- training -----------------------------------------------------------------------------
    def _teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        size = self.cfg.teacher_size
        if not size or size == x.shape[-1]:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
        self.drop_path.set(self.step / self.total_steps)
        with self.autocast():
            if self.online:
                out, t_out = self.model(x, self._teacher_input(x))
            else:
                out, t_out = self.model(x), None
                if self.teacher is not None:
                    with torch.no_grad():
                        t_out = self.teacher(self._teacher_input(x))
            logits, aux = split_output(out)
            t_logits = split_output(t_out)[0] if t_out is not None else None
            loss, parts = self.criterion(logits, y, aux, t_logits, teacher_trains=self.online)
        self.optimizer.zero_grad(set_to_none=True)
        if not self.accept_loss(loss):
            self.step += 1
            self.scheduler.step_update(self.step)
            return None
        self.optimizer_step(loss, self.trainable.parameters())
        if self.ema is not None:
            self.ema.update(self.net, step=self.step + 1)
        self.step += 1
        self.scheduler.step_update(self.step)
        return {"loss": loss.detach(), **parts}

    def record_step(self, out: dict[str, torch.Tensor]) -> None:
        self.epoch_count += 1
        for k, v in out.items():
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v

    def end_epoch(self, epoch: int, img_s: float) -> None:
        n = max(self.epoch_count, 1)
        means = {f"train_{k}": float(v) / n for k, v in self.epoch_sums.items()}
        self.epoch_sums, self.epoch_count = {}, 0
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
            "drop_path": self.drop_path.final * min(self.step / self.total_steps, 1.0), **means,
            "img_per_s": round(img_s, 1),
        }  # fmt: skip
        if (epoch + 1) % self.cfg.eval_every == 0 or self.step >= self.total_steps:
            record.update(self.test_metrics())
        self.history.append(record)
        self.log_epoch(epoch, record)

    def test_metrics(self) -> dict[str, float]:
        """Raw and EMA accuracy on the test split: this is the final model, so the test split is right."""
        raw = self.evaluate_on_test(self.net)
        out = {f"test_{k}": v for k, v in raw.items() if k != "images"}
        if self.ema is not None:
            out.update({f"ema_test_{k}": v for k, v in self.evaluate_on_test(self.ema.module).items() if k != "images"})
        out["test_images"] = raw["images"]
        return out

    def evaluate_on_test(self, model: nn.Module) -> dict[str, float]:
        from retrain.evaluate import evaluate

        return evaluate(model, self.test_loader, self.autocast)


def arch_resolution(spec: dict[str, Any]) -> int:
    """The input resolution an architecture of a space names (the MBConv space's), else 0."""
    arch = spec.get("arch") if spec.get("source") == "space" else None
    return int(arch.get("resolution") or 0) if isinstance(arch, dict) else 0


def _spread(n: int, total: int) -> torch.Tensor:
    """n indices spread evenly over `total` (image sets are stored class by class: keep every class)."""
    n = min(n, total)
    return torch.arange(n) * total // n


def main(cfg: RetrainConfig) -> dict[str, Any]:
    """Entry point of `run.py retrain`."""
    return RetrainTrainer(cfg).fit()
