"""Latency lookup tables: measured per-unit latencies, a predictor, and the two commands that use them.

A space declares its latency units (`Space.latency_units`, `latency_unit_choices`,
`latency_unit_module`): parts of the network whose latency depends only on their own choice, such
as one MBConv block choice at the input size and width it sees. `run.py latency-table` times every
unit the space declares, in eval mode without gradients, as the fastest of repeated calls after warm-up,
and then the fixed overhead: the median, over a few sampled architectures, of the measured
end-to-end latency minus the sum of their units. The predicted latency of an architecture is the
sum of its units plus that overhead (as nn-Meter and OFA's lookup tables do, at block level).

The table is JSON: `meta` (space, options, device, threads, dtype, batch, CPU, GPU, torch),
`units` (key -> ms), `rounds` (unit -> rounds measured), `archs_ms` (the overhead architectures'
measured latencies) and `overhead_ms`. It is written after every unit, so an interrupted build
resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.config import opt
from core.errors import UserError
from core.runtime import progress
from supernet.spaces.base import Space, make_space, make_user_space

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MATCH_KEYS = ("space", "space_opts", "num_classes", "batch", "dtype")  # a mismatch here is an error
WARN_KEYS = ("device", "threads", "cpu", "gpu")  # a mismatch here is a warning


def unit_name(key: tuple) -> str:
    """The JSON name of a unit key: its fields joined by '/'."""
    return "/".join(str(v) for v in key)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, threads: int, dtype: str, batch: int) -> dict[str, Any]:
    return {
        "device": device.type,
        "threads": threads,
        "dtype": dtype,
        "batch": batch,
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "torch": torch.__version__,
    }


# ---- timing ----------------------------------------------------------------------------------
def time_module(
    module: nn.Module | list[nn.Module],
    shape: tuple[int, ...],
    device: torch.device,
    dtype: str,
    batch: int,
    repeats: int,
    warmup: int,
) -> float:
    """Latency (ms) of `module` on a random batch, eval mode, no gradients: the fastest of the timed calls.

    The minimum, not the median: on a machine shared with other work, interference only ever adds
    time, and the minimum is the most repeatable statistic (docs/benchmarks.md, "Latency tables").
    Given a list of copies of one unit (`unit_copies`), each timed call is one call of every copy in
    turn, divided by their number: no copy's weights are still in the cache when it runs again.
    """
    copies = module if isinstance(module, list) else [module]
    copies = [m.to(device).eval() for m in copies]
    x = torch.randn(batch, *shape, device=device)
    if device.type == "cuda":
        copies = [m.to(memory_format=torch.channels_last) for m in copies]
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")
    times = []
    with torch.no_grad(), autocast:
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for m in copies:
                m(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1e3 * min(times) / len(copies)


def unit_copies(space: Space, key: tuple, cold_bytes: int) -> tuple[list[nn.Module], tuple[int, ...]]:
    """Enough copies of a unit (distinct weights) that their parameters fill `cold_bytes` (at most 32).

    In a network a block's weights have left the core's cache by the time it runs again, since
    every other block ran in between; a unit timed alone over and over keeps them cached and looks
    faster than it is in the network. Cycling through copies larger than the cache times it cold.
    """
    module, shape = space.latency_unit_module(key)
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    n = max(1, min(32, -(-cold_bytes // size))) if cold_bytes and size else 1
    return [module] + [space.latency_unit_module(key)[0] for _ in range(n - 1)], shape


# ---- the table ---------------------------------------------------------------------------------
class LatencyTable:
    """Per-unit latencies of one space on one device, and the predictor built on them."""

    def __init__(
        self,
        meta: dict[str, Any],
        units: dict[str, float],
        overhead_ms: float | None,
        rounds: dict[str, int] | None = None,
        archs_ms: list[float] | None = None,
    ) -> None:
        self.meta, self.units, self.overhead_ms = meta, units, overhead_ms
        self.rounds = rounds or {}  # unit -> rounds measured (the table keeps the fastest)
        self.archs_ms = archs_ms  # end-to-end latencies of the overhead architectures, measured first
        self._by_key: dict[tuple, float] = {}  # unit key -> ms, filled on first use: screening is a hot loop

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table file; any malformed content is a one-line `UserError`."""
        try:
            data = json.loads(Path(path).read_text())
            meta, units = data["meta"], data["units"]
            overhead, rounds, archs_ms = data.get("overhead_ms"), data.get("rounds", {}), data.get("archs_ms")
            if not isinstance(meta, dict) or not isinstance(units, dict) or not isinstance(rounds, dict):
                raise TypeError("meta, units and rounds must be objects")
            if not all(type(v) is int and v >= 0 for v in rounds.values()):
                raise ValueError("rounds must be counts")
            if archs_ms is not None and not (
                isinstance(archs_ms, list) and all(isinstance(v, (int, float)) and np.isfinite(v) for v in archs_ms)
            ):
                raise ValueError("archs_ms must be a list of finite numbers")
            if not all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in units.values()):
                raise ValueError("unit latencies must be finite numbers >= 0")
            if overhead is not None and not (isinstance(overhead, (int, float)) and np.isfinite(overhead)):
                raise ValueError("overhead_ms must be a finite number")
        except OSError as exc:
            raise UserError(f"latency table {path}: {exc.strerror}; build one with run.py latency-table") from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise UserError(
                f"latency table {path} is malformed ({exc}); rebuild it with run.py latency-table"
            ) from None
        units = {str(k): float(v) for k, v in units.items()}
        return cls(meta, units, overhead, {str(k): v for k, v in rounds.items()}, archs_ms)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        data = {"meta": self.meta, "units": self.units, "overhead_ms": self.overhead_ms, "rounds": self.rounds,
                "archs_ms": self.archs_ms}  # fmt: skip
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)

    def check(self, space: Space, num_classes: int, where: dict[str, Any] | None = None) -> None:
        """Refuse a table measured for another space, options or class count; warn on another machine."""
        want = {"space": space.name, "space_opts": _plain(space.options()), "num_classes": num_classes}
        for key, value in want.items():
            if _plain(self.meta.get(key)) != value:
                raise UserError(
                    f"latency table was measured for {key}={self.meta.get(key)!r}, not {value!r}; "
                    "build a table for this space with run.py latency-table"
                )
        if self.overhead_ms is None:
            raise UserError(
                "latency table is unfinished (no overhead measured); rerun run.py latency-table to finish it"
            )
        for key in WARN_KEYS:
            if where and key in where and where[key] != self.meta.get(key):
                log.warning(
                    "latency table measured with %s=%r, used with %s=%r", key, self.meta.get(key), key, where[key]
                )

    def predict(self, space: Space, arch: Any) -> float:
        """Predicted latency (ms): the sum of the architecture's units plus the fixed overhead."""
        by_key = self._by_key
        total = self.overhead_ms or 0.0
        for key in space.latency_units(arch, self.meta.get("num_classes", 10)):
            ms = by_key.get(key)
            if ms is None:
                name = unit_name(key)
                if name not in self.units:
                    raise UserError(
                        f"latency table has no unit {name}; rebuild it for these space options (run.py latency-table)"
                    )
                ms = by_key[key] = self.units[name]
            total += ms
        return total


def _plain(value: Any) -> Any:
    """Tuples as lists, so options compare equal after a JSON round trip."""
    return json.loads(json.dumps(value))


def build_table(
    space: Space,
    out: Path,
    *,
    device: torch.device,
    dtype: str,
    batch: int,
    num_classes: int,
    repeats: int,
    overhead_archs: int,
    seed: int,
    rounds: int = 3,
    cold_bytes: int = 8 << 20,
    quiet: bool = False,
) -> LatencyTable:
    """Measure the overhead architectures end to end, then every unit of `space` (resuming a partial
    table at `out`); the fixed overhead is their measured latency minus the sum of their units.

    Each unit is timed in `rounds` rounds over all units, keeping its fastest: a burst of
    interference hits one round of a unit, not all of them. The whole networks are timed first, as
    `bench-latency` times them: in a process whose memory allocator has not yet been through the
    unit copies, which left whole networks slower (docs/benchmarks.md, "Latency tables").
    """
    meta = {"space": space.name, "space_opts": _plain(space.options()), "num_classes": num_classes}
    meta.update(environment(device, torch.get_num_threads(), dtype, batch))
    meta["cold_bytes"] = cold_bytes
    meta["overhead_seed"] = seed  # which architectures `archs_ms` measured
    table = LatencyTable(meta, {}, None)
    if out.is_file():
        old = LatencyTable.load(out)
        differ = [k for k in (*MATCH_KEYS, *WARN_KEYS, "cold_bytes") if _plain(old.meta.get(k)) != meta[k]]
        if differ:
            raise UserError(f"{out} holds a table for other settings ({', '.join(differ)}); pass another --out")
        table.units, table.rounds = old.units, {k: v for k, v in old.rounds.items() if k in old.units}
        same_archs = old.meta.get("overhead_seed") == seed and len(old.archs_ms or []) == overhead_archs
        table.archs_ms = old.archs_ms if old.archs_ms is not None and same_archs else None
        log.info("resuming %s: %d units measured", out, len(table.units))
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(overhead_archs)]
    if table.archs_ms is None:
        table.archs_ms = measure_archs(space, archs, device, dtype, batch, num_classes, repeats, rounds)
        table.save(out)
    keys = space.latency_unit_choices(num_classes)
    todo = [(r, k) for r in range(rounds) for k in keys if table.rounds.get(unit_name(k), 0) <= r]
    for r, key in progress(todo, quiet, desc="latency units", unit="unit"):
        name = unit_name(key)
        ms = time_module(*unit_copies(space, key, cold_bytes), device, dtype, batch, repeats, warmup=3)
        table.units[name] = min(ms, table.units.get(name, math.inf))
        table.rounds[name] = r + 1
        table.save(out)  # small; an interrupted build loses at most the unit in progress
    gaps = [
        m - sum(table.units[unit_name(k)] for k in space.latency_units(a, num_classes))
        for a, m in zip(archs, table.archs_ms)
    ]
    table.overhead_ms = statistics.median(gaps) if gaps else 0.0
    table.save(out)
    return table


def measure_arch(
    space: Space, arch: Any, device: torch.device, dtype: str, batch: int, num_classes: int, repeats: int
) -> float:
    """Measured end-to-end latency (ms) of `build(arch)` at its input resolution."""
    size = getattr(arch, "resolution", None) or space.input_size
    return time_module(space.build(arch, num_classes), (3, size, size), device, dtype, batch, repeats, warmup=3)


def measure_archs(
    space: Space,
    archs: list[Any],
    device: torch.device,
    dtype: str,
    batch: int,
    num_classes: int,
    repeats: int,
    rounds: int = 3,
    quiet: bool = True,
) -> list[float]:
    """`measure_arch` of each architecture in `rounds` interleaved rounds, the fastest of each."""
    best = [math.inf] * len(archs)
    steps = [(r, i) for r in range(rounds) for i in range(len(archs))]
    for _, i in progress(steps, quiet, desc="subnets", unit="arch"):
        best[i] = min(best[i], measure_arch(space, archs[i], device, dtype, batch, num_classes, repeats))
    return best


# ---- commands ----------------------------------------------------------------------------------
@dataclass
class LatencyTableConfig:
    """Options of `run.py latency-table`."""

    space: str = opt("mbconv", "search space (registered name, or module:Class)")
    space_opts: dict[str, Any] = opt({}, "space constructor options, KEY=VALUE")
    resolutions: list[int] = opt([], "input resolutions to measure (mbconv; default: the space's own)")
    num_classes: int = opt(1000, "classifier width of the head unit")
    device: str = opt("cpu", "where to measure", choices=("cpu", "cuda"))
    batch: int = opt(1, "images per measured call")
    threads: int = opt(1, "CPU compute threads while measuring")
    dtype: str = opt("fp32", "precision (bf16/fp16 through autocast)", choices=tuple(DTYPES))
    repeats: int = opt(20, "timed calls per unit and round; the fastest is kept")
    rounds: int = opt(3, "rounds over all units (interleaved, so interference hits one round); the fastest is kept")
    cold_mb: float = opt(8.0, "time each unit cycling through copies of it holding this many MB of weights (0: one)")
    overhead_archs: int = opt(10, "sampled architectures that measure the fixed overhead")
    out: str = opt("latency.json", "table file (an unfinished one with the same settings is resumed)")
    seed: int = opt(0, "seed of the overhead architectures")
    quiet: bool = opt(False, "no progress bar")

    def __post_init__(self) -> None:
        if min(self.batch, self.threads, self.repeats, self.num_classes, self.rounds) < 1 or self.overhead_archs < 0:
            raise UserError(
                "--batch, --threads, --repeats, --rounds and --num-classes must be >= 1, --overhead-archs >= 0"
            )
        if not 0 <= self.cold_mb <= 4096:
            raise UserError(f"--cold-mb must be in [0, 4096], got {self.cold_mb}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
        if self.dtype == "fp16" and self.device != "cuda":
            raise UserError("--dtype fp16 needs --device cuda; use fp32 or bf16 on the CPU")


def space_for(name: str, opts: dict[str, Any], resolutions: list[int]) -> Space:
    if resolutions:
        if name != "mbconv":
            raise UserError("--resolutions applies to the mbconv space; set other spaces' size in --space-opts")
        opts = {**opts, "resolutions": resolutions}
    return make_user_space(name, **opts)  # named on the command line: an import path is allowed


def table_main(cfg: LatencyTableConfig) -> dict[str, Any]:
    """Entry point of `run.py latency-table`."""
    torch.set_num_threads(cfg.threads)
    space = space_for(cfg.space, cfg.space_opts, cfg.resolutions)
    table = build_table(
        space, Path(cfg.out), device=torch.device(cfg.device), dtype=cfg.dtype, batch=cfg.batch,
        num_classes=cfg.num_classes, repeats=cfg.repeats, overhead_archs=cfg.overhead_archs, seed=cfg.seed,
        rounds=cfg.rounds, cold_bytes=int(cfg.cold_mb * 2**20), quiet=cfg.quiet,
    )  # fmt: skip
    log.info("latency table %s: %d units, overhead %.3f ms", cfg.out, len(table.units), table.overhead_ms)
    return {"out": cfg.out, "units": len(table.units), "overhead_ms": table.overhead_ms}


@dataclass
class LatencyConfig:
    """Options of `run.py latency`: predicted and measured latency of one architecture."""

    table: str = opt("", "latency table from run.py latency-table")
    arch: str = opt("", "architecture in the space's string form")
    space: str = opt("", "space (default: the table's)")
    repeats: int = opt(20, "timed calls for the measurement")
    measure: bool = opt(True, "also measure the architecture here")

    def __post_init__(self) -> None:
        if not self.table or not self.arch:
            raise UserError("run.py latency needs --table FILE and --arch STRING")


def open_table(path: str, space_name: str = "") -> tuple[LatencyTable, Space, torch.device]:
    """A table, the (registered) space it was measured for, and the device to measure on here; the
    threads are set to the table's. `space_name`, when given, must be the table's space."""
    table = LatencyTable.load(path)
    meta = table.meta
    if space_name and space_name != meta.get("space"):
        raise UserError(f"--space {space_name}: the table was measured for {meta.get('space')!r}")
    space = make_space(str(meta.get("space")), **dict(meta.get("space_opts") or {}))
    device = torch.device(str(meta.get("device", "cpu")))
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")
    torch.set_num_threads(int(meta.get("threads", 1)))
    table.check(space, int(meta.get("num_classes", 10)), environment(device, torch.get_num_threads(), "", 0))
    return table, space, device


def latency_main(cfg: LatencyConfig) -> dict[str, Any]:
    """Entry point of `run.py latency`."""
    table, space, device = open_table(cfg.table, cfg.space)
    meta = table.meta
    arch = space.from_str(cfg.arch)
    out: dict[str, Any] = {"arch": space.to_str(arch), "predicted_ms": table.predict(space, arch)}
    if cfg.measure:
        out["measured_ms"] = measure_arch(
            space, arch, device, meta["dtype"], int(meta["batch"]), int(meta["num_classes"]), cfg.repeats
        )
        out["error_pct"] = 100 * (out["predicted_ms"] - out["measured_ms"]) / out["measured_ms"]
    print(json.dumps(out))
    return out
