"""Which subnets a supernet training step trains: a pure function of (seed, global step).

- uniform: one random architecture per step (single-path one-shot, SPOS; one-shot LaNAS).
- sandwich: the largest, the smallest and k random ones (BigNAS, AttentiveNAS); the first is the
  in-place distillation teacher of the others.
- fair: for cell spaces, m architectures per step in which every candidate op of every edge appears
  exactly once (FairNAS's strict fairness).
- flops: one random architecture whose MFLOPs lie in a range.

Because the choice depends only on (seed, step), every rank samples the same architectures and a
resumed run samples what the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from core.errors import UserError
from supernet.spaces.base import Space

MAX_FLOPS_TRIES = 2000


class ArchSampler:
    """`archs(step)`: the list of architectures trained at a global step."""

    def __init__(
        self,
        space: Space,
        strategy: str,
        seed: int,
        *,
        sandwich_k: int = 2,
        min_mflops: float = 0.0,
        max_mflops: float = 0.0,
        num_classes: int = 10,
    ) -> None:
        self.space, self.strategy, self.seed = space, strategy, seed
        self.sandwich_k, self.min_mflops, self.max_mflops = sandwich_k, min_mflops, max_mflops
        self.num_classes = num_classes
        if strategy == "sandwich" and (space.largest() is None or space.smallest() is None):
            raise UserError(
                f"--strategy sandwich needs a space with a largest and smallest arch; {space.name} has none"
            )
        if strategy == "fair" and not hasattr(space, "fair_archs"):
            raise UserError(f"--strategy fair needs a cell space (nasnet, nb201); {space.name} has no op-per-edge form")
        if strategy == "flops":
            if not max_mflops and not min_mflops:
                raise UserError("--strategy flops needs --min-mflops and/or --max-mflops")
            self._probe_flops_range()

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, 0x5A3])

    def archs(self, step: int) -> list[Hashable]:
        rng = self.rng(step)
        if self.strategy == "uniform":
            return [self.space.sample(rng)]
        if self.strategy == "sandwich":
            return [self.space.largest(), self.space.smallest()] + [
                self.space.sample(rng) for _ in range(self.sandwich_k)
            ]
        if self.strategy == "fair":
            return list(self.space.fair_archs(rng))  # type: ignore[attr-defined]
        return [self._sample_in_range(rng)]

    def _in_range(self, arch: Hashable) -> bool:
        mflops = self.space.cost(arch, self.num_classes).mflops
        return mflops >= self.min_mflops and (not self.max_mflops or mflops <= self.max_mflops)

    def _sample_in_range(self, rng: np.random.Generator) -> Hashable:
        for _ in range(MAX_FLOPS_TRIES):
            arch = self.space.sample(rng)
            if self._in_range(arch):
                return arch
        raise UserError(
            f"no architecture within [{self.min_mflops}, {self.max_mflops}] MFLOPs in {MAX_FLOPS_TRIES} draws; "
            "widen the range"
        )

    def _probe_flops_range(self) -> None:
        self._sample_in_range(np.random.default_rng([self.seed, 0x7E57]))


def panel(space: Space, seed: int, n_random: int, extremes: bool = True) -> dict[str, Hashable]:
    """A fixed panel of subnets to validate each epoch: largest and smallest (where the space has them
    and `extremes`), and n random ones."""
    out: dict[str, Hashable] = {}
    if extremes and space.largest() is not None:
        out["largest"] = space.largest()
    if extremes and space.smallest() is not None:
        out["smallest"] = space.smallest()
    rng = np.random.default_rng([seed, 0x9A4E1])
    for i in range(n_random):
        out[f"random{i}"] = space.sample(rng)
    return out
