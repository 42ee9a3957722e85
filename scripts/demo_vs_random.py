"""The pipeline's found architecture against its random baseline of the same MFLOPs, over seeds.

    python scripts/demo_vs_random.py checkpoints/demo-s*  [--json docs/bench/demo-seeds.json]

Each argument is the run directory of one `run.py pipeline` run with `baseline: true` (one seed
each). Prints the per-seed test top-1 of the retrained best architecture (`retrain/top1`) and of
the random one (`retrain/baseline-random`), then the mean difference, its standard error, the
paired t and an exact one-sided sign-flip permutation p-value (all 2^n sign patterns of the
differences, so no distributional assumption), and how many seeds the search wins.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np


def read_test_top1(run_dir: Path, arch_id: str) -> float:
    report = run_dir / "retrain" / arch_id / "report.json"
    if not report.exists():
        raise FileNotFoundError(f"{report} is missing: has the pipeline in {run_dir} finished?")
    return float(json.loads(report.read_text())["final"]["test_top1"])


def paired_summary(diff: np.ndarray) -> dict[str, float]:
    """Mean, standard error, paired t and the exact one-sided sign-flip p-value of `diff` > 0."""
    n = len(diff)
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n))) if n <= 20 else None
    if signs is None:  # too many patterns: a fixed Monte Carlo sample of them
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(200_000, n))
    p = float(np.mean((signs * np.abs(diff)).mean(axis=1) >= mean - 1e-12))
    return {"n": n, "mean": mean, "se": se, "t": mean / se if se else float("nan"), "p_one_sided": p,
            "wins": int((diff > 0).sum()), "ties": int((diff == 0).sum()), "losses": int((diff < 0).sum())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="pipeline run directories, one seed each")
    p.add_argument("--json", default="", help="also write the table and the summary here")
    args = p.parse_args(argv)
    rows = []
    try:
        for run in map(Path, args.runs):
            found, rand = read_test_top1(run, "top1"), read_test_top1(run, "baseline-random")
            rows.append({"run": str(run), "found": found, "random": rand})
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    diff = np.array([r["found"] - r["random"] for r in rows])
    for r, d in zip(rows, diff, strict=True):
        print(f"{r['run']}: found {r['found']:.1f}%  random {r['random']:.1f}%  {d:+.1f}")
    s = paired_summary(diff)
    found, rand = np.mean([r["found"] for r in rows]), np.mean([r["random"] for r in rows])
    print(f"{s['n']} seeds: found {found:.2f}% vs random {rand:.2f}%, {s['mean']:+.2f} points (SE {s['se']:.2f}, "
          f"paired t {s['t']:.2f}, one-sided sign-flip p {s['p_one_sided']:.3f}); "
          f"ahead in {s['wins']}, level in {s['ties']}, behind in {s['losses']}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, "summary": s, "found_mean": found, "random_mean": rand},
                                              indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
