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


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records; torn or corrupt lines are skipped with a warning naming the line."""
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
                records.append(json.loads(raw))
            except ValueError:
                log.warning("%s: line %d is incomplete or corrupt (a torn write); skipped", path, number)
    return records


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
