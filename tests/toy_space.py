"""A synthetic search space with a known optimum, for testing and timing searchers without a model.

`ToySpace(decisions=d, choices=k)` has k**d architectures (tuples of d choice indices) and a
one-hot encoding of d*k dims. `ToySpace.score(arch)` is a chain-structured objective (one weight
per decision and choice, plus one per pair of neighbouring decisions) drawn from the space's seed,
so the optimum is exactly known by dynamic programming (`ToySpace.optimum()`), and the landscape
has interactions that a purely additive model cannot fit. `evaluate` is a ready-made user evaluator
(`--evaluator tests.toy_space:evaluate` with `--space tests.toy_space:ToySpace`).

It registers as the built-in-free `module:Class` example of the user-space path; it has no networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from core.config import number
from core.errors import ArchError, UserError
from core.safejson import brief
from supernet.spaces.base import Cost, Space

ToyArch = tuple[int, ...]


class ToySpace(Space):
    """d decisions of k choices each; cost grows with the chosen indices (for FLOPs-bound tests)."""

    name = "toy"

    def __init__(self, decisions: int = 6, choices: int = 4, seed: int = 0, interaction: float = 0.5) -> None:
        decisions = number(decisions, "toy space option decisions", int, 1, 10_000)
        choices = number(choices, "toy space option choices", int, 2, 10_000)
        seed = number(seed, "toy space option seed", int, 0, 2**32 - 1)
        self.d, self.k, self.seed = decisions, choices, seed
        self.interaction = number(interaction, "toy space option interaction", float)
        rng = np.random.default_rng(seed)
        self.unary = rng.normal(size=(self.d, self.k))
        self.pair = self.interaction * rng.normal(size=(max(self.d - 1, 0), self.k, self.k))

    # ---- architectures -----------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> ToyArch:
        return tuple(int(c) for c in rng.integers(0, self.k, size=self.d))

    def validate(self, arch: Any) -> None:
        if not isinstance(arch, tuple) or len(arch) != self.d:
            raise ArchError(f"toy arch must be a tuple of {self.d} choices, got {brief(arch)}")
        for i, c in enumerate(arch):
            if not isinstance(c, (int, np.integer)) or not 0 <= c < self.k:
                raise ArchError(f"toy arch decision {i}: {brief(c, 40)} is not in 0..{self.k - 1}")

    def encode(self, arch: ToyArch) -> np.ndarray:
        vec = np.zeros(self.d * self.k, dtype=np.float32)
        vec[np.arange(self.d) * self.k + np.asarray(arch)] = 1.0
        return vec

    def decode(self, vec: np.ndarray) -> ToyArch:
        return tuple(int(i) for i in np.asarray(vec).reshape(self.d, self.k).argmax(axis=1))

    @property
    def encoding_dim(self) -> int:
        return self.d * self.k

    def mutate(self, arch: ToyArch, rng: np.random.Generator) -> ToyArch:
        i = int(rng.integers(self.d))
        new = int(rng.integers(self.k - 1))
        new += new >= arch[i]  # any choice but the current one
        return arch[:i] + (new,) + arch[i + 1 :]

    def to_json(self, arch: ToyArch) -> dict[str, Any]:
        return {"space": self.name, "choices": [int(c) for c in arch]}

    def from_json(self, data: dict[str, Any]) -> ToyArch:
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise ArchError(f"toy arch JSON needs a 'choices' list, got {brief(data)}")
        arch = tuple(data["choices"])
        self.validate(arch)
        return arch

    def to_str(self, arch: ToyArch) -> str:
        return "-".join(str(c) for c in arch)

    def from_str(self, text: str) -> ToyArch:
        try:
            arch = tuple(int(t) for t in text.split("-"))
        except ValueError:
            raise ArchError(f"toy arch string {text!r} must look like 0-1-3") from None
        self.validate(arch)
        return arch

    def size(self) -> int:
        return self.k**self.d

    def options(self) -> dict[str, Any]:
        return {"decisions": self.d, "choices": self.k, "seed": self.seed, "interaction": self.interaction}

    # ---- the known objective -----------------------------------------------------------------
    def score(self, arch: ToyArch) -> float:
        a = np.asarray(arch)
        total = self.unary[np.arange(self.d), a].sum()
        if self.d > 1:
            total += self.pair[np.arange(self.d - 1), a[:-1], a[1:]].sum()
        return float(total)

    def optimum(self) -> tuple[ToyArch, float]:
        """The best architecture and its score, by dynamic programming along the chain."""
        best = self.unary[0].copy()  # best[c]: best prefix score ending with choice c
        back = []
        for i in range(1, self.d):
            cand = best[:, None] + self.pair[i - 1] + self.unary[i][None, :]
            back.append(cand.argmax(axis=0))
            best = cand.max(axis=0)
        last = int(best.argmax())
        arch = [last]
        for ptr in reversed(back):
            arch.append(int(ptr[arch[-1]]))
        arch.reverse()
        return tuple(arch), float(best.max())

    # ---- models: none ------------------------------------------------------------------------
    def cost(self, arch: ToyArch, num_classes: int = 10) -> Cost:
        return Cost(mflops=10.0 + float(sum(arch)), params=0.1 * (1 + sum(arch)))

    def supernet(self, num_classes: int) -> nn.Module:
        raise UserError("the toy space has no networks; use it with a table or function evaluator")

    def build(self, arch: ToyArch, num_classes: int) -> nn.Module:
        raise UserError("the toy space has no networks; use it with a table or function evaluator")

    def extract(self, supernet: nn.Module, arch: ToyArch) -> nn.Module:
        raise UserError("the toy space has no networks; use it with a table or function evaluator")


def evaluate(archs: list[ToyArch], space: ToySpace | None = None) -> list[dict[str, float]]:
    """A user-evaluator example: the toy objective of each arch (default toy space options)."""
    space = space or ToySpace()
    return [{"metric": space.score(a)} for a in archs]
