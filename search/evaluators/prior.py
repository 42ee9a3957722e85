"""A prior: an evaluator's score averaged, as a percentile, with the arch's size or a zero-cost proxy.

A weight-sharing supernet trained for a few epochs errs in a structured way: it favours the cells
that converge fastest, not the ones that end best (docs/nb201_oneshot.md, "Where the rankings err").
Parameter count errs elsewhere, so the equal-weight average of the two percentiles can rank better
than either (measured in docs/nb201_oneshot.md, "A size prior"); zero-cost proxy work
combines estimators by the same kind of vote (Abdelfattah et al., ICLR 2021; White et al., NeurIPS
2021). Nothing here sees a label: the score's percentile is taken against the scores of `reference`
architectures drawn uniformly from the space, the size's against `cost_samples` uniform draws.

Percentiles come from the empirical CDF (mid-ranks), interpolated linearly between distinct values
and extended linearly beyond them, so they are continuous and keep increasing past the best
reference score (`Percentile`). The combined metric is `50 * (F_score + F_size)`, 0 to 100 within
the references' range and above 100 beyond it; the evaluator's own score is kept as "raw_metric"
and the size percentile as "size_percentile". A failed evaluation (NaN) stays NaN. The reference
architectures are evaluated in addition to the search's budget.

`--prior gradnorm` takes the percentile of a zero-cost proxy instead of the size: the log gradient
norm at initialisation (`gradnorm.py`), placed against the same reference architectures and kept
as "gradnorm" and "gradnorm_percentile". It predicts how well a cell trains in a short schedule,
which a briefly trained supernet sees poorly among cells of equal cost (what it does in the demo's
search: docs/demo.md, "Search options").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from core.errors import UserError
from supernet.spaces.base import Space

SIZES = ("params", "mflops")
PRIORS = (*SIZES, "gradnorm")


class Percentile:
    """The empirical CDF of `values` (mid-ranks), linear between distinct values and extended beyond.

    Beyond the smallest and the largest value it continues with the slope of the outer tenth of the
    values, so architectures scored above every reference keep their order instead of sharing 1.0.
    """

    def __init__(self, values: Sequence[float]) -> None:
        v = np.sort(np.asarray([x for x in values if math.isfinite(x)], dtype=float))
        if len(v) < 2 or v[0] == v[-1]:
            raise UserError(f"a size prior needs at least 2 distinct finite reference scores, got {len(set(v))}")
        self.x, first = np.unique(v, return_index=True)
        last = np.r_[first[1:], len(v)] - 1
        self.p = (first + last + 1) / 2 / len(v)  # mid-rank of each distinct value, in (0, 1)
        k = max(1, len(self.x) // 10)
        self.lo_slope = (self.p[k] - self.p[0]) / (self.x[k] - self.x[0])
        self.hi_slope = (self.p[-1] - self.p[-1 - k]) / (self.x[-1] - self.x[-1 - k])

    def __call__(self, x: float) -> float:
        if math.isnan(x) or x == -math.inf:
            return 0.0
        if x < self.x[0]:
            return float(max(0.0, self.p[0] - (self.x[0] - x) * self.lo_slope))
        if x > self.x[-1]:
            return float(self.p[-1] + (x - self.x[-1]) * self.hi_slope)
        return float(np.interp(x, self.x, self.p))


class SizePrior:
    """Wraps an evaluator: metric = 50 * (percentile of its score + percentile of the arch's size or proxy).

    `size` is "params", "mflops" or "gradnorm"; the last needs `proxy(arch) -> float` (a `GradNorm`).
    """

    def __init__(
        self,
        inner: Any,
        space: Space,
        *,
        size: str = "params",
        reference: int = 100,
        reference_scores: Sequence[float] | None = None,
        cost_samples: int = 2000,
        seed: int = 0,
        proxy: Callable[[Hashable], float] | None = None,
    ) -> None:
        if size not in PRIORS:
            raise UserError(f"prior {size!r}: choose one of {', '.join(PRIORS)}")
        if size == "gradnorm" and proxy is None:
            raise UserError("the gradnorm prior needs its proxy (search.evaluators.gradnorm.GradNorm)")
        self.inner, self.space, self.size = inner, space, size
        self.measure = proxy if size == "gradnorm" else self._log_size  # the per-arch value whose percentile counts
        rng = np.random.default_rng([seed, 0x512E])
        if size in SIZES:
            self.size_cdf = Percentile([self._log_size(space.sample(rng)) for _ in range(cost_samples)])
        if reference_scores is None or size == "gradnorm":
            if reference < 2:
                raise UserError(f"--prior-reference must be >= 2 architectures, got {reference}")
            archs = [space.sample(rng) for _ in range(reference)]
        if reference_scores is None:
            reference_scores = [r["metric"] for r in inner.evaluate(archs)]
        if size == "gradnorm":
            self.size_cdf = Percentile([self.measure(a) for a in archs])
        self.score_cdf = Percentile(reference_scores)

    @property
    def cache(self) -> dict[Hashable, Any]:
        return getattr(self.inner, "cache", {})

    def _log_size(self, arch: Hashable) -> float:
        cost = self.space.cost(arch)
        return math.log(max(cost.params if self.size == "params" else cost.mflops, 1e-12))

    def combine(self, arch: Hashable, score: float) -> dict[str, float]:
        """The combined metric of `arch` whose evaluator score is `score`."""
        value = self.measure(arch)
        size_pct = self.size_cdf(value)
        metric = 50.0 * (self.score_cdf(score) + size_pct) if not math.isnan(score) else math.nan  # failed stays failed
        if self.size == "gradnorm":
            return {"metric": metric, "raw_metric": score, "gradnorm": value, "gradnorm_percentile": size_pct}
        return {"metric": metric, "raw_metric": score, "size_percentile": size_pct}

    def evaluate(self, archs: list[Hashable]) -> list[dict[str, Any]]:
        out = []
        for arch, res in zip(archs, self.inner.evaluate(archs), strict=True):
            out.append({**res, **self.combine(arch, float(res["metric"]))})
        return out
