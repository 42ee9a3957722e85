"""Regularized (aging) evolution, after Real et al., "Regularized Evolution for Image Classifier
Architecture Search" (AAAI 2019).

A population of the `population` most recent architectures; each child is a one-decision mutation
(`space.mutate`) of the best of `sample_size` members drawn at random, and the oldest member dies
when a child joins. Only new architectures are proposed (by canonical form), so every evaluation
counts a distinct network. Until the population is full, children are random samples.
"""

from __future__ import annotations

import math

from supernet.spaces.base import Space

from .base import Arch, Constraint, Searcher, check_opt


class RegularizedEvolution(Searcher):
    """Aging evolution with tournament selection and one-decision mutations."""

    name = "evolution"

    def __init__(
        self,
        space: Space,
        rng_seed: int,
        constraint: Constraint | None = None,
        population: int = 20,
        sample_size: int = 5,
        mutation_tries: int = 100,
    ) -> None:
        super().__init__(space, rng_seed, constraint)
        check_opt(population >= 2, f"evolution: population must be >= 2, got {population}")
        check_opt(
            1 <= sample_size <= population, f"evolution: sample_size must be in [1, population], got {sample_size}"
        )
        check_opt(mutation_tries >= 1, f"evolution: mutation_tries must be >= 1, got {mutation_tries}")
        self.population = int(population)
        self.sample_size = int(sample_size)
        self.mutation_tries = int(mutation_tries)

    def _members(self) -> list[tuple[Arch, float]]:
        """The living population: the most recent `population` successful evaluations."""
        members = [(a, m) for a, m in zip(self.archs, self.metrics) if math.isfinite(m)]
        return members[-self.population :]

    def _child(self, members: list[tuple[Arch, float]]) -> Arch | None:
        for _ in range(self.mutation_tries):
            idx = self.rng.choice(len(members), size=self.sample_size, replace=False)
            parent = max((members[i] for i in idx), key=lambda am: am[1])[0]
            child = self.space.mutate(parent, self.rng)
            if self.is_new(child):
                return child
        # A parent whose neighbours are all used up: a random new arch keeps the search going.
        return self.random_new()

    def _propose(self, n: int) -> list[Arch]:
        members = self._members()
        out: list[Arch] = []
        for _ in range(n):
            if len(members) < self.population:
                arch = self.random_new()
            else:
                arch = self._child(members)
            if arch is None:
                break
            self._take(arch, out)
        return out
