"""Evaluators and a space for the Ray executor tests (imported by the Ray workers by name).

`MarkedToySpace` is the toy space with a `marker` folder option: the evaluators below leave files
there, so a test can see which trials started on which worker process and act on them.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from tests.toy_space import ToySpace


class MarkedToySpace(ToySpace):
    """The toy space plus a folder the evaluators write markers into, and a per-trial delay in seconds."""

    def __init__(self, marker: str = "", delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.marker, self.delay = Path(marker), float(delay)


def _claim(path: Path, text: str) -> bool:
    """Create `path` with `text` if nobody did yet (atomic); whether this call created it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return True


def _started(space: MarkedToySpace, arch: tuple) -> None:
    (space.marker / f"start-{space.to_str(arch)}-{uuid.uuid4().hex[:8]}").touch()


def victim_score(archs: list, space: MarkedToySpace) -> list[float]:
    """The first trial to start writes `victim` (its pid and arch) and hangs until it is killed."""
    out = []
    for arch in archs:
        _started(space, arch)
        if _claim(space.marker / "victim.claimed", ""):  # stays: the retry evaluates normally
            (space.marker / "victim.tmp").write_text(f"{os.getpid()} {space.to_str(arch)}")
            os.replace(space.marker / "victim.tmp", space.marker / "victim")
            time.sleep(120)  # killed by the test long before this ends
        time.sleep(space.delay)
        out.append(space.score(arch))
    return out


def slow_score(archs: list, space: MarkedToySpace) -> list[float]:
    """The toy score after `space.delay` seconds, leaving a start marker per evaluation."""
    out = []
    for arch in archs:
        _started(space, arch)
        time.sleep(space.delay)
        out.append(space.score(arch))
    return out


def fail_once(archs: list, space: MarkedToySpace) -> list[float]:
    """The first trial to start fails on its own (a NaN loss); the others score normally."""
    out = []
    for arch in archs:
        _started(space, arch)
        if _claim(space.marker / "failed", space.to_str(arch)):
            raise FloatingPointError("loss is NaN at step 3")
        time.sleep(space.delay)
        out.append(space.score(arch))
    return out
