"""One-shot against `--few-shot` supernets on NAS-Bench-201 at equal training: Kendall's tau against the table.

    python -m bench.fewshot_rank --table nb201.csv --few-shot edge3 --epochs 6 --archs 100 --json out.json

Both supernets are trained by `run.py supernet`'s own trainer with the same seed, data, recipe and
number of steps (the few-shot one splits after `--warmup` of them), then the same `--archs` cells,
drawn uniformly from the table, are scored by the search's supernet evaluator (BN recalibration on
`--recal` images) and ranked against the table's `c10_test_200ep`. A small CPU check of the
product's few-shot path, not the wall-clock study of `run.py bench-nb201`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from bench.ranking import correlation_report
from search.evaluators.supernet import SupernetEvaluator
from search.evaluators.table import load_table
from supernet.config import SupernetConfig
from supernet.spaces.base import make_space
from supernet.train import SupernetTrainer

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", required=True)
    p.add_argument("--few-shot", default="edge3")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--cells", type=int, default=1)
    p.add_argument("--archs", type=int, default=100)
    p.add_argument("--recal", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default="checkpoints/bench-fewshot-rank")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opts = {"channels": args.channels, "cells": args.cells}
    space = make_space("nb201", **opts)
    rows = load_table(args.table, "arch", ("c10_test_200ep",))
    rng = np.random.default_rng([args.seed, 0x201])
    names = list(rows)
    archs, seen = [], set()
    for i in rng.permutation(len(names)):
        arch = space.from_str(names[i])
        if space.canonical(arch) not in seen:
            seen.add(space.canonical(arch))
            archs.append(arch)
        if len(archs) >= args.archs:
            break
    truth = np.array([rows[space.to_str(a)][0] for a in archs])
    out: dict = {"args": vars(args), "supernets": {}}
    for name, few_shot in (("one-shot", ""), (f"few-shot {args.few_shot}", args.few_shot)):
        run = Path(args.run_dir) / name.replace(" ", "-")
        cfg = SupernetConfig(run_dir=str(run), space="nb201", space_opts=opts, epochs=args.epochs, batch_size=64,
                             lr=0.05, seed=args.seed, search_size=500, recal_images=args.recal, panel_random=1,
                             quiet=True, few_shot=few_shot, few_shot_warmup=args.warmup, resume="auto")  # fmt: skip
        t0 = time.monotonic()
        result = SupernetTrainer(cfg).fit()
        train_s = time.monotonic() - t0
        ev = SupernetEvaluator(space, run / "supernet" / "last.pt", recal_images=args.recal, device="cpu")
        scores = np.array([r["metric"] for r in ev.evaluate(archs)])
        report = correlation_report(scores, truth, 1000, args.seed)
        out["supernets"][name] = {"steps": result["step"], "train_seconds": round(train_s, 1), **report}
        log.info("%s: %d steps, tau %.3f %s, rho %.3f", name, result["step"], report["tau"], report["tau_ci"],
                 report["rho"])  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
