"""One journal line per evaluated architecture, shared by the in-process and the asynchronous loops."""

from __future__ import annotations

from typing import Any

from supernet.spaces.base import Space


def make_record(space: Space, arch: Any, result: dict[str, Any], index: int, seconds: float, num_classes: int) -> dict:
    try:
        cost = space.cost(arch, num_classes)
        mflops, params = float(cost.mflops), float(cost.params)
    except NotImplementedError:  # a user space without a cost model
        mflops = params = None
    rec = {k: v for k, v in result.items() if k not in ("metric", "report_metric")}
    rec.update(
        index=index,
        arch=space.to_json(arch),
        str=space.to_str(arch),
        canonical=space.to_str(space.canonical(arch)),
        encoding=[float(v) for v in space.encode(arch)],
        metric=result["metric"],
        report_metric=result.get("report_metric"),
        mflops=mflops,
        params=params,
        seconds=round(seconds, 6),
    )
    return rec


def next_index(records: list[dict]) -> int:
    """The index of the next journal line: one past the highest index that any record holds."""
    indices = [r.get("index") for r in records]
    return max((i for i in indices if isinstance(i, int) and not isinstance(i, bool)), default=-1) + 1
