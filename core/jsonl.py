"""Append-only JSON-lines files (metrics, search journal) that survive a crash mid-write.

Each record is one line, written in a single `write` call and flushed to disk, so a kill leaves at
most one torn last line; `read_jsonl` drops it (with a warning) and keeps every complete line.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.safejson import depth_ok

log = logging.getLogger(__name__)


def append_jsonl(path: str | Path, record: dict[str, Any], fsync: bool = True) -> None:
    """Append one record as a line; flushed (and fsynced) before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
    try:
        with open(path, "a+b") as fh:
            # A torn line from a killed writer has no newline: finish it so the new record stays whole.
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(line.encode())
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    except OSError as exc:
        # A partly written line is skipped on read and cut on resume; the complete lines stay.
        reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise UserError(f"could not append to {path}: {reason}; its complete lines are intact") from None


# The shape of the lines of the tool's own JSONL files, by file name: key -> (allowed types, required).
# A line that parses but breaks this was not written by the tool; it is refused, not guessed at.
_NUMBER = (int, float)
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "journal.jsonl": {"index": ((int,), True), "str": ((str,), True), "arch": ((dict,), True),
                      "metric": (_NUMBER, True), "report_metric": ((*_NUMBER, type(None)), False)},
    "metrics.jsonl": {"step": ((int,), False), "epoch": ((int,), False)},
}  # fmt: skip
MAX_LINE_DEPTH = 16  # nesting of a record; the tool writes at most a few levels (an arch inside a line)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records; torn or corrupt lines are skipped with a warning naming the line.

    A line that is valid JSON but not a record of this tool (a bare number, a missing or mistyped key of
    the file's schema, nesting deeper than any record has) cannot come from a torn write: `UserError`.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("no newline")
                record = json.loads(raw)
            except RecursionError:
                raise _not_ours(path, number, f"nested more than {MAX_LINE_DEPTH} levels deep") from None
            except ValueError as exc:
                if not isinstance(exc, json.JSONDecodeError) and str(exc) != "no newline":
                    raise _not_ours(path, number, str(exc).splitlines()[0][:80]) from None  # e.g. a huge integer
                log.warning("%s: line %d is incomplete or corrupt (a torn write); skipped", path, number)
                continue
            _check_record(record, path, number)
            records.append(record)
    return records


def _check_record(record: Any, path: Path, number: int) -> None:
    if not isinstance(record, dict):
        raise _not_ours(path, number, f"a JSON {type(record).__name__}, not an object")
    if not depth_ok(record, MAX_LINE_DEPTH):
        raise _not_ours(path, number, f"nested more than {MAX_LINE_DEPTH} levels deep")
    for key, (types, required) in SCHEMAS.get(path.name, {}).items():
        if key not in record:
            if required:
                raise _not_ours(path, number, f"no {key!r} key")
            continue
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise _not_ours(path, number, f"{key!r} is a {type(value).__name__}")


def _not_ours(path: Path, number: int, what: str) -> UserError:
    return UserError(
        f"{path}: line {number} is not a record this tool writes ({what}); restore the file from a copy "
        "or delete that line"
    )


def truncate_torn_tail(path: str | Path) -> None:
    """Cut a trailing partial line so that later appends start on a fresh line (used on resume)."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line of %d bytes", path, len(data) - keep)
        with open(path, "r+b") as fh:
            fh.truncate(keep)
