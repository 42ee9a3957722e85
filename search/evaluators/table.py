"""Look metrics up in a table: one CSV row per architecture (e.g. NAS-Bench-201's `nb201.csv`).

The arch column holds `space.to_str(arch)`; the metric column is maximised and an optional report
column is carried along (searching on a cheap proxy, reporting the final accuracy). The table is
read once and kept in memory as a dict, so a lookup costs one `to_str`.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import UserError
from supernet.spaces.base import Space

from .base import Arch


@lru_cache(maxsize=4)
def load_table(path: str, arch_column: str, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """`{arch string: (value per column)}`, cached per (file, columns); one-line `UserError` on problems."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"table {path} does not exist; pass --table with a CSV (e.g. NAS-Bench-201's nb201.csv)")
    try:
        out = _read_rows(file, arch_column, columns)
    except (UnicodeDecodeError, csv.Error) as exc:  # not text, or not CSV
        raise UserError(f"table {path} is not a readable UTF-8 CSV file ({str(exc)[:80]})") from None
    if not out:
        raise UserError(f"table {path} has no rows")
    return out


def _read_rows(file: Path, arch_column: str, columns: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    with open(file, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in (arch_column, *columns):
            if col not in header:
                raise UserError(f"table {file} has no column {col!r}; its columns are {', '.join(header)}")
        out: dict[str, tuple[float, ...]] = {}
        for row in reader:
            try:
                out[row[arch_column]] = tuple(float(row[c]) for c in columns)
            except (TypeError, ValueError):
                raise UserError(f"table {file}: row {reader.line_num} has a non-numeric value in {columns}") from None
    return out


class TableEvaluator:
    """`evaluate(archs)` by lookup; an arch missing from the table is a `UserError` naming it."""

    def __init__(self, space: Space, path: str, arch_column: str = "arch", metric: str = "", report_metric: str = ""):
        if not metric:
            raise UserError("the table evaluator needs --metric COLUMN")
        self.space, self.path = space, path
        self.columns = (metric, report_metric) if report_metric else (metric,)
        self.rows = load_table(str(path), arch_column, self.columns)

    def lookup(self, arch: Arch) -> tuple[float, ...]:
        key = self.space.to_str(arch)
        try:
            return self.rows[key]
        except KeyError:
            raise UserError(f"arch {key} is not in table {self.path}; does the table match --space?") from None

    def evaluate(self, archs: list[Arch]) -> list[dict[str, Any]]:
        out = []
        for arch in archs:
            values = self.lookup(arch)
            res: dict[str, Any] = {"metric": values[0]}
            if len(values) > 1:
                res["report_metric"] = values[1]
            out.append(res)
        return out

    def best(self) -> float:
        """The table's best metric value (the target of the benchmark)."""
        return max(v[0] for v in self.rows.values() if not math.isnan(v[0]))
