"""Random search: uniform samples from the space, never repeating a canonical architecture.

The baseline every NAS paper should beat (Li & Talwalkar, "Random Search and Reproducibility for
Neural Architecture Search", 2019).
"""

from __future__ import annotations

from supernet.spaces.base import Space

from .base import Arch, Constraint, Searcher, check_opt


class RandomSearch(Searcher):
    """Uniform random sampling of new feasible architectures."""

    name = "random"

    def __init__(
        self, space: Space, rng_seed: int, constraint: Constraint | None = None, max_tries: int = 10000
    ) -> None:
        super().__init__(space, rng_seed, constraint)
        check_opt(max_tries >= 1, f"random search: max_tries must be >= 1, got {max_tries}")
        self.max_tries = int(max_tries)  # draws per proposal before concluding the space is used up

    def _propose(self, n: int) -> list[Arch]:
        out: list[Arch] = []
        while len(out) < n:
            arch = self.random_new(self.max_tries)
            if arch is None:
                break
            self._take(arch, out)
        return out
