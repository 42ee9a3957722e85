"""EfficientNet / MobileNetV3 MBConv search space (Tan & Le 2019; Once-for-All, Cai et al. 2020).

Decisions: input resolution; per searchable stage a depth and a width multiplier; per active block
a depthwise kernel size and an expand ratio. The stage table is EfficientNet-B0's (channels 24, 40,
80, 112, 192, 320 after a fixed stem and expand-1 block), so B0 itself is in the space at 224
(`space.efficientnet_b0()`). `stem="cifar"` uses a stride-1 stem and one less stride-2 stage for
32x32 inputs (32 -> 4 before the head instead of 224 -> 7).

The arch stores only active blocks (kernels[s] and expands[s] have length depth[s]), so two archs
that differ in blocks they do not run cannot be told apart: the arch is its own canonical form.
Encoding: per stage per block slot up to the largest depth, a one-hot of the kernel and a one-hot
of the expand ratio, zeros for an inactive slot; then one-hots of resolution and per-stage width
(omitted where there is only one choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from torch import nn

from core.config import number
from core.errors import ArchError, UserError
from core.safejson import brief, first_line
from ops.mbconv import MBConv, make_divisible, se_channels
from supernet.nets.mbconv import Layout, MBConvNet, MBConvSupernet, copy_into, stem_layers
from supernet.spaces.base import Cost, Space, check_choice, register_space

B0_CHANNELS = (24, 40, 80, 112, 192, 320)
B0_KERNELS = ((3, 3), (5, 5), (3, 3, 3), (5, 5, 5), (5, 5, 5, 5), (3,))
STRIDES = {"imagenet": (2, 2, 2, 1, 2, 1), "cifar": (1, 2, 2, 1, 2, 1)}


@dataclass(frozen=True)
class MBConvArch:
    """Resolution, per-stage width multiplier, and per active block its kernel and expand ratio."""

    resolution: int
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[int, ...], ...]
    widths: tuple[float, ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(k) for k in self.kernels)


@register_space("mbconv")
class MBConvSpace(Space):
    """Elastic depth / kernel / expand / width / resolution over EfficientNet-B0's stage table."""

    name = "mbconv"

    def __init__(
        self,
        stem: str = "imagenet",
        resolutions: list[int] | tuple[int, ...] | None = None,
        depths: list[int] | tuple[int, ...] = (1, 2, 3, 4),
        kernels: list[int] | tuple[int, ...] = (3, 5, 7),
        expands: list[int] | tuple[int, ...] = (3, 4, 6),
        widths: list[float] | tuple[float, ...] = (1.0,),
        width_mult: float = 1.0,
        kernel_transform: bool = False,
        dropout: float = 0.2,
        drop_path: float = 0.0,
    ) -> None:
        if not isinstance(stem, str) or stem not in STRIDES:
            raise UserError(f"mbconv space: stem={stem!r}; use 'imagenet' (224x224) or 'cifar' (32x32)")
        self.stem = stem

        def ints(name: str, values: Any, low: int, high: int) -> tuple[int, ...]:
            if not isinstance(values, (list, tuple)) or not values:
                raise UserError(f"mbconv space option {name}={brief(values, 40)}: give a non-empty list")
            return tuple(sorted(number(v, f"mbconv space option {name}", int, low, high) for v in values))

        self.resolutions = ints("resolutions", resolutions or ((224,) if stem == "imagenet" else (32,)), 1, 4096)
        self.depths = ints("depths", depths, 1, 64)
        self.kernels = ints("kernels", kernels, 1, 31)
        self.expands = ints("expands", expands, 1, 64)
        if not isinstance(widths, (list, tuple)) or not widths:
            raise UserError(f"mbconv space option widths={brief(widths, 40)}: give a non-empty list")
        self.widths = tuple(sorted(number(w, "mbconv space option widths", float, 0.0, 64.0) for w in widths))
        self.width_mult = number(width_mult, "mbconv space option width_mult", float, 0.0, 64.0)
        self.kernel_transform = bool(kernel_transform)
        self.dropout = number(dropout, "mbconv space option dropout", float, 0.0, 1.0)
        self.drop_path = number(drop_path, "mbconv space option drop_path", float, 0.0, 1.0)
        if min(self.depths) < 1 or any(k % 2 == 0 for k in self.kernels) or min(self.expands) < 1:
            raise UserError("mbconv space: depths >= 1, odd kernels and expand ratios >= 1 are required")
        if min(self.widths) <= 0 or self.width_mult <= 0 or min(self.resolutions) < 8:
            raise UserError("mbconv space: widths, width_mult must be > 0 and resolutions >= 8")
        ch = lambda c: make_divisible(c * self.width_mult)  # noqa: E731
        self.layout = Layout(ch(32), 2 if stem == "imagenet" else 1, ch(16), B0_CHANNELS, STRIDES[stem], ch(1280), 0.25)
        self.n_stages = len(B0_CHANNELS)
        # Channels of stage s at width index w.
        self.stage_ch = tuple(tuple(ch(c * w) for w in self.widths) for c in B0_CHANNELS)
        self._w_index = {w: i for i, w in enumerate(self.widths)}

    def decisions(self) -> dict[str, tuple[list[Any], Any]]:
        """`depthS`: the depth of searchable stage S (1-6); `resolution` and `widthS` where they vary."""
        out: dict[str, tuple[list[Any], Any]] = {
            f"depth{s + 1}": (list(self.depths), lambda a, s=s: len(a.kernels[s])) for s in range(self.n_stages)
        }
        if len(self.resolutions) > 1:
            out["resolution"] = (list(self.resolutions), lambda a: a.resolution)
        if len(self.widths) > 1:
            out.update({f"width{s + 1}": (list(self.widths), lambda a, s=s: a.widths[s]) for s in range(self.n_stages)})
        return out

    def options(self) -> dict[str, Any]:
        return {
            "stem": self.stem, "resolutions": list(self.resolutions), "depths": list(self.depths),
            "kernels": list(self.kernels), "expands": list(self.expands), "widths": list(self.widths),
            "width_mult": self.width_mult, "kernel_transform": self.kernel_transform,
            "dropout": self.dropout, "drop_path": self.drop_path,
        }  # fmt: skip

    @property
    def input_size(self) -> int:
        return max(self.resolutions)

    # ---- architectures -------------------------------------------------------------------
    def _make(self, res: int, depth: list[int], ks: list, es: list, ws: list) -> MBConvArch:
        return MBConvArch(int(res), tuple(map(tuple, ks)), tuple(map(tuple, es)), tuple(float(w) for w in ws))

    def sample(self, rng: np.random.Generator) -> MBConvArch:
        pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
        ds = [pick(self.depths) for _ in range(self.n_stages)]
        return self._make(
            pick(self.resolutions), ds,
            [[pick(self.kernels) for _ in range(d)] for d in ds],
            [[pick(self.expands) for _ in range(d)] for d in ds],
            [pick(self.widths) for _ in range(self.n_stages)],
        )  # fmt: skip

    def validate(self, arch: MBConvArch) -> None:
        if not isinstance(arch, MBConvArch):
            raise ArchError(f"mbconv: expected an MBConvArch, got {type(arch).__name__}")
        check_choice(arch.resolution, self.resolutions, "mbconv: resolution")
        for field in ("kernels", "expands", "widths"):
            value = getattr(arch, field)
            if not isinstance(value, tuple) or len(value) != self.n_stages:
                raise ArchError(f"mbconv: {field} must be a tuple of {self.n_stages} stages, got {brief(value)}")
        for s in range(self.n_stages):
            ks, es = arch.kernels[s], arch.expands[s]
            if not isinstance(ks, tuple) or not isinstance(es, tuple) or len(ks) != len(es):
                raise ArchError(f"mbconv: stage {s}: kernels and expands must be tuples of equal length (the depth)")
            check_choice(len(ks), self.depths, f"mbconv: stage {s} depth")
            for b, (k, e) in enumerate(zip(ks, es)):
                check_choice(k, self.kernels, f"mbconv: stage {s} block {b} kernel")
                check_choice(e, self.expands, f"mbconv: stage {s} block {b} expand")
            check_choice(arch.widths[s], self.widths, f"mbconv: stage {s} width")

    @property
    def encoding_dim(self) -> int:
        nr, nw = len(self.resolutions), len(self.widths)
        slots = self.n_stages * self.depths[-1] * (len(self.kernels) + len(self.expands))
        return slots + (nr if nr > 1 else 0) + (self.n_stages * nw if nw > 1 else 0)

    def encode(self, arch: MBConvArch) -> np.ndarray:
        vec, pos = np.zeros(self.encoding_dim, dtype=np.float32), 0
        nk, ne = len(self.kernels), len(self.expands)
        for s in range(self.n_stages):
            for k, e in zip(arch.kernels[s], arch.expands[s]):
                vec[pos + self.kernels.index(k)] = 1.0
                vec[pos + nk + self.expands.index(e)] = 1.0
                pos += nk + ne
            pos += (self.depths[-1] - len(arch.kernels[s])) * (nk + ne)
        if len(self.resolutions) > 1:
            vec[pos + self.resolutions.index(arch.resolution)] = 1.0
            pos += len(self.resolutions)
        if len(self.widths) > 1:
            for w in arch.widths:
                vec[pos + self._w_index[w]] = 1.0
                pos += len(self.widths)
        return vec

    def decode(self, vec: np.ndarray) -> MBConvArch:
        vec = np.asarray(vec, dtype=np.float64).reshape(-1)
        if vec.shape[0] != self.encoding_dim:
            raise ArchError(f"mbconv: encoding has length {vec.shape[0]}, expected {self.encoding_dim}")
        nk, ne, pos = len(self.kernels), len(self.expands), 0
        ks, es = [], []
        for _ in range(self.n_stages):
            blocks = []
            for _ in range(self.depths[-1]):
                slot = vec[pos : pos + nk + ne]
                pos += nk + ne
                if slot.max() > 0.5:
                    blocks.append((self.kernels[int(np.argmax(slot[:nk]))], self.expands[int(np.argmax(slot[nk:]))]))
            # Nearest allowed depth to the number of active slots.
            d = min(self.depths, key=lambda x: (abs(x - len(blocks)), x))
            blocks = (blocks + blocks[-1:] * d)[:d] if blocks else [(self.kernels[0], self.expands[0])] * d
            ks.append([b[0] for b in blocks])
            es.append([b[1] for b in blocks])
        res = self.resolutions[0]
        if len(self.resolutions) > 1:
            res = self.resolutions[int(np.argmax(vec[pos : pos + len(self.resolutions)]))]
            pos += len(self.resolutions)
        ws = [self.widths[0]] * self.n_stages
        if len(self.widths) > 1:
            nw = len(self.widths)
            ws = [self.widths[int(np.argmax(vec[pos + s * nw : pos + (s + 1) * nw]))] for s in range(self.n_stages)]
        return self._make(res, [], ks, es, ws)

    def mutate(self, arch: MBConvArch, rng: np.random.Generator) -> MBConvArch:
        ks, es, ws = [list(k) for k in arch.kernels], [list(e) for e in arch.expands], list(arch.widths)
        res = arch.resolution
        other = lambda xs, x: [y for y in xs if y != x][int(rng.integers(len(xs) - 1))]  # noqa: E731
        kinds = ["kernel"] * (len(self.kernels) > 1) + ["expand"] * (len(self.expands) > 1)
        kinds += ["depth"] * (len(self.depths) > 1) + ["width"] * (len(self.widths) > 1)
        kinds += ["resolution"] * (len(self.resolutions) > 1)
        if not kinds:
            raise UserError("mbconv space has a single architecture: nothing to mutate")
        kind, s = kinds[int(rng.integers(len(kinds)))], int(rng.integers(self.n_stages))
        b = int(rng.integers(len(ks[s])))
        if kind == "kernel":
            ks[s][b] = other(self.kernels, ks[s][b])
        elif kind == "expand":
            es[s][b] = other(self.expands, es[s][b])
        elif kind == "width":
            ws[s] = other(self.widths, ws[s])
        elif kind == "resolution":
            res = other(self.resolutions, res)
        else:  # new blocks copy the stage's last block; removed ones are dropped from the end
            d = other(self.depths, len(ks[s]))
            ks[s], es[s] = (ks[s] + ks[s][-1:] * d)[:d], (es[s] + es[s][-1:] * d)[:d]
        return self._make(res, [], ks, es, ws)

    def size(self) -> int:
        per_stage = sum((len(self.kernels) * len(self.expands)) ** d for d in self.depths) * len(self.widths)
        return len(self.resolutions) * per_stage**self.n_stages

    def largest(self) -> MBConvArch:
        d = self.depths[-1]
        return self._make(self.resolutions[-1], [], [[self.kernels[-1]] * d] * self.n_stages,
                          [[self.expands[-1]] * d] * self.n_stages, [self.widths[-1]] * self.n_stages)  # fmt: skip

    def smallest(self) -> MBConvArch:
        d = self.depths[0]
        return self._make(self.resolutions[0], [], [[self.kernels[0]] * d] * self.n_stages,
                          [[self.expands[0]] * d] * self.n_stages, [self.widths[0]] * self.n_stages)  # fmt: skip

    def efficientnet_b0(self) -> MBConvArch:
        """EfficientNet-B0 (with width_mult=1.0 and stem="imagenet" it is exactly timm's efficientnet_b0)."""
        arch = MBConvArch(224, B0_KERNELS, tuple((6,) * len(k) for k in B0_KERNELS), (1.0,) * self.n_stages)
        self.validate(arch)
        return arch

    # ---- serialisation ---------------------------------------------------------------------
    def to_json(self, arch: MBConvArch) -> dict[str, Any]:
        return {
            "space": self.name, "resolution": arch.resolution, "kernels": [list(k) for k in arch.kernels],
            "expands": [list(e) for e in arch.expands], "widths": list(arch.widths),
        }  # fmt: skip

    def from_json(self, data: dict[str, Any]) -> MBConvArch:
        if not isinstance(data, dict) or data.get("space", self.name) != self.name:
            raise ArchError(f"mbconv: not an mbconv arch: {brief(data)}")
        try:
            arch = self._make(data["resolution"], [], [[int(k) for k in s] for s in data["kernels"]],
                              [[int(e) for e in s] for s in data["expands"]], data["widths"])  # fmt: skip
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArchError(
                f"mbconv: malformed JSON arch ({first_line(exc, 80)}); give resolution/kernels/expands/widths"
            ) from None
        self.validate(arch)
        return arch

    def to_str(self, arch: MBConvArch) -> str:
        stages = (
            f"{w:g}:" + ".".join(f"k{k}e{e}" for k, e in zip(ks, es))
            for ks, es, w in zip(arch.kernels, arch.expands, arch.widths)
        )
        return f"r{arch.resolution}|" + "|".join(stages)

    def from_str(self, text: str) -> MBConvArch:
        try:
            head, *stages = text.strip().split("|")
            ks, es, ws = [], [], []
            for st in stages:
                w, blocks = st.split(":")
                pairs = [b[1:].split("e") for b in blocks.split(".")]
                ks.append([int(k) for k, _ in pairs])
                es.append([int(e) for _, e in pairs])
                ws.append(float(w))
            if not head.startswith("r"):
                raise ValueError(head)
            arch = self._make(int(head[1:]), [], ks, es, ws)
        except ValueError:
            raise ArchError(f"mbconv: cannot parse {text[:80]!r}; expected 'r224|1:k3e6.k5e6|...'") from None
        self.validate(arch)
        return arch

    # ---- models ---------------------------------------------------------------------------
    def _blocks(self, arch: MBConvArch) -> list[tuple[int, int, int, int, int]]:
        """(in, out, kernel, stride, expand) per active block."""
        out, c_in = [], self.layout.first_ch
        for s in range(self.n_stages):
            c_out = self.stage_ch[s][self._w_index[arch.widths[s]]]
            for b, (k, e) in enumerate(zip(arch.kernels[s], arch.expands[s])):
                out.append((c_in if b == 0 else c_out, c_out, k, self.layout.strides[s] if b == 0 else 1, e))
            c_in = c_out
        return out

    def _plan(self, arch: MBConvArch) -> list[tuple[int, int, int, int, int]]:
        """(stage, block, kernel, expand, out channels) per active block, for the supernet."""
        return [
            (s, b, k, e, self.stage_ch[s][self._w_index[arch.widths[s]]])
            for s in range(self.n_stages)
            for b, (k, e) in enumerate(zip(arch.kernels[s], arch.expands[s]))
        ]

    def supernet(self, num_classes: int) -> nn.Module:
        max_ch = tuple(c[-1] for c in self.stage_ch)
        return MBConvSupernet(
            self.layout, max_ch, self.depths[-1], self.kernels, self.expands[-1], num_classes, self._plan,
            self.kernel_transform,
        )  # fmt: skip

    def build(self, arch: MBConvArch, num_classes: int) -> nn.Module:
        self.validate(arch)
        return MBConvNet(self.layout, self._blocks(arch), num_classes, self.dropout, self.drop_path)

    def extract(self, supernet: nn.Module, arch: MBConvArch) -> nn.Module:
        net = self.build(arch, supernet.classifier.out_features).to(supernet.classifier.weight.device)
        return copy_into(net, supernet, arch)

    def cost(self, arch: MBConvArch, num_classes: int = 10) -> Cost:
        lay = self.layout
        h = (arch.resolution - 1) // lay.stem_stride + 1
        macs, params = lay.stem_ch * 27 * h * h, lay.stem_ch * 29
        m, p, h = _block_cost(lay.stem_ch, lay.first_ch, 3, 1, 1, h, lay.se_ratio)
        macs, params, c = macs + m, params + p, lay.first_ch
        for blk in self._blocks(arch):
            m, p, h = _block_cost(*blk, h, lay.se_ratio)
            macs, params, c = macs + m, params + p, blk[1]
        macs += lay.head_ch * c * h * h + lay.head_ch * num_classes
        params += lay.head_ch * (c + 2) + (lay.head_ch + 1) * num_classes
        return Cost(macs / 1e6, params / 1e6)

    # ---- latency units ---------------------------------------------------------------------
    def latency_units(self, arch: MBConvArch, num_classes: int = 10) -> list[tuple]:
        """The stem at the resolution, one unit per active block (shape, kernel, expand), the head."""
        h = (arch.resolution - 1) // self.layout.stem_stride + 1
        keys: list[tuple] = [("stem", arch.resolution)]
        c = self.layout.first_ch
        for c_in, c, k, stride, e in self._blocks(arch):
            keys.append(("mb", c_in, c, k, stride, e, h))
            h = (h - 1) // stride + 1  # odd kernels, padding k // 2
        keys.append(("head", c, h, num_classes))
        return keys

    def latency_unit_choices(self, num_classes: int = 10) -> list[tuple]:
        keys: list[tuple] = []
        for res in self.resolutions:
            h = (res - 1) // self.layout.stem_stride + 1
            keys.append(("stem", res))
            prev = (self.layout.first_ch,)
            for s in range(self.n_stages):
                stride, outs = self.layout.strides[s], self.stage_ch[s]
                for b in range(self.depths[-1]):
                    ins = prev if b == 0 else None
                    for c_out in outs:
                        for c_in in ins or (c_out,):
                            for k in self.kernels:
                                for e in self.expands:
                                    keys.append(("mb", c_in, c_out, k, stride if b == 0 else 1, e, h))
                    if b == 0:
                        h = (h - 1) // stride + 1
                prev = outs
            keys.extend(("head", c, h, num_classes) for c in self.stage_ch[-1])
        return list(dict.fromkeys(keys))

    def latency_unit_module(self, key: tuple) -> tuple[nn.Module, tuple[int, ...]]:
        lay = self.layout
        if key[0] == "stem":
            return stem_layers(lay), (3, key[1], key[1])
        if key[0] == "mb":
            _, c_in, c_out, k, stride, e, h = key
            return MBConv(c_in, c_out, k, stride, e, lay.se_ratio), (c_in, h, h)
        if key[0] == "head":
            _, c, h, num_classes = key
            head = nn.Sequential(
                nn.Conv2d(c, lay.head_ch, 1, bias=False), nn.BatchNorm2d(lay.head_ch), nn.SiLU(inplace=True),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(lay.head_ch, num_classes),
            )  # fmt: skip
            return head, (c, h, h)
        raise UserError(f"mbconv: unknown latency unit {key!r}")


@cache
def _block_cost(c_in: int, c_out: int, k: int, stride: int, e: int, h: int, se: float) -> tuple[int, int, int]:
    """(MACs, params, output size) of one MBConv: conv and linear MACs only, BN params included."""
    mid, rd = c_in * e, se_channels(c_in, se)
    ho = (h + 2 * (k // 2) - k) // stride + 1
    macs = mid * k * k * ho * ho + 2 * rd * mid + c_out * mid * ho * ho
    params = mid * k * k + 2 * mid + 2 * rd * mid + rd + mid + mid * c_out + 2 * c_out
    if e != 1:
        macs += mid * c_in * h * h
        params += c_in * mid + 2 * mid
    return macs, params, ho
