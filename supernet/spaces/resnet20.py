"""The ResNet-20 channel space: the width of every free layer of a CIFAR ResNet-20.

Network: He et al.'s CIFAR ResNet-20 (3 stages x 3 basic blocks, base widths 16/32/64), see
`supernet/nets/resnet20.py`. Each width is chosen from `ratios` of its base width, in the manner of
channel-search spaces such as AutoSlim and the ResNet spaces of Once-for-All.

Which layers are free: the residual additions force every block of a stage (and the stem, for
stage 1) to share its output width, so each stage has ONE output width (`stages`, 3 decisions);
the inner conv of each block (its first conv, `inner`, 9 decisions) is free. Downsampling blocks
use 1x1 projection shortcuts, so consecutive stages are independent. 12 decisions, 4^12 = 16.8M
architectures with the default ratios.

Encoding (LaNAS's linear view): one number per decision, the chosen width divided by its base
width, so wider is larger along every axis. The string form is `16.32.64-16.16.16.32.32.32.64.64.64`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from core.config import number
from core.errors import ArchError, UserError
from core.safejson import brief
from supernet.nets.resnet20 import BasicBlock, ResNet20, ResNet20Supernet, block_plan, extract_weights
from supernet.spaces.base import Cost, Space, check_choice, register_space


@dataclass(frozen=True)
class ChannelArch:
    """Output width per stage and inner width per block (stage-major)."""

    stages: tuple[int, ...]
    inner: tuple[int, ...]


@register_space("resnet20")
class ResNet20Space(Space):
    """Channel counts of a CIFAR ResNet (`blocks` per stage; 3 gives ResNet-20)."""

    name = "resnet20"

    def __init__(
        self,
        ratios: list[float] | tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
        widths: list[int] | tuple[int, ...] = (16, 32, 64),
        blocks: int = 3,
        resolution: int = 32,
    ) -> None:
        if not isinstance(ratios, (list, tuple)) or not isinstance(widths, (list, tuple)) or len(widths) != 3:
            raise UserError("resnet20 options: ratios in (0, 4], three base widths, blocks >= 1")
        ratios = tuple(number(r, "resnet20 space option ratios", float, 0.0, 4.0) for r in ratios)
        if not ratios or 0.0 in ratios:
            raise UserError("resnet20 options: ratios in (0, 4], three base widths, blocks >= 1")
        self.ratios, self.widths, self.blocks, self.resolution = (
            ratios,
            tuple(number(w, "resnet20 space option widths", int, 1, 4096) for w in widths),
            number(blocks, "resnet20 space option blocks", int, 1, 64),
            number(resolution, "resnet20 space option resolution", int, 4, 4096),
        )
        # Allowed widths per stage; duplicate widths from close ratios collapse.
        self.choices = tuple(tuple(sorted({max(1, round(r * w)) for r in ratios})) for w in self.widths)

    # ---- decisions: 3 stage widths then 3*blocks inner widths ------------------------------
    def _slots(self) -> list[tuple[str, int]]:
        """(name, stage) per decision, in encoding order."""
        if not hasattr(self, "_slot_list"):  # built once: `cost` validates on every call
            slots = [(f"stage {s + 1} width", s) for s in range(3)]
            slots += [(f"stage {s + 1} block {b + 1} inner width", s) for s in range(3) for b in range(self.blocks)]
            self._slot_list = slots
        return self._slot_list

    def _pack(self, values: list[int]) -> ChannelArch:
        return ChannelArch(tuple(int(v) for v in values[:3]), tuple(int(v) for v in values[3:]))

    def _values(self, arch: ChannelArch) -> list[int]:
        return list(arch.stages) + list(arch.inner)

    # ---- architectures -------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> ChannelArch:
        return self._pack([self.choices[s][int(rng.integers(len(self.choices[s])))] for _, s in self._slots()])

    def validate(self, arch: ChannelArch) -> None:
        if not isinstance(arch, ChannelArch):
            raise ArchError(f"resnet20 arch must be a ChannelArch, got {type(arch).__name__}")
        if len(arch.stages) != 3 or len(arch.inner) != 3 * self.blocks:
            raise ArchError(f"resnet20 arch needs 3 stage widths and {3 * self.blocks} inner widths")
        for (where, s), value in zip(self._slots(), self._values(arch)):
            check_choice(value, self.choices[s], f"resnet20 {where}")

    def encode(self, arch: ChannelArch) -> np.ndarray:
        self.validate(arch)
        bases = [self.widths[s] for _, s in self._slots()]
        return np.array([v / b for v, b in zip(self._values(arch), bases)], dtype=np.float32)

    def decode(self, vec: np.ndarray) -> ChannelArch:
        vec = np.asarray(vec, dtype=np.float64)
        if vec.shape != (self.encoding_dim,):
            raise ArchError(f"resnet20 encoding must have shape ({self.encoding_dim},), got {vec.shape}")
        values = []
        for (_, s), x in zip(self._slots(), vec):  # nearest allowed width
            opts = np.array(self.choices[s], dtype=np.float64)
            values.append(int(opts[np.abs(opts / self.widths[s] - x).argmin()]))
        return self._pack(values)

    @property
    def encoding_dim(self) -> int:
        return 3 + 3 * self.blocks

    def mutate(self, arch: ChannelArch, rng: np.random.Generator) -> ChannelArch:
        self.validate(arch)
        values = self._values(arch)
        slots = [i for i, (_, s) in enumerate(self._slots()) if len(self.choices[s]) > 1]
        if not slots:
            raise ArchError("resnet20: every decision has a single choice, nothing to mutate; give more ratios")
        i = slots[int(rng.integers(len(slots)))]
        others = [c for c in self.choices[self._slots()[i][1]] if c != values[i]]
        values[i] = others[int(rng.integers(len(others)))]
        return self._pack(values)

    def to_json(self, arch: ChannelArch) -> dict[str, Any]:
        self.validate(arch)
        return {"space": self.name, "stages": list(arch.stages), "inner": list(arch.inner)}

    def from_json(self, data: dict[str, Any]) -> ChannelArch:
        if not isinstance(data, dict) or data.get("space") != self.name:
            raise ArchError(f"resnet20 JSON must be a dict with space='resnet20', got {brief(data)}")
        try:
            arch = ChannelArch(tuple(data["stages"]), tuple(data["inner"]))
        except (KeyError, TypeError):
            raise ArchError("resnet20 JSON needs lists 'stages' and 'inner'") from None
        self.validate(arch)
        return arch

    def to_str(self, arch: ChannelArch) -> str:
        self.validate(arch)
        return ".".join(map(str, arch.stages)) + "-" + ".".join(map(str, arch.inner))

    def from_str(self, text: str) -> ChannelArch:
        parts = text.strip().split("-") if isinstance(text, str) else []
        try:
            if len(parts) != 2:
                raise ValueError
            arch = ChannelArch(*(tuple(int(v) for v in p.split(".")) for p in parts))
        except ValueError:
            raise ArchError(f"resnet20 string {text!r} must look like 16.32.64-16.16.16.32.32.32.64.64.64") from None
        self.validate(arch)
        return arch

    def size(self) -> int:
        return int(np.prod([len(self.choices[s]) for _, s in self._slots()], dtype=object))

    def largest(self) -> ChannelArch:
        return self._pack([self.choices[s][-1] for _, s in self._slots()])

    def smallest(self) -> ChannelArch:
        return self._pack([self.choices[s][0] for _, s in self._slots()])

    def decisions(self) -> dict[str, tuple[list[Any], Any]]:
        """`stageS`: the output width of stage S (1-3); `innerB`: the inner width of block B (stage-major)."""
        out: dict[str, tuple[list[Any], Any]] = {
            f"stage{s + 1}": (list(self.choices[s]), lambda a, s=s: a.stages[s]) for s in range(3)
        }
        for b in range(3 * self.blocks):
            out[f"inner{b + 1}"] = (list(self.choices[b // self.blocks]), lambda a, b=b: a.inner[b])
        return out

    def options(self) -> dict[str, Any]:
        return {
            "ratios": list(self.ratios),
            "widths": list(self.widths),
            "blocks": self.blocks,
            "resolution": self.resolution,
        }

    @property
    def input_size(self) -> int:
        return self.resolution

    # ---- models ---------------------------------------------------------------------------
    def supernet(self, num_classes: int) -> nn.Module:
        big = self.largest()
        return ResNet20Supernet(big.stages, big.inner, self.blocks, num_classes)

    # ---- latency units ---------------------------------------------------------------------
    def latency_units(self, arch: ChannelArch, num_classes: int = 10) -> list[tuple]:
        """The stem, one unit per basic block (its widths and stride), the pooled classifier."""
        h = self.resolution
        keys: list[tuple] = [("stem", arch.stages[0], h)]
        for c_in, c_mid, c_out, stride in block_plan(arch.stages, arch.inner, self.blocks):
            keys.append(("block", c_in, c_mid, c_out, stride, h))
            h = (h - 1) // stride + 1
        keys.append(("head", arch.stages[-1], h, num_classes))
        return keys

    def latency_unit_choices(self, num_classes: int = 10) -> list[tuple]:
        keys: list[tuple] = [("stem", c, self.resolution) for c in self.choices[0]]
        h, prev = self.resolution, self.choices[0]
        for s, outs in enumerate(self.choices):
            for b in range(self.blocks):
                stride = 2 if s > 0 and b == 0 else 1
                for c_out in outs:
                    for c_in in prev if b == 0 else (c_out,):
                        keys.extend(("block", c_in, c_mid, c_out, stride, h) for c_mid in outs)
                h = (h - 1) // stride + 1
            prev = outs
        keys.extend(("head", c, h, num_classes) for c in self.choices[-1])
        return list(dict.fromkeys(keys))

    def latency_unit_module(self, key: tuple) -> tuple[nn.Module, tuple[int, ...]]:
        if key[0] == "stem":
            _, c, h = key
            return nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)), (
                3,
                h,
                h,
            )
        if key[0] == "block":
            _, c_in, c_mid, c_out, stride, h = key
            return BasicBlock(c_in, c_mid, c_out, stride), (c_in, h, h)
        if key[0] == "head":
            _, c, h, num_classes = key
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, num_classes)), (c, h, h)
        raise UserError(f"resnet20: unknown latency unit {key!r}")

    def build(self, arch: ChannelArch, num_classes: int) -> nn.Module:
        self.validate(arch)
        return ResNet20(arch.stages, arch.inner, self.blocks, num_classes)

    def extract(self, supernet: nn.Module, arch: ChannelArch) -> nn.Module:
        if not isinstance(supernet, ResNet20Supernet) or len(supernet.blocks) != 3 * self.blocks:
            raise ArchError("resnet20 extract needs a ResNet20Supernet built by this space's options")
        net = self.build(arch, supernet.classifier.out_features).to(supernet.classifier.weight.device)
        return extract_weights(supernet, net)

    def cost(self, arch: ChannelArch, num_classes: int = 10) -> Cost:
        """Analytic count, as `count_thop` counts: conv and linear MACs, all parameters."""
        self.validate(arch)
        side = self.resolution
        hw = side * side
        c0 = arch.stages[0]
        macs, params = 27 * c0 * hw, 27 * c0 + 2 * c0
        for c_in, c_mid, c_out, stride in block_plan(arch.stages, arch.inner, self.blocks):
            if stride == 2:
                side = (side + 1) // 2  # a padded 3x3 (and the 1x1 projection) at stride 2 gives ceil(side / 2)
                hw = side * side
            convs = 9 * c_in * c_mid + 9 * c_mid * c_out + (c_in * c_out if stride != 1 or c_in != c_out else 0)
            bns = 2 * c_mid + 2 * c_out + (2 * c_out if stride != 1 or c_in != c_out else 0)
            macs += convs * hw
            params += convs + bns
        macs += arch.stages[-1] * num_classes
        params += arch.stages[-1] * num_classes + num_classes
        return Cost(mflops=macs / 1e6, params=params / 1e6)
