"""The evaluator contract: `evaluate(archs) -> list[dict]`, one dict per arch with at least "metric".

Optional keys: "report_metric" (recorded, never searched on; e.g. a test accuracy in a benchmark
table) and anything else worth journaling. Higher "metric" is better; NaN marks a failed
evaluation. Evaluators see architectures only; the search loop adds costs and timing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from core.errors import UserError
from supernet.spaces.base import Arch, Space


@runtime_checkable
class Evaluator(Protocol):
    """Anything with `evaluate(archs) -> list[dict]` (each dict holding a float "metric")."""

    def evaluate(self, archs: list[Arch]) -> list[dict[str, Any]]: ...


class FunctionEvaluator:
    """A user's `module:function`, called as `function(archs, space)`.

    The function returns one entry per arch: a float metric or a dict with at least "metric".
    """

    def __init__(self, fn: Callable[..., Any], space: Space, name: str = "function") -> None:
        self.fn, self.space, self.name = fn, space, name

    def evaluate(self, archs: list[Arch]) -> list[dict[str, Any]]:
        results = list(self.fn(list(archs), self.space))
        if len(results) != len(archs):
            raise UserError(f"evaluator {self.name} returned {len(results)} results for {len(archs)} archs")
        return [normalise(r, self.name) for r in results]


def normalise(result: Any, name: str) -> dict[str, Any]:
    """A result as a dict with a float "metric"; `UserError` naming the evaluator otherwise."""
    if isinstance(result, dict):
        if "metric" not in result:
            raise UserError(f"evaluator {name} returned a dict without a 'metric' key: {sorted(result)}")
        out = dict(result)
    else:
        out = {"metric": result}
    try:
        out["metric"] = float(out["metric"])
        if out.get("report_metric") is not None:
            out["report_metric"] = float(out["report_metric"])
    except (TypeError, ValueError):
        raise UserError(f"evaluator {name} returned a metric that is not a number: {out['metric']!r}") from None
    return out
