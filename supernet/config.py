"""Configuration of `run.py supernet`: the space, the sampling strategy and the training recipe."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, opt
from core.errors import UserError

STRATEGIES = ("uniform", "sandwich", "fair", "flops")


@dataclass
class SupernetConfig(CommonConfig):
    """Train a space's weight-sharing supernet once (SPOS / BigNAS / FairNAS sampling)."""

    space: str = opt("nasnet", "search space: nasnet, mbconv, nb201, resnet20, or module:Class")
    space_opts: dict = opt({}, "space constructor options, e.g. channels=16 blocks=2,2")
    strategy: str = opt("uniform", "architecture sampling per step", choices=STRATEGIES)
    sandwich_k: int = opt(2, "sandwich: random subnets per step besides the largest and the smallest")
    kd_temperature: float = opt(1.0, "sandwich: temperature of the in-place distillation KL")
    kd_weight: float = opt(1.0, "sandwich: weight of distillation vs label loss for the smaller subnets")
    min_mflops: float = opt(0.0, "flops strategy: lower bound of sampled subnets (MFLOPs)")
    max_mflops: float = opt(0.0, "flops strategy: upper bound of sampled subnets (MFLOPs), 0 for none")
    epochs: int = opt(10, "training epochs")
    max_steps: int = opt(0, "stop after this many optimizer steps with a checkpoint, as if preempted (0: off)")
    batch_size: int = opt(64, "global batch size (split evenly over ranks)")
    optimizer: str = opt("sgd", "optimizer", choices=("sgd", "nesterov", "adamw"))
    lr: float = opt(0.05, "peak learning rate (for the global batch)")
    min_lr: float = opt(0.0, "final learning rate of the cosine schedule")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(3e-4, "weight decay (not applied to BatchNorm parameters and biases)")
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs")
    grad_clip: float = opt(5.0, "clip the gradient norm to this value (0: off)")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy")
    augment: bool = opt(True, "random crop (padding 4 at 32px) and horizontal flip")
    amp: str = opt(
        "off",
        "mixed precision: fp16 (CUDA, with a grad scaler) or bf16 (CPU and CUDA)",
        choices=("off", "fp16", "bf16"),
    )
    channels_last: bool = opt(True, "channels-last memory format on CUDA (ignored on the CPU)")
    recal_images: int = opt(2000, "training images used to re-estimate BatchNorm statistics per subnet")
    panel_random: int = opt(3, "fixed random subnets in the validation panel (besides largest and smallest)")
    eval_every: int = opt(1, "evaluate the subnet panel every N epochs (and at the end)")
    checkpoint_minutes: float = opt(10.0, "also checkpoint every N minutes inside an epoch (0: epochs only)")
    nan_policy: str = opt(
        "stop", "on a NaN/inf loss: stop (last good checkpoint kept) or skip the step", choices=("stop", "skip")
    )
    train_images: int = opt(0, "train on N training images only, a fixed random subset (0: all; for smoke runs)")
    split_seed: int = opt(0, "seed of the search split carved from the training set (same for all stages)")

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.lr <= 0:
            raise UserError("--batch-size must be >= 1 and --lr > 0")
        if self.sandwich_k < 0 or self.kd_temperature <= 0 or not 0 <= self.kd_weight <= 1:
            raise UserError("--sandwich-k >= 0, --kd-temperature > 0 and 0 <= --kd-weight <= 1 are required")
        if self.max_mflops and self.max_mflops < self.min_mflops:
            raise UserError(f"--max-mflops {self.max_mflops} is below --min-mflops {self.min_mflops}")
        if self.train_images < 0:
            raise UserError(f"--train-images must be >= 0, got {self.train_images}")
        if self.search_size < 1:  # the subnet panel (and later the search) is scored on the search split
            raise UserError(
                f"--search-size {self.search_size} leaves the search split empty: nothing to score architectures on; "
                "pass --search-size N (e.g. 1000)"
            )
        if self.recal_images < 0 or self.panel_random < 0 or self.eval_every < 1:
            raise UserError("--recal-images and --panel-random must be >= 0, --eval-every >= 1")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
