"""Configuration of `run.py retrain` and `run.py export`.

The optimiser, schedule and runtime options are shared with the supernet (`core.config.TrainOptions`,
one default each: a short run); the presets in configs/ hold the full recipes, e.g. the DARTS / LaNet
CIFAR retraining (Liu et al. 2019; Wang et al. 2021) in nasnet-cifar10: SGD with momentum and a
cosine schedule, weight decay 3e-4, gradient clipping at 5, drop path ramped to its final value,
and the auxiliary head at weight 0.4 when the space builds one. Cutout, AutoAugment, Mixup, EMA and
distillation are options (the MicroNet entry's bag of tricks), all off unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, SpaceOptions, TrainOptions, opt
from core.errors import UserError

POLICIES = ("off", "randaugment", "autoaugment")


@dataclass
class RetrainConfig(SpaceOptions, TrainOptions, CommonConfig):
    """Train one architecture (or a timm model) from scratch and measure it on the test split."""

    SPACE_FROM_ARCH = True  # an empty --space is the one the arch names (nasnet for --lanet)

    # ---- what to train -------------------------------------------------------------------------
    arch_file: str = opt("", "a search's topk.json (or any JSON list of {'rank', 'arch'}) to read --rank from")
    rank: int = opt(0, "which entry of --arch-file to retrain (0: the best)")
    arch: str = opt("", "the architecture inline, as the JSON that space.to_json writes")
    lanet: str = opt(
        "",
        "NASNet-space integer list(s) in LaNet's layout: one 4*nodes list for every cell, or one per "
        "stage separated by ';' (per-stage cells, SLNAS-style; the space gets per_stage=true)",
    )
    model: str = opt("", "'timm:<name>' trains a timm model instead (random init, never downloads)")
    arch_id: str = opt("", "output folder name under <run_dir>/retrain/; empty: derived from the arch")
    # ---- data ----------------------------------------------------------------------------------
    use_search_split: bool = opt(True, "also train on the search split: the final model sees every training image")
    test_images: int = opt(0, "evaluate on the first N test images only (0: all; for smoke runs)")
    # ---- optimisation --------------------------------------------------------------------------
    eval_batch_size: int = opt(256, "batch size of the test-split evaluation")
    dropout: float = opt(0.0, "dropout before the classifier (timm: drop_rate)")
    drop_path: float = opt(0.0, "final drop-path probability, ramped linearly from 0 (0: the space's drop_path option)")
    auxiliary_weight: float = opt(0.4, "weight of the auxiliary head's loss (NASNet space with auxiliary=true)")
    # ---- augmentation --------------------------------------------------------------------------
    crop_flip: bool = opt(True, "random crop (padding size/8) and horizontal flip")
    cutout: int = opt(0, "side of the Cutout hole in pixels (16 for CIFAR; 0: off)")
    policy: str = opt("off", "learned augmentation policy, per image on uint8 tensors (torchvision)", choices=POLICIES)
    randaugment_n: int = opt(2, "RandAugment: ops per image")
    randaugment_m: int = opt(9, "RandAugment: magnitude (0-30)")
    mixup: float = opt(0.0, "Mixup alpha (0: off); targets become soft")
    cutmix: float = opt(0.0, "CutMix alpha (0: off); with Mixup too, each batch picks one at random")
    mix_prob: float = opt(1.0, "probability that a batch is mixed at all (Mixup/CutMix)")
    random_erasing: float = opt(0.0, "probability of random erasing per image (timm, normal noise; 0: off)")
    # ---- loss and head -------------------------------------------------------------------------
    head: str = opt("linear", "classifier: linear, or cosine (additive margin softmax)", choices=("linear", "cosine"))
    am_scale: float = opt(5.0, "cosine head: logit scale s (MicroNet entry: 5)")
    am_margin: float = opt(0.0, "cosine head: additive margin m subtracted from the target cosine (MicroNet: 0)")
    # ---- EMA -----------------------------------------------------------------------------------
    ema_decay: float = opt(0.0, "EMA of the weights with this decay (e.g. 0.9998; 0: off); raw and EMA both evaluated")
    ema_warmup: bool = opt(True, "ramp the EMA decay up from 0 (timm ModelEmaV3 warm-up), so early EMA is not stale")
    # ---- distillation --------------------------------------------------------------------------
    teacher: str = opt("", "distil from a retrain checkpoint (last.pt/ema.pt of this tool) or 'timm:<name>'")
    teacher_ema: bool = opt(True, "use the teacher checkpoint's EMA weights when it has them")
    teacher_weights: str = opt(
        "",
        "weights of a timm: teacher: a state dict (torch.save, read weights-only, or .safetensors) of that model "
        "trained on the data's classes; empty: its pretrained weights from the local cache, else refused",
    )
    teacher_size: int = opt(0, "teacher input resolution; each batch is resized for it (0: the student's)")
    kd_online: bool = opt(False, "train the teacher jointly from scratch (online distillation)")
    kd_weight: float = opt(0.5, "weight of the KL term; the label loss gets 1 - kd_weight")
    kd_temperature: float = opt(4.0, "softmax temperature of the distillation KL")

    def validate(self) -> None:
        super().validate()
        given = [n for n in ("arch_file", "arch", "lanet", "model") if getattr(self, n)]
        if len(given) > 1:
            raise UserError(f"give only one of --arch-file, --arch, --lanet, --model (got {', '.join(given)})")
        if self.eval_batch_size < 1:
            raise UserError(f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        if self.rank < 0 or self.test_images < 0:
            raise UserError("--rank and --test-images must be >= 0")
        if not 0 <= self.dropout < 1 or not 0 <= self.drop_path < 1:
            raise UserError("--dropout and --drop-path must be in [0, 1)")
        if min(self.mixup, self.cutmix, self.cutout, self.random_erasing, self.auxiliary_weight) < 0:
            raise UserError("--mixup, --cutmix, --cutout, --random-erasing, --auxiliary-weight must be >= 0")
        if not 0 <= self.mix_prob <= 1 or not 0 <= self.random_erasing <= 1 or not 0 <= self.ema_decay < 1:
            raise UserError("--mix-prob and --random-erasing must be in [0, 1], --ema-decay in [0, 1)")
        if self.am_scale <= 0 or self.am_margin < 0 or self.kd_temperature <= 0 or not 0 <= self.kd_weight <= 1:
            raise UserError("--am-scale > 0, --am-margin >= 0, --kd-temperature > 0 and 0 <= --kd-weight <= 1")
        if self.kd_online and not self.teacher.startswith("timm:") and self.teacher:
            raise UserError("--kd-online trains the teacher from scratch: give --teacher timm:<name>")
        if self.kd_online and not self.teacher:
            raise UserError("--kd-online needs --teacher timm:<name>")
        if self.teacher_weights and (not self.teacher.startswith("timm:") or self.kd_online):
            raise UserError("--teacher-weights is for a fixed --teacher timm:<name> (not with --kd-online)")
        if self.teacher_size < 0:
            raise UserError(f"--teacher-size must be >= 0, got {self.teacher_size}")
        if not 0 <= self.randaugment_n <= 10 or not 0 <= self.randaugment_m <= 30:
            raise UserError("--randaugment-n must be in [0, 10] and --randaugment-m in [0, 30]")
        if "/" in self.arch_id or self.arch_id in (".", ".."):
            raise UserError(f"--arch-id {self.arch_id!r} must be a plain folder name")


@dataclass
class ExportConfig(CommonConfig):
    """Write torch.export (.pt2) and ONNX files of a retrained model, each checked against PyTorch."""

    checkpoint: str = opt("", "a retrain checkpoint (last.pt) or its folder; empty: the one under <run_dir>/retrain/")
    space: str = opt(
        "",
        "a space import path (module:Class) the checkpoint may name; registered spaces need nothing (trust it first)",
    )
    arch_id: str = opt("", "which <run_dir>/retrain/<arch-id>/ to export when there are several")
    weights: str = opt("ema", "export the EMA weights (when the run kept them) or the raw ones", choices=("ema", "raw"))
    formats: list[str] = opt(
        ["pt2", "onnx"], "files to write: pt2 (torch.export), onnx, torchscript (deprecated by torch; comma-separated)"
    )
    out_dir: str = opt("", "where to write; empty: <checkpoint folder>/export")
    opset: int = opt(17, "ONNX opset version")
    verify: bool = opt(True, "check both files against PyTorch on random input")
    latency_table: str = opt(
        "", "latency table (run.py latency-table): its prediction goes in arch.json beside the measured"
    )
    tolerance: float = opt(1e-4, "largest allowed absolute difference between exported and PyTorch outputs")

    def validate(self) -> None:
        super().validate()
        bad = [f for f in self.formats if f not in ("pt2", "onnx", "torchscript")]
        if bad or not self.formats:
            raise UserError(f"--formats {','.join(self.formats)}: choose from pt2, onnx, torchscript")
        if self.tolerance <= 0 or self.opset < 9:
            raise UserError("--tolerance must be > 0 and --opset >= 9")
