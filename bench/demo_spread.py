"""How much can any search gain over a random architecture of the same MFLOPs? Retrain random ones.

    python -m bench.demo_spread --preset demo --target-mflops 8.8 --archs 12 --seeds 2 --workers 2 \
        --run-dir checkpoints/demo-spread --json docs/bench/demo-spread.json

Samples `--archs` distinct random architectures within ±10% of `--target-mflops` (counted at
the supernet's width, as a search's journal does; the pipeline's baseline matches ±2% at the
retraining width instead) and retrains each `--seeds` times with the preset's
retrain recipe (`run.py retrain --preset P --seed S`, one thread per run, `--workers` runs at once).
Runs already finished under `--run-dir` are reused, so an interrupted study resumes.

It then splits the variance of the test top-1 into the part that comes with the architecture and
the part that comes with the seed (one-way random-effects ANOVA). The architecture part bounds what
a search can gain at equal cost: even a search that knew every architecture's true accuracy
gains, over a random architecture, about the expected maximum of `--pool` draws of that spread.

`--supernets RUN...` then scores the same architectures with each run's supernet, the way the
preset's search does (its score and recalibration), and prints Kendall's tau between those scores
and the architectures' retrained means: how well a supernet orders architectures of equal cost.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.ranking import kendall_tau
from core.config import load_yaml, preset_path
from core.errors import UserError
from supernet.spaces.base import Space, make_space

ROOT = Path(__file__).resolve().parents[1]  # the repository: run.py and the presets


def sample_same_flops(space: Space, target: float, n: int, seed: int, tolerance: float = 0.1) -> list:
    """`n` distinct random architectures within ±tolerance of `target` MFLOPs."""
    rng = np.random.default_rng([seed, 0x5B2EAD])
    found: dict[str, object] = {}
    for _ in range(200_000):
        arch = space.sample(rng)
        if abs(space.cost(arch).mflops - target) <= tolerance * target:
            found.setdefault(space.canonical(arch), arch)
            if len(found) == n:
                return list(found.values())
    raise UserError(f"only {len(found)} architectures within ±{tolerance:.0%} of {target} MFLOPs; pick another target")


def variance_components(acc: np.ndarray) -> dict[str, float]:
    """One-way random-effects ANOVA of an (archs, seeds) table: the arch and the seed standard deviations."""
    a, r = acc.shape
    within = float(acc.var(axis=1, ddof=1).mean())  # seed-to-seed variance of one architecture
    between = float(acc.mean(axis=1).var(ddof=1))  # variance of the architectures' means
    arch_var = max(0.0, between - within / r)
    f = between * r / within if within > 0 else float("inf")
    return {"arch_sd": arch_var**0.5, "seed_sd": within**0.5, "f": f, "df": (a - 1, a * (r - 1))}


def expected_max(n: int, draws: int = 200_000, seed: int = 0) -> float:
    """E[max of n standard normals], by simulation."""
    return float(np.random.default_rng(seed).standard_normal((draws, n)).max(axis=1).mean())


def retrain(preset: str, arch_json: str, seed: int, run_dir: Path, arch_id: str, core: int | None) -> float:
    report = run_dir / "retrain" / arch_id / "report.json"
    if not report.exists():
        cmd = [sys.executable, str(ROOT / "run.py"), "retrain", "--preset", preset, "--arch", arch_json, "--seed",
               str(seed), "--threads", "1", "--run-dir", str(run_dir), "--arch-id", arch_id, "--quiet"]  # fmt: skip
        if core is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(core), *cmd]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0 or not report.exists():
            raise UserError(f"retraining {arch_id} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return float(json.loads(report.read_text())["final"]["test_top1"])


def equal_cost_tau(scores: Any, means: Any, mflops: Any) -> float:
    """Kendall's tau after a straight line in MFLOPs is taken out of both: how well `scores` orders
    architectures of equal cost (the band's small MFLOPs differences move accuracy too)."""
    x = np.vstack([np.asarray(mflops, dtype=float), np.ones(len(mflops))]).T

    def resid(v: Any) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        return v - x @ np.linalg.lstsq(x, v, rcond=None)[0]

    return kendall_tau(resid(scores), resid(means))


def supernet_taus(space: Space, archs: list, means: np.ndarray, runs: list[str], search: dict) -> list[dict]:
    """Per run: Kendall's tau between its search's scores of `archs` and `means`, raw and at equal cost.

    Always the supernet's accuracy and minus cross-entropy ("acc", "nll"); with the preset's
    `prior: gradnorm`, also the gradient-norm proxy alone and the prior's averaged score, computed as
    the run's search computes them (its seed, data and reference architectures, read from the run's
    pipeline.config.yaml).
    """
    from types import SimpleNamespace

    from search.evaluators.gradnorm import GradNorm
    from search.evaluators.prior import SizePrior
    from search.evaluators.supernet import SupernetEvaluator, find_supernet_checkpoint

    mflops = [space.cost(a).mflops for a in archs]
    out = []
    for run in runs:
        ckpt = find_supernet_checkpoint(run)
        ev = SupernetEvaluator(space, ckpt, recal_images=int(search.get("recal_images", 2000)), score="nll")
        scores = [ev.score(a) for a in archs]
        found = {"acc": [r["acc"] for r in scores], "nll": [-r["loss"] for r in scores]}
        if search.get("prior") == "gradnorm":
            cfg_file = Path(run) / "pipeline.config.yaml"
            if not cfg_file.exists():
                raise UserError(f"{cfg_file} is missing: --supernets takes `run.py pipeline` run directories")
            run_cfg = SimpleNamespace(**load_yaml(str(cfg_file)))
            proxy = GradNorm(space, run_cfg, reps=int(search.get("prior_reps", 4)))
            prior = SizePrior(ev, space, size="gradnorm", seed=int(run_cfg.seed), proxy=proxy,
                              reference=int(search.get("prior_reference", 100)))  # fmt: skip
            found["gradnorm"] = [proxy(a) for a in archs]
            found["prior"] = [prior.combine(a, v)["metric"] for a, v in zip(archs, found["nll"], strict=True)]
        row: dict[str, Any] = {"run": run}
        for name, v in found.items():
            row[f"tau_{name}"] = kendall_tau(v, means)
            row[f"tau_{name}_eq"] = equal_cost_tau(v, means, mflops)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="demo", help="the preset whose space and retrain recipe to use")
    p.add_argument("--target-mflops", type=float, required=True, help="MFLOPs of the searched space to match")
    p.add_argument("--archs", type=int, default=10, help="random architectures to retrain")
    p.add_argument("--seeds", type=int, default=2, help="retrains per architecture (seeds 0..N-1)")
    p.add_argument("--seed", type=int, default=0, help="which random architectures")
    p.add_argument("--pool", type=int, default=30, help="a search's pool size, for the oracle's expected gain")
    p.add_argument("--workers", type=int, default=1, help="retrains at once, one thread each")
    p.add_argument("--run-dir", required=True, help="where the retrains go")
    p.add_argument("--json", default="", help="write the table and the figures here")
    p.add_argument("--supernets", nargs="*", default=[], help="pipeline run dirs whose supernets to rank these with")
    args = p.parse_args(argv)
    try:
        if args.archs < 2 or args.seeds < 2:
            raise UserError("--archs and --seeds must be at least 2 to split the variance")
        data = load_yaml(preset_path(args.preset))
        space = make_space(data["space"], **data.get("space_opts", {}))
        archs = sample_same_flops(space, args.target_mflops, args.archs, args.seed)
        run_dir = Path(args.run_dir)
        jobs = [(i, s) for i in range(len(archs)) for s in range(args.seeds)]
        mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        free: queue.Queue = queue.Queue()  # one core per running retrain, handed back when it ends
        for core in mine[: args.workers] if len(mine) >= args.workers else [None] * args.workers:
            free.put(core)

        def run(k: int) -> float:
            i, s = jobs[k]
            core = free.get()
            try:
                return retrain(args.preset, json.dumps(space.to_json(archs[i])), s, run_dir, f"a{i}-s{s}", core)
            finally:
                free.put(core)

        with ThreadPoolExecutor(args.workers) as pool:
            acc = np.array(list(pool.map(run, range(len(jobs))))).reshape(len(archs), args.seeds)
        taus = supernet_taus(space, archs, acc.mean(axis=1), args.supernets, data.get("search", {}))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    comp = variance_components(acc)
    e_max = expected_max(args.pool)
    for i, arch in enumerate(archs):
        row = "  ".join(f"{v:5.1f}" for v in acc[i])
        print(f"a{i}: {space.cost(arch).mflops:6.2f} MFLOPs  {row}  mean {acc[i].mean():5.2f}  {space.to_str(arch)}")
    print(f"mean {acc.mean():.2f}; architecture sd {comp['arch_sd']:.2f}, seed sd {comp['seed_sd']:.2f} "
          f"(F {comp['f']:.2f} on {comp['df'][0]}, {comp['df'][1]} df); an oracle picking the best of {args.pool} "
          f"gains about {e_max * comp['arch_sd']:.2f} points over a random one")  # fmt: skip
    names = [k[4:] for k in (taus[0] if taus else {}) if k.startswith("tau_")]
    for t in taus:
        print(
            f"{t['run']}: Kendall tau with the retrained means (_eq: at equal cost): "
            + ", ".join(f"{n} {t['tau_' + n]:.2f}" for n in names)
        )
    if taus:
        print(f"mean over {len(taus)} supernets: " + ", ".join(f"{n} {np.mean([t['tau_' + n] for t in taus]):.3f}"
                                                             for n in names))  # fmt: skip
    if args.json:
        out = {"preset": args.preset, "target_mflops": args.target_mflops, "seeds": args.seeds,
               "archs": [{"arch": space.to_json(a), "str": space.to_str(a), "mflops": space.cost(a).mflops,
                          "test_top1": acc[i].tolist()} for i, a in enumerate(archs)],
               **comp, "pool": args.pool, "oracle_gain": e_max * comp["arch_sd"], "supernets": taus}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
