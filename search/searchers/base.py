"""The ask/tell searcher interface shared by LaNAS, regularized evolution, random search and user searchers.

A searcher sees only a `Space` and the metrics it is told (higher is better); it never touches a
model. `propose(n)` returns up to `n` new feasible architectures, `observe(archs, metrics)` tells
it their scores, and `state_dict()` / `load_state_dict()` capture everything (history and the
numpy RNG) as plain data, so a resumed search proposes exactly what an uninterrupted one would.
The interface follows the ask/tell strategies of NNI.

Two guarantees every searcher built on this class gets for free:
- no architecture is proposed whose `space.canonical` form was already proposed or observed;
- no architecture is proposed that `constraint(arch)` rejects (FLOPs / params bounds).
"""

from __future__ import annotations

import abc
import json
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from core.errors import UserError
from supernet.spaces.base import Arch, Space

log = logging.getLogger(__name__)
Constraint = Callable[[Arch], bool]


class Searcher(abc.ABC):
    """Base class: history, de-duplication by canonical form, feasibility screening and RNG state."""

    name = "searcher"

    def __init__(self, space: Space, rng_seed: int, constraint: Constraint | None = None) -> None:
        self.space = space
        self.seed = int(rng_seed)
        self.rng = np.random.default_rng(self.seed)
        self.constraint = constraint
        self.archs: list[Arch] = []  # observed, in order
        self.metrics: list[float] = []  # same order; NaN for a failed evaluation
        self.pending: list[Arch] = []  # proposed, not yet observed
        self._seen: set[Arch] = set()  # canonical forms proposed or observed
        self._feasible: dict[Arch, bool] = {}  # constraint cache: cost models can be slow
        self._canon: dict[Arch, Arch] = {}  # canonical-form cache

    # ---- the interface ---------------------------------------------------------------------
    def propose(self, n: int) -> list[Arch]:
        """Up to `n` new, feasible, pairwise distinct architectures (fewer when the space runs out)."""
        if n < 1:
            raise UserError(f"propose(n) needs n >= 1, got {n}")
        archs = self._propose(n)
        assert len(archs) <= n, "a searcher proposed more than asked"
        self.pending.extend(archs)
        return archs

    def observe(self, archs: Iterable[Arch], metrics: Iterable[float]) -> None:
        """Record scores (higher is better); NaN marks a failed evaluation that is never retried."""
        archs, metrics = list(archs), [float(m) for m in metrics]
        if len(archs) != len(metrics):
            raise UserError(f"observe got {len(archs)} archs but {len(metrics)} metrics")
        for arch in archs:
            self._mark(arch)
            if arch in self.pending:
                self.pending.remove(arch)
        self.archs.extend(archs)
        self.metrics.extend(metrics)
        self._observed(archs, metrics)

    def restore_pending(self, archs: Iterable[Arch]) -> None:
        """Set the proposals in flight (on resume, from the run's record of what was submitted)."""
        self.pending = list(archs)
        for arch in self.pending:
            self._mark(arch)

    def state_dict(self) -> dict[str, Any]:
        """Plain data only (safe for `torch.load(weights_only=True)` and for JSON)."""
        return {
            "searcher": self.name,
            "seed": self.seed,
            # JSON text: PCG64's 128-bit integers survive any loader unchanged.
            "rng": json.dumps(self.rng.bit_generator.state),
            "archs": [self.space.to_json(a) for a in self.archs],
            "metrics": [float(m) for m in self.metrics],
            "pending": [self.space.to_json(a) for a in self.pending],
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; `UserError` if it came from another searcher."""
        if state.get("searcher") != self.name:
            raise UserError(f"saved search state is for searcher {state.get('searcher')!r}, not {self.name!r}")
        self.seed = int(state["seed"])
        self.rng = np.random.default_rng(self.seed)
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.archs = [self.space.from_json(d) for d in state["archs"]]
        self.metrics = [float(m) for m in state["metrics"]]
        self.pending = [self.space.from_json(d) for d in state["pending"]]
        self._seen = set()
        for arch in self.archs + self.pending:
            self._mark(arch)
        self._load_extra_state(state.get("extra") or {})

    # ---- hooks for subclasses ----------------------------------------------------------------
    @abc.abstractmethod
    def _propose(self, n: int) -> list[Arch]:
        """Return up to `n` architectures, each passed through `self._take` (which marks it seen)."""

    def _observed(self, archs: list[Arch], metrics: list[float]) -> None:
        """Update internal models after `observe` recorded the history."""
        return None

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        """Rebuild derived structures; the history (`self.archs`, `self.metrics`) is already loaded."""
        return None

    # ---- helpers -------------------------------------------------------------------------------
    def is_new(self, arch: Arch) -> bool:
        """Neither proposed nor observed before (by canonical form) and feasible."""
        return self.canonical(arch) not in self._seen and self.feasible(arch)

    def canonical(self, arch: Arch) -> Arch:
        """`space.canonical`, memoised (searchers ask for the same archs again and again)."""
        key = self._canon.get(arch)
        if key is None:
            if len(self._canon) > 200_000:  # bound the memory on huge spaces
                self._canon.clear()
            key = self._canon[arch] = self.space.canonical(arch)
        return key

    def feasible(self, arch: Arch) -> bool:
        if self.constraint is None:
            return True
        ok = self._feasible.get(arch)
        if ok is None:
            ok = self._feasible[arch] = bool(self.constraint(arch))
        return ok

    def _mark(self, arch: Arch) -> None:
        self._seen.add(self.canonical(arch))

    def _take(self, arch: Arch, out: list[Arch]) -> bool:
        """Append `arch` to `out` and mark it seen if it is new and feasible."""
        if not self.is_new(arch):
            return False
        self._mark(arch)
        out.append(arch)
        return True

    def random_new(self, max_tries: int = 2000) -> Arch | None:
        """A uniformly random new feasible arch, or None after `max_tries` draws (a bounded loop)."""
        for _ in range(max_tries):
            arch = self.space.sample(self.rng)
            if self.is_new(arch):
                return arch
        return None

    def finite_history(self) -> tuple[list[Arch], np.ndarray]:
        """Observed archs with a finite metric, and their metrics as an array."""
        keep = [i for i, m in enumerate(self.metrics) if math.isfinite(m)]
        return [self.archs[i] for i in keep], np.asarray([self.metrics[i] for i in keep], dtype=np.float64)

    def best(self) -> tuple[Arch, float] | None:
        archs, metrics = self.finite_history()
        if not archs:
            return None
        i = int(np.argmax(metrics))
        return archs[i], float(metrics[i])


def check_opt(ok: bool, message: str) -> None:
    """Raise a one-line `UserError` for a bad searcher option."""
    if not ok:
        raise UserError(message)
