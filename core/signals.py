"""Graceful stop on SIGTERM/SIGINT: training loops poll the flag, checkpoint, and exit."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM or SIGINT (preemption, Ctrl-C); a second signal interrupts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None

    def __bool__(self) -> bool:
        return self.requested is not None


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Install handlers for the duration of a training loop (main thread only)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint at the end of this step, then stopping", flag.requested)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
