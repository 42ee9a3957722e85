"""Configuration of `run.py supernet`: the space, the sampling strategy and the training recipe."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, SpaceOptions, TrainOptions, opt
from core.errors import UserError

STRATEGIES = ("uniform", "sandwich", "fair", "flops")


@dataclass
class SupernetConfig(SpaceOptions, TrainOptions, CommonConfig):
    """Train a space's weight-sharing supernet once (SPOS / BigNAS / FairNAS sampling)."""

    strategy: str = opt("uniform", "architecture sampling per step", choices=STRATEGIES)
    sandwich_k: int = opt(2, "sandwich: random subnets per step besides the largest and the smallest")
    kd_temperature: float = opt(1.0, "sandwich: temperature of the in-place distillation KL")
    kd_weight: float = opt(1.0, "sandwich: weight of distillation vs label loss for the smaller subnets")
    min_mflops: float = opt(0.0, "flops strategy: lower bound of sampled subnets (MFLOPs)")
    max_mflops: float = opt(0.0, "flops strategy: upper bound of sampled subnets (MFLOPs), 0 for none")
    augment: bool = opt(True, "random crop (padding 4 at 32px) and horizontal flip")
    recal_images: int = opt(2000, "training images used to re-estimate BatchNorm statistics per subnet")
    panel_random: int = opt(3, "fixed random subnets in the validation panel (besides largest and smallest)")

    def validate(self) -> None:
        super().validate()
        if self.sandwich_k < 0 or self.kd_temperature <= 0 or not 0 <= self.kd_weight <= 1:
            raise UserError("--sandwich-k >= 0, --kd-temperature > 0 and 0 <= --kd-weight <= 1 are required")
        if self.max_mflops and self.max_mflops < self.min_mflops:
            raise UserError(f"--max-mflops {self.max_mflops} is below --min-mflops {self.min_mflops}")
        if self.search_size < 1:  # the subnet panel (and later the search) is scored on the search split
            raise UserError(
                f"--search-size {self.search_size} leaves the search split empty: nothing to score architectures on; "
                "pass --search-size N (e.g. 1000)"
            )
        if self.recal_images < 0 or self.panel_random < 0:
            raise UserError("--recal-images and --panel-random must be >= 0")
