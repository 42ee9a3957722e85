"""Checkpoint I/O, in one place: atomic writes, safe loads, and falling back to the last good file.

Checkpoints hold state dicts and plain metadata only (tensors, numbers, strings, lists, dicts).
They are written to a temporary file in the same directory, fsynced and `os.replace`d into place,
so a crash or a full disk never leaves a half-written `last.pt`; the previous generation is kept as
`last.prev.pt`. They are loaded with `torch.load(weights_only=True)`, so a crafted file cannot run
code: it is refused with a `CheckpointError` instead.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError, UserError
from core.safejson import first_line

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = True) -> Path:
    """Atomically write `state` to `path`; the old file (if any) becomes `<stem>.prev.pt`.

    A failed write (disk full, unwritable directory) leaves the existing checkpoint untouched and
    raises `UserError` with the reason.
    """
    path = Path(path)
    check_finite(state, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    payload = dict(state)
    payload["_format"] = FORMAT_VERSION
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        # A damaged newest file (a resume fell back past it) must not push the good previous one out.
        if keep_previous and path.exists() and zipfile.is_zipfile(path):
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        # torch's zip writer turns a failed write (a full disk) into a RuntimeError, the OSError its context
        cause = exc if isinstance(exc, OSError) else exc.__context__
        if isinstance(cause, OSError):
            reason = "the disk is full" if cause.errno == errno.ENOSPC else cause.strerror or str(cause)
        else:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise UserError(f"could not write checkpoint {path}: {reason}; the previous checkpoint is intact") from None
    return path


# Keys whose tensors are weights or optimizer state: a NaN/inf there poisons every later step.
WEIGHT_KEYS = ("model", "ema", "teacher", "optimizer")


def check_finite(state: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Raise `UserError` naming the first NaN/inf tensor under `WEIGHT_KEYS`: never write a poisoned checkpoint."""
    for key in WEIGHT_KEYS:
        for name, tensor in _tensors(state.get(key), key):
            # one sync per tensor, at checkpoint time only
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                step = f" at step {state['step']}" if "step" in state else ""
                raise UserError(
                    f"refusing to write {path}: {name} holds NaN/inf{step}; the previous checkpoint is kept "
                    "(lower --lr or add --grad-clip)"
                )


def _tensors(value: Any, prefix: str) -> Any:
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{prefix}.{i}")


def kept_checkpoint(path: str | Path) -> str:
    """What a run stopped by an error leaves behind, for its message: the checkpoint kept, or that none exists."""
    path = Path(path)
    if path.exists() or previous_path(path).exists():
        return f"the last good checkpoint {path} is kept in place"
    return f"no checkpoint was written yet (none in {path.parent})"


def previous_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; `CheckpointError` with a one-line reason when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors and plain data and was refused "
                "(it could run code); only load checkpoints written by this tool"
            ) from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (not a readable torch file)") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged bytes fail anywhere inside torch.load (IndexError, ...)
        # KeyboardInterrupt and SystemExit are not Exceptions and pass; MemoryError is this machine's problem.
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("_format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a checkpoint written by this tool")
    return state


def load_latest(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest readable generation of `path` (`last.pt`, then `last.prev.pt`), or None if neither exists.

    A damaged newest file is reported with a warning and the previous generation is used.
    """
    errors = []
    for candidate in (Path(path), previous_path(path)):
        if not candidate.exists():
            continue
        try:
            return load_checkpoint(candidate, map_location), candidate
        except CheckpointError as exc:
            log.warning("%s; trying the previous checkpoint", exc)
            errors.append(str(exc))
    if errors:
        raise CheckpointError(f"no usable checkpoint at {path}: {errors[-1]}")
    return None


def find_resume(
    resume: str, last: Path, metrics: Any, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint a training run continues from, following `--resume` ('' / 'auto' / a path).

    `last` is the run's own checkpoint (`last.pt`). Without --resume an existing one is an error (never
    overwrite a run silently). With it, the newest good checkpoint (see `load_latest`) or None for a
    fresh start; metrics lines written after that checkpoint are dropped from `metrics` (a
    `MetricsLogger`), since they will be logged again.
    """
    path = Path(resume) if resume not in ("", "auto") else Path(last)
    if not resume:
        if path.exists():
            raise UserError(f"{path} exists: add --resume auto to continue it, or pass another --run-dir")
        return None
    found = load_latest(path, map_location=map_location)
    if found is None:
        log.info("no checkpoint in %s: starting from scratch", path.parent)
        metrics.drop_after(0)  # lines of a run killed before its first checkpoint
        return None
    with contents_of(found[1]):
        metrics.drop_after(int(found[0].get("step", 0)))
    return found


def check_classes(state: dict[str, Any], used: Path, num_classes: int) -> None:
    """Refuse a checkpoint trained on another number of classes than the data has."""
    if state.get("num_classes") != num_classes:
        raise CheckpointError(
            f"{used} was trained on {state.get('num_classes')} classes but the data has {num_classes}; "
            "use the same dataset or a new --run-dir"
        )


def restore_optimization(state: dict[str, Any], optimizer: Any, scheduler: Any, scaler: Any) -> None:
    """Load the optimizer, schedule and grad-scaler states and the RNG streams of a checkpoint.

    Call it inside `contents_of(path)`: a missing or ill-shaped entry then becomes a `CheckpointError`.
    """
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


@contextmanager
def contents_of(path: str | Path, fix: str = "use the checkpoint this run wrote, or a new --run-dir") -> Iterator[None]:
    """Read a loaded checkpoint's entries inside this block: one that is missing or has the wrong type
    or shape (a file edited by hand, or from another version) becomes a one-line `CheckpointError`."""
    try:
        yield
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as exc:
        if isinstance(exc, KeyError):
            reason = f"it has no {first_line(exc, 60)} entry"
        else:  # load_state_dict lists every mismatch after a heading line: keep the first one
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            reason = (lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else
                      (lines or [type(exc).__name__])[0])[:160]  # fmt: skip
        raise CheckpointError(f"{path} does not fit this model or run ({reason}); {fix}") from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as plain data (safe under weights_only loading)."""
    import random

    import numpy as np

    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    import random

    import numpy as np

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    # A checkpoint loaded with map_location=cuda brings these tensors to the GPU; RNG states live on the CPU.
    np.random.set_state((n[0], n[1].cpu().numpy(), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
