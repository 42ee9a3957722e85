"""Run directories: the one place that knows where a run's files live (`RunDir`), and who may write them.

    <run_dir>/<command>.config.yaml, log.txt, .lock
    <run_dir>/supernet/     last.pt (+ last.prev.pt), best.pt, metrics.jsonl, tb/
    <run_dir>/search/       journal.jsonl, state.pt, topk.json, pareto.json, pareto.png, best_so_far.png, tb/,
                            pareto_latency.json, pareto_latency.png (with --latency-table)
    <run_dir>/retrain/<id>/ last.pt, ema.pt, report.json, curve.png, metrics.jsonl, tb/, export/

Every stage names its files through `RunDir(path)`: `RunDir(p).supernet.last`, `.search.topk`,
`.retrain("top1").report`; no module spells out another stage's file names.

One writer per run directory: a command that writes into one holds `<run_dir>/.lock` (an advisory
`flock`, with the holder's pid, host and start time as JSON inside) for its whole life; a second
writer is refused with one line naming the holder. Readers (`run.py info`, the report) take no lock.
The command's config is recorded (`<command>.config.yaml`) only once its inputs were accepted, so a
refused command leaves the record of the run as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.config import save_config
from core.errors import UserError
from core.jsonl import append_jsonl, read_jsonl

ROOT = Path("checkpoints")
LOCK_NAME = ".lock"
log = logging.getLogger(__name__)


class StageDir:
    """A stage's folder; the file names every stage shares (checkpoint, metrics, TensorBoard events)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def last(self) -> Path:
        """The resumable checkpoint (its previous generation is `last.prev.pt`, see core.checkpoint)."""
        return self.path / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tb(self) -> Path:
        return self.path / "tb"


class SupernetDir(StageDir):
    @property
    def best(self) -> Path:
        """The checkpoint of the best subnet-panel accuracy so far."""
        return self.path / "best.pt"


class SearchDir(StageDir):
    @property
    def state(self) -> Path:
        """The searcher's resumable state (the search's `last.pt`)."""
        return self.path / "state.pt"

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def submitted(self) -> Path:
        """An asynchronous search's submissions, one line each as it is sent: what was in flight on resume."""
        return self.path / "submitted.jsonl"

    @property
    def topk(self) -> Path:
        return self.path / "topk.json"

    @property
    def pareto(self) -> Path:
        return self.path / "pareto.json"

    @property
    def pareto_plot(self) -> Path:
        return self.path / "pareto.png"

    @property
    def pareto_latency(self) -> Path:
        """The accuracy-vs-predicted-latency front (a search with --latency-table)."""
        return self.path / "pareto_latency.json"

    @property
    def pareto_latency_plot(self) -> Path:
        return self.path / "pareto_latency.png"

    @property
    def best_plot(self) -> Path:
        return self.path / "best_so_far.png"


class RetrainDir(StageDir):
    @property
    def arch_id(self) -> str:
        return self.path.name

    @property
    def ema(self) -> Path:
        return self.path / "ema.pt"

    @property
    def report(self) -> Path:
        return self.path / "report.json"

    @property
    def curve(self) -> Path:
        return self.path / "curve.png"

    @property
    def export(self) -> Path:
        return self.path / "export"


class RunDir:
    """The layout of one run directory: `RunDir(p).supernet.last`, `.search.topk`, `.retrain(arch_id).report`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def supernet(self) -> SupernetDir:
        return SupernetDir(self.path / "supernet")

    @property
    def search(self) -> SearchDir:
        return SearchDir(self.path / "search")

    @property
    def retrain_root(self) -> Path:
        """The folder holding one `RetrainDir` per retrained architecture."""
        return self.path / "retrain"

    def retrain(self, arch_id: str) -> RetrainDir:
        return RetrainDir(self.retrain_root / arch_id)

    def retrained(self) -> list[RetrainDir]:
        """The retrain folders that hold a checkpoint, by name."""
        return [RetrainDir(p.parent) for p in sorted(self.retrain_root.glob("*/last.pt"))]

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    def config(self, command: str) -> Path:
        """The record of `run.py <command>`'s resolved options (`pipeline.config.yaml`, ...)."""
        return self.path / f"{command}.config.yaml"

    @property
    def lock(self) -> Path:
        return self.path / LOCK_NAME


def resolve_run_dir(cfg: Any, command: str, preset: str | None = None) -> Path:
    """Fill in `cfg.run_dir` (default `checkpoints/<run_name or command-preset>`) and check it is writable."""
    if not cfg.run_dir:
        name = cfg.run_name or "-".join(p for p in (command, preset) if p)
        cfg.run_dir = str(ROOT / name)
    path = Path(cfg.run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"run directory {path} is not writable ({exc.strerror}); pass --run-dir to a writable folder"
        ) from None
    return path


def save_run_config(cfg: Any, run_dir: Path, name: str = "config.yaml") -> Path:
    """Save the resolved configuration beside the run's outputs."""
    target = run_dir / name
    save_config(cfg, target)
    return target


# ---- the config record, written once the command's inputs were accepted ---------------------------

_pending: list[tuple[Any, Path, str]] = []  # at most one: (cfg, run_dir, file name)


@contextlib.contextmanager
def deferred_run_config(cfg: Any, run_dir: Path, name: str, enabled: bool = True) -> Iterator[None]:
    """Record `cfg` as `run_dir/name` when the stage calls `commit_run_config()` (its input checks passed)
    or when the command ends other than by a `UserError`; a refused command leaves the old record."""
    from core.errors import UserError

    if not enabled:
        yield
        return
    _pending[:] = [(cfg, run_dir, name)]
    try:
        yield
    except UserError:
        _pending.clear()  # refused (or stopped with an input error after committing): nothing more to write
        raise
    except BaseException:
        commit_run_config()  # interrupted or crashed after starting: the run's record must exist
        raise
    else:
        commit_run_config()
    finally:
        _pending.clear()


def commit_run_config() -> Path | None:
    """Write the pending config record now (once); stages call it when their inputs have been accepted."""
    if not _pending:
        return None
    cfg, run_dir, name = _pending.pop()
    return save_run_config(cfg, run_dir, name)


# ---- one writer per run directory ------------------------------------------------------------------

_held: dict[str, list[Any]] = {}  # resolved lock path -> [fd, depth]: the lock is re-entrant in one process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not written its pid yet)"
    return (f"{holder.get('command', 'a command')} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('since')})")  # fmt: skip


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, command: str) -> Iterator[None]:
    """Hold `run_dir/.lock` while the block runs; `UserError` naming the holder when another writer has it.

    Re-entrant within one process (the pipeline runs its stages in-process). A lock file left by a
    process of this host that is no longer running is taken over with a warning. Never blocks.
    """
    from core.errors import UserError

    path = RunDir(run_dir).lock
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    host, fd = socket.gethostname(), -1
    for _ in range(5):  # retried only when a stale lock file was replaced under us
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {path} ({exc.strerror}); pass a writable --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise UserError(f"cannot lock {path} ({exc.strerror}); pass a --run-dir on a local disk") from None
            holder = _read_holder(fd)
            pid = holder.get("pid")
            if holder.get("host") == host and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
                # its pid is gone but a child it forked still holds the lock: replace the file
                log.warning("run directory %s: taking over the lock of %s, which is no longer running",
                            run_dir, _describe(holder))  # fmt: skip
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino == os.fstat(fd).st_ino:
                        os.unlink(path)
                os.close(fd)
                continue
            os.close(fd)
            raise UserError(
                f"run directory {run_dir} is in use by {_describe(holder)}; wait for it to end or use another --run-dir"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if not same:  # the file was replaced between open and lock: lock the new one
            os.close(fd)
            continue
        break
    else:
        raise UserError(f"could not take the lock {path}; remove it if no other command uses {run_dir}")
    previous = _read_holder(fd)
    if previous.get("pid") not in (None, os.getpid()):
        log.warning("run directory %s: %s did not release its lock (killed?); taking it over", run_dir,
                    _describe(previous))  # fmt: skip
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    body = json.dumps({"pid": os.getpid(), "host": host, "since": since, "command": command}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, body, 0)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # released cleanly: the next writer sees no leftover holder
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class MetricsLogger:
    """One JSONL line per event (epoch, evaluated arch) plus TensorBoard scalars; rank 0 only."""

    def __init__(self, directory: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self.path = StageDir(self.directory).metrics
        self._tb = None
        if enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(StageDir(self.directory).tb))

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, {"time": round(time.time(), 3), **record}, fsync=False)
        if self._tb is not None and step is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def drop_after(self, step: int) -> int:
        """On resume: remove lines logged after the checkpoint of `step` (they will be logged again)."""
        if not self.enabled or not self.path.exists():
            return 0
        records = read_jsonl(self.path)
        keep = [r for r in records if int(r.get("step", 0)) <= step]
        if len(keep) < len(records):
            tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
            tmp.write_text("".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in keep))
            os.replace(tmp, self.path)
            log.warning("%s: dropped %d lines logged after step %d", self.path, len(records) - len(keep), step)
        return len(records) - len(keep)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
