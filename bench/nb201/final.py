"""The pipeline's last stage in `run.py bench-nb201`: the search's best cells, trained alone, pick the winner.

A search on the supernet returns the cell it scores best, but within the best tenth of the space the
supernet's order can be close to chance (docs/nb201_oneshot.md, "The final stage"), and its
favourite is the cell that converges fastest when trained inside the supernet. The retrain stage of
`run.py pipeline` trains the top-k cells of a search from scratch anyway; here each of the K
best-scored cells a search evaluated is trained alone, from scratch, for the same number of steps
(`--final-epochs`) on the training images (the search split held out), and the one with the best accuracy on the
search split is returned. No table value and no test image is used to choose.

A cell trained alone is the supernet trained on one fixed path: same network code, data, augmentation
and cosine schedule (over steps here) as the supernets of the benchmark, so the stage adds no second
training loop. Results are cached per canonical cell (in memory and under `<run_dir>/final/`), so
searches that share candidates pay once and a rerun reuses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import time
from collections.abc import Hashable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class FixedSampler:
    """A sampler that always names the same architecture: supernet training becomes standalone training."""

    def __init__(self, arch: Hashable) -> None:
        self.arch = arch

    def archs(self, step: int) -> list[Hashable]:
        return [self.arch]


def top_candidates(space: Any, archs: list[Hashable], metrics: np.ndarray, k: int) -> list[tuple[Hashable, float]]:
    """The `k` best-scored distinct canonical cells of a search's history, best first."""
    out: list[tuple[Hashable, float]] = []
    seen: set[Hashable] = set()
    for i in np.argsort(-np.asarray(metrics, dtype=float), kind="stable"):
        key = space.canonical(archs[i])
        if key not in seen and math.isfinite(metrics[i]):
            seen.add(key)
            out.append((key, float(metrics[i])))
        if len(out) == k:
            break
    return out


class FinalStage:
    """Trains candidate cells alone for `cfg.final_epochs` each and keeps their search-split accuracy."""

    def __init__(self, cfg: Any, root: Path) -> None:
        from supernet.spaces.base import make_space

        # the cells may be trained in another macro network than the supernet's (--final-space-opts)
        self.cfg = dataclasses.replace(cfg, space_opts=dict(cfg.final_space_opts or cfg.space_opts))
        self.space, self.root = make_space("nb201", **self.cfg.space_opts), root / "final"
        self.cache: dict[str, dict[str, Any]] = {}
        self.train_seconds = 0.0

    def signature(self) -> dict[str, Any]:
        keys = ("seed", "dataset", "data_dir", "search_size", "split_seed", "space_opts", "final_epochs",
                "max_steps", "batch_size", "lr", "min_lr", "weight_decay", "warmup", "recal")  # fmt: skip
        return json.loads(json.dumps({k: getattr(self.cfg, k) for k in keys}))

    def path(self, arch: Hashable) -> Path:
        """The run directory of `arch` trained alone under these settings (other settings: another one)."""
        key = json.dumps([self.space.to_str(self.space.canonical(arch)), self.signature()], sort_keys=True)
        return self.root / hashlib.sha1(key.encode()).hexdigest()[:12]

    def known(self, arch: Hashable) -> dict[str, Any] | None:
        """The cached result of `arch`, or the one saved under the same settings (`--reuse`), or None."""
        name = self.space.to_str(self.space.canonical(arch))
        if name not in self.cache and self.cfg.reuse and (self.path(arch) / "final.json").exists():
            saved = json.loads((self.path(arch) / "final.json").read_text())
            if saved.get("signature") == self.signature():
                log.info("  final: reusing %s (%.2f)", name, saved["result"]["val_acc"])
                self.cache[name] = saved["result"]
        return self.cache.get(name)

    def prepare(self, archs: list[Hashable]) -> None:
        """Train every cell not known yet, `cfg.final_workers` at a time (one process each, `--threads` each)."""
        todo: dict[str, Hashable] = {}
        for arch in archs:
            if self.known(arch) is None:
                todo.setdefault(self.space.to_str(self.space.canonical(arch)), arch)
        if self.cfg.final_workers <= 1 or len(todo) <= 1:
            for arch in todo.values():
                self.accuracy(arch)
            return
        t0 = time.monotonic()
        log.info("  final: training %d cells alone, %d at a time", len(todo), self.cfg.final_workers)
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
        with ProcessPoolExecutor(min(self.cfg.final_workers, len(todo)), mp_context=ctx) as pool:
            jobs = [pool.submit(_train_alone, self.cfg, self.root.parent, name) for name in todo]
            for job in jobs:
                result = job.result()
                self.cache[result["arch"]] = result
        self.train_seconds += time.monotonic() - t0

    def accuracy(self, arch: Hashable) -> dict[str, Any]:
        """Search-split accuracy of `arch` trained alone (cached; reused from disk with the same settings)."""
        from bench.nb201.train import supernet_config, train_for
        from search.evaluators.supernet import SupernetEvaluator
        from supernet.train import SupernetTrainer

        known = self.known(arch)
        if known is not None:
            return known
        name, out = self.space.to_str(self.space.canonical(arch)), self.path(arch)
        record = out / "final.json"
        t0 = time.monotonic()
        trainer = SupernetTrainer(supernet_config(self.cfg, "uniform", out))
        trainer.sampler = FixedSampler(self.space.canonical(arch))
        steps = max(1, round(self.cfg.final_epochs * len(trainer.data.train) / self.cfg.batch_size))
        stats = train_for(trainer, self.cfg, math.inf, steps=steps)
        del trainer
        ev = SupernetEvaluator(self.space, out / "supernet" / "last.pt", device=self.cfg.device,
                               recal_images=max(self.cfg.recal), batch_size=self.cfg.eval_batch)  # fmt: skip
        val = float(ev.score(self.space.canonical(arch))["metric"])
        seconds = time.monotonic() - t0
        self.train_seconds += seconds
        result = {"arch": name, "val_acc": val, "steps": stats["steps"], "epochs": stats["epochs"],
                  "seconds": round(seconds, 1)}  # fmt: skip
        record.write_text(json.dumps({"signature": self.signature(), "result": result}, indent=1))
        log.info("  final: %s trained alone, %d steps in %.1f min: %.2f%% on the search split",
                 name, stats["steps"], seconds / 60, val)  # fmt: skip
        self.cache[name] = result
        return result

    def choose(self, candidates: list[tuple[Hashable, float]]) -> dict[str, Any]:
        """Train each candidate (cached) and return the best on the search split, ties to the search's order."""
        rows = [{"score": score} | self.accuracy(arch) for arch, score in candidates]
        best = max(range(len(rows)), key=lambda i: (rows[i]["val_acc"], -i))
        return {"arch": rows[best]["arch"], "val_acc": rows[best]["val_acc"], "candidates": rows}


def _train_alone(cfg: Any, root: Path, name: str) -> dict[str, Any]:
    """Worker of `FinalStage.prepare`: train one cell alone in this process and return its result."""
    from core.runtime import set_threads, setup_logging

    setup_logging(cfg.quiet)
    set_threads(cfg.threads)
    stage = FinalStage(cfg, root)
    return stage.accuracy(stage.space.from_str(name))
