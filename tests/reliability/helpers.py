"""Shared pieces of the reliability tests: tiny command lines, in-process CLI calls, fault injection.

The faults are injected from the outside (a wrapped `open` in one module, a patched method), never
by switches in production code.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import torch

# The nb201 supernet at its smallest: 4 steps an epoch on 128 images (a few seconds a run on one core).
SUPERNET = ["supernet", "--space", "nb201", "--space-opts", "channels=8", "--space-opts", "cells=1",
            "--epochs", "2", "--train-images", "128", "--batch-size", "32", "--search-size", "500",
            "--recal-images", "32", "--panel-random", "0", "--checkpoint-minutes", "0", "--threads", "1",
            "--quiet", "--seed", "3"]  # fmt: skip
RETRAIN = ["retrain", "--lanet", "2,3,1,0,0,1,1,2", "--space-opts", "channels=4", "--space-opts", "blocks=1,1",
           "--epochs", "2", "--train-images", "64", "--test-images", "32", "--batch-size", "16",
           "--search-size", "100", "--checkpoint-minutes", "0", "--threads", "1", "--quiet", "--arch-id", "tiny",
           "--seed", "1"]  # fmt: skip


def cli(argv: list[str], capsys: Any = None) -> tuple[int, str]:
    """`run.py argv` in this process; returns the exit code and what it wrote to stderr."""
    import run

    if capsys is not None:
        capsys.readouterr()
    code = run.main([str(a) for a in argv])
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


def error_line(err: str) -> str:
    """The `error: ...` line a failed command printed; it must be the only one and have no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def model_of(path: Path) -> dict[str, torch.Tensor]:
    from core.checkpoint import load_checkpoint

    return load_checkpoint(path)["model"]


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def step_of(path: Path) -> int:
    from core.checkpoint import load_checkpoint

    return int(load_checkpoint(path)["step"])


class FailingFile(io.FileIO):
    """A real file whose `write` raises `OSError(code)` once `budget` bytes have been written (a full disk)."""

    def __init__(self, path: str, mode: str, budget: int, code: int) -> None:
        super().__init__(path, mode.replace("b", "").replace("+", "") or "r")
        self.budget, self.code = budget, code

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.budget:
            super().write(data[: self.budget])  # the part that still fitted
            self.budget = 0
            raise OSError(self.code, os.strerror(self.code))
        self.budget -= len(data)
        return super().write(data)


def failing_open(match: str, nth: int, budget: int = 10, code: int = errno.ENOSPC) -> Any:
    """An `open` for one module: the `nth` opening (from 1) of a path containing `match` fails when written."""
    calls = {"n": 0}
    real_open = open

    def fake(path: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        if match in str(path) and any(m in mode for m in "wa"):
            calls["n"] += 1
            if calls["n"] == nth:
                if "a" in mode:  # append mode, as the journal opens it
                    return _AppendFailing(str(path), budget, code)
                return FailingFile(str(path), "w", budget, code)
        return real_open(path, mode, *args, **kw)

    fake.calls = calls  # type: ignore[attr-defined]
    return fake


class _AppendFailing(FailingFile):
    def __init__(self, path: str, budget: int, code: int) -> None:
        io.FileIO.__init__(self, path, "a+")
        self.budget, self.code = budget, code


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A torch file that would run `touch marker` when unpickled without weights_only."""

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    torch.save({"_format": 1, "kind": "supernet", "model": Evil(), "step": 0}, path)
    # the payload really is there: an unsafe torch.load would run it
    assert b"system" in path.read_bytes()
    return path


def image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 32) -> Path:
    """A tiny `train/<class>/*.png` + `test/<class>/*.png` dataset with `classes` classes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 4)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root
