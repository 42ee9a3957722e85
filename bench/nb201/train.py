"""Supernet training and scoring for `run.py bench-nb201`: the elapsed-time cosine, one supernet per
strategy (few-shot: a shared phase, then one sub-supernet per op of the split edge), and the evaluator
that scores an arch with the (sub-)supernet it falls in.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.nb201.config import BenchNB201Config
from supernet.config import SupernetConfig
from supernet.nets.nb201 import OPS
from supernet.train import SupernetTrainer

log = logging.getLogger("bench.nb201.oneshot")


class TimeCosine:
    """Cosine learning rate over elapsed time, standing in for the trainer's step-based schedule.

    Steps per second vary with the load of a shared machine, so a step horizon fixed in advance
    would end un-annealed or early; on time, training always ends at `min_lr` when its budget is
    spent. `start`/`end` select a part of the curve (few-shot sub-supernets continue the one-shot one).
    With `steps` > 0 the horizon is that many steps instead (the final stage: every cell trained alone
    gets the same training, whatever the load).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: BenchNB201Config, seconds: float, start: float = 0.0,
                 end: float = 1.0, steps: int = 0) -> None:  # fmt: skip
        self.optimizer, self.cfg, self.seconds, self.start, self.end = optimizer, cfg, seconds, start, end
        self.steps, self.step = steps, 0
        self.t0 = time.monotonic()

    def fraction(self) -> float:
        if self.steps:
            return min(1.0, self.step / self.steps)
        return min(1.0, (time.monotonic() - self.t0) / self.seconds)

    def step_update(self, step: int) -> None:
        self.step = step
        f = self.start + (self.end - self.start) * self.fraction()
        lr = self.cfg.min_lr + 0.5 * (self.cfg.lr - self.cfg.min_lr) * (1 + math.cos(math.pi * f))
        if f < self.cfg.warmup:
            lr *= max(0.01, f / self.cfg.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds, "start": self.start, "end": self.end, "fraction": self.fraction()}


def supernet_config(cfg: BenchNB201Config, strategy: str, run_dir: Path) -> SupernetConfig:
    """The `run.py supernet` configuration of one supernet of the benchmark."""
    return SupernetConfig(
        run_dir=str(run_dir), seed=cfg.seed, device=cfg.device, dataset=cfg.dataset, data_dir=cfg.data_dir,
        num_classes=cfg.num_classes, image_size=cfg.image_size, search_size=cfg.search_size, threads=cfg.threads,
        quiet=cfg.quiet, space="nb201", space_opts=dict(cfg.space_opts), strategy=strategy,
        sandwich_k=cfg.sandwich_k, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay, recal_images=max(cfg.recal), panel_random=0, checkpoint_minutes=0,
        split_seed=cfg.split_seed,
    )  # fmt: skip


def train_for(trainer: SupernetTrainer, cfg: BenchNB201Config, seconds: float, start: float = 0.0,
              end: float = 1.0, steps: int = 0) -> dict[str, Any]:  # fmt: skip
    """Train until `seconds` of wall-clock time (or `steps`, or `cfg.max_steps`) are spent; save and return stats."""
    trainer.scheduler = TimeCosine(trainer.optimizer, cfg, seconds, start, end, steps)  # time, not steps, by default
    trainer.scheduler.step_update(0)
    t0 = last_log = time.monotonic()
    losses: list[float] = []
    epoch, done = 0, False
    while not done:
        trainer.loader.set_epoch(epoch)
        for x, y in trainer.loader:
            value = trainer.train_step(x, y)
            if value is not None:
                losses.append(value)
            now = time.monotonic()
            if now - last_log > 60:
                log.info("  step %d, %.0f s, loss %.3f", trainer.step, now - t0, np.mean(losses[-100:]))
                last_log = now
            if (now - t0 >= seconds if not steps else trainer.step >= steps) or (
                cfg.max_steps and trainer.step >= cfg.max_steps
            ):
                done = True
                break
        epoch += 1
    trainer.save(finished=True)
    elapsed = time.monotonic() - t0
    return {
        "steps": trainer.step,
        "paths_per_step": len(trainer.sampler.archs(0)),
        "images": trainer.step * cfg.batch_size,
        "epochs": trainer.step * cfg.batch_size / len(trainer.data.train),
        "seconds": round(elapsed, 1),
        "ms_per_step": round(1000 * elapsed / max(trainer.step, 1), 1),
        "final_loss": float(np.mean(losses[-100:])) if losses else float("nan"),
    }


class EdgeSplitSampler:
    """The sampler of one few-shot sub-supernet: the trainer's archs with one edge's op fixed."""

    def __init__(self, base: Any, edge: int, op: str) -> None:
        self.base, self.edge, self.op = base, edge, op

    def archs(self, step: int) -> list[Hashable]:
        return [a[: self.edge] + (self.op,) + a[self.edge + 1 :] for a in self.base.archs(step)]


def _signature(cfg: BenchNB201Config, strategy: str) -> dict[str, Any]:
    keys = ("seed", "dataset", "data_dir", "search_size", "split_seed", "space_opts", "budget_minutes", "max_steps",
            "batch_size", "lr", "min_lr", "weight_decay", "warmup", "sandwich_k")  # fmt: skip
    sig = {k: getattr(cfg, k) for k in keys} | {"strategy": strategy}
    sig["data_dir"] = _absolute(sig["data_dir"])  # the same data, whichever directory the command ran from
    if strategy == "fewshot":
        sig |= {k: getattr(cfg, k) for k in ("fewshot_edge", "fewshot_share", "fewshot_inner")}
    return sig


def _absolute(path: Any) -> Any:
    return str(Path(path).resolve()) if isinstance(path, str) and path else path


def train_supernet(cfg: BenchNB201Config, strategy: str, root: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Train (or reuse) one strategy's supernet(s); returns stats and {op or '': checkpoint}."""
    out = root / strategy
    record = out / "train.json"
    sig = _signature(cfg, strategy)
    ops = OPS if strategy == "fewshot" else ("",)
    ckpts = {op: out / (f"split-{op}" if op else "") / "supernet" / "last.pt" for op in ops}
    if cfg.reuse and record.exists() and all(p.exists() for p in ckpts.values()):
        saved = json.loads(record.read_text())
        before = dict(saved.get("signature") or {})
        before["data_dir"] = _absolute(before.get("data_dir"))
        now = json.loads(json.dumps(sig))
        if before == now:
            log.info("%s: reusing the supernet trained in %s", strategy, out)
            return saved["stats"] | {"reused": True}, ckpts
        differ = ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in now if before.get(k) != now.get(k))
        log.warning("%s: the supernet in %s was trained with other settings (%s): training it again", strategy, out,
                    differ)  # fmt: skip
    budget = cfg.budget_minutes * 60
    log.info("%s: training for %.1f min", strategy, cfg.budget_minutes)
    if strategy != "fewshot":
        trainer = SupernetTrainer(supernet_config(cfg, strategy, out))
        stats = train_for(trainer, cfg, budget)
    else:
        stats = _train_fewshot(cfg, out, budget)
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"signature": sig, "stats": stats}, indent=1))
    return stats, ckpts


def _train_fewshot(cfg: BenchNB201Config, out: Path, budget: float) -> dict[str, Any]:
    share = cfg.fewshot_share
    inner = cfg.fewshot_inner  # under sandwich, each sub-supernet's largest (edge op fixed) is its teacher
    base = SupernetTrainer(supernet_config(cfg, inner, out / "base"))
    stats: dict[str, Any] = {"base": train_for(base, cfg, budget * share, 0.0, share)}
    weights = {k: v.clone() for k, v in base.net.state_dict().items()}
    del base
    for op in OPS:  # every sub-supernet starts from the shared weights and continues the cosine
        sub = SupernetTrainer(supernet_config(cfg, inner, out / f"split-{op}"))
        sub.net.load_state_dict(weights)
        sub.sampler = EdgeSplitSampler(sub.sampler, cfg.fewshot_edge, op)
        stats[op] = train_for(sub, cfg, budget * (1 - share) / len(OPS), share, 1.0)
    parts = list(stats.values())
    stats.update({k: sum(p[k] for p in parts) for k in ("steps", "images", "seconds")})
    stats["epochs"] = sum(p["epochs"] for p in parts)
    stats["final_loss"] = float(np.mean([stats[op]["final_loss"] for op in OPS]))
    return stats


# ---- evaluation: ranking quality and search ------------------------------------------------------


class FewShotEvaluator:
    """Scores each arch with the sub-supernet owning its (canonical) op on the split edge.

    One `SupernetEvaluator` holds the data and loaders; the sub-supernets' weights are swapped in
    (a small state dict) when the op changes, so five sub-supernets cost one copy of the data.
    """

    def __init__(self, space: Any, checkpoints: dict[str, Path], edge: int, **kw: Any) -> None:
        from core.checkpoint import load_checkpoint
        from search.evaluators.supernet import SupernetEvaluator

        self.space, self.edge = space, edge
        self.inner = SupernetEvaluator(space, checkpoints[OPS[0]], **kw)
        self.weights = {op: load_checkpoint(p)["model"] for op, p in checkpoints.items()}
        self.current = OPS[0]
        self.cache: dict[Hashable, dict[str, Any]] = {}

    def score(self, arch: Hashable) -> dict[str, Any]:
        key = self.space.canonical(arch)
        if key not in self.cache:
            op = key[self.edge]
            if op != self.current:
                self.inner.net.load_state_dict(self.weights[op])
                self.current = op
            self.cache[key] = self.inner.score(key)  # each canonical form has one op here: no cache clash
        return dict(self.cache[key])

    def evaluate(self, archs: list[Hashable]) -> list[dict[str, Any]]:
        return [self.score(a) for a in archs]


def make_evaluator(cfg: BenchNB201Config, space: Any, ckpts: dict[str, Path], recal: int) -> Any:
    kw = {"device": cfg.device, "recal_images": recal, "batch_size": cfg.eval_batch, "score": cfg.score}
    if "" in ckpts:
        from search.evaluators.supernet import SupernetEvaluator

        return SupernetEvaluator(space, ckpts[""], **kw)
    return FewShotEvaluator(space, ckpts, cfg.fewshot_edge, **kw)
