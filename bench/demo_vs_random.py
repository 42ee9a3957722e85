"""The pipeline's found architecture against its random baseline of the same MFLOPs, over seeds.

    python -m bench.demo_vs_random checkpoints/demo-s*  [--json docs/bench/demo-seeds.json]

Each argument is the run directory of one `run.py pipeline` run with `baseline: true` (one seed
each). Prints the per-seed test top-1 of the retrained best architecture (`retrain/top1`) and of
the random one (`retrain/baseline-random`), then the mean difference, its standard error, the
paired t and an exact one-sided sign-flip permutation p-value (all 2^n sign patterns of the
differences, so no distributional assumption), and how many seeds the search wins.

The embedded test split has 1,000 images, so two models that disagree on a fifth of them differ by
about 1.4 points from the test sample alone. `--heldout ../shared/data/cifar10-jpeg.zip` also
evaluates both retrained models of each run on the CIFAR-10 test images the embedded set lacks
(9,000, matched by file bytes) and gives the same statistics there (each figure is kept in the
run's `retrain/<id>/heldout.json` and reused). Results: docs/demo.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.config import load_yaml
from core.data import ImageSet, TensorLoader
from core.data.datasets import CIFAR_MEAN, CIFAR_STD, test_images_not_in
from core.errors import CheckpointError, UserError
from retrain.evaluate import evaluate
from retrain.inputs import model_from_checkpoint


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


def digest(*blobs: bytes) -> str:
    h = hashlib.sha256()
    for b in blobs:
        h.update(b)
    return h.hexdigest()[:16]


def heldout_top1(run_dir: Path, arch_id: str, test: ImageSet) -> float:
    """Test top-1 of the run's retrained `arch_id` on `test` (CIFAR normalisation, as cifar10-mini).

    The figure is kept in `retrain/<arch_id>/heldout.json`, keyed by the checkpoint's and the test
    images' digests, so adding seeds later re-evaluates only the new runs.
    """
    config = run_dir / "pipeline.config.yaml"
    dataset = load_yaml(str(config)).get("dataset") if config.exists() else None
    if dataset != "cifar10-mini":
        raise UserError(f"{run_dir} trained on {dataset or 'unknown data'}: --heldout compares cifar10-mini runs only")
    ckpt = run_dir / "retrain" / arch_id / "last.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt} is missing: has the pipeline in {run_dir} finished?")
    key = {
        "checkpoint": digest(ckpt.read_bytes()),
        "images": digest(test.images.numpy().tobytes(), test.labels.numpy().tobytes()),
    }
    cache = ckpt.with_name("heldout.json")
    if cache.exists():
        saved = json.loads(cache.read_text())
        if {k: saved.get(k) for k in key} == key:
            return float(saved["top1"])
    net, _ = model_from_checkpoint(ckpt, num_classes=10)
    batches = TensorLoader(test, 250, mean=CIFAR_MEAN, std=CIFAR_STD)
    top1 = evaluate(net, tqdm(batches, desc=f"{run_dir.name} {arch_id}", leave=False), contextlib.nullcontext)["top1"]
    cache.write_text(json.dumps({**key, "n": len(test), "top1": top1}))
    return top1


def _print_summary(rows: list[dict], found_key: str, random_key: str, where: str) -> dict[str, Any]:
    diff = np.array([r[found_key] - r[random_key] for r in rows])
    for r, d in zip(rows, diff, strict=True):
        print(f"{r['run']}: found {r[found_key]:.2f}%  random {r[random_key]:.2f}%  {d:+.2f}")
    s = paired_summary(diff)
    found, rand = float(np.mean([r[found_key] for r in rows])), float(np.mean([r[random_key] for r in rows]))
    print(f"{where}, {s['n']} seeds: found {found:.2f}% vs random {rand:.2f}%, {s['mean']:+.2f} points "
          f"(SE {s['se']:.2f}, paired t {s['t']:.2f}, one-sided sign-flip p {s['p_one_sided']:.3f}); "
          f"ahead in {s['wins']}, level in {s['ties']}, behind in {s['losses']}")  # fmt: skip
    return {"summary": s, "found_mean": found, "random_mean": rand}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="pipeline run directories, one seed each")
    p.add_argument("--json", default="", help="also write the table and the summary here")
    p.add_argument("--heldout", default="", help="CIFAR-10 JPEG zip: also compare on its test images not embedded")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for --heldout")
    args = p.parse_args(argv)
    rows = []
    try:
        for run in map(Path, args.runs):
            found, rand = read_test_top1(run, "top1"), read_test_top1(run, "baseline-random")
            rows.append({"run": str(run), "found": found, "random": rand})
        out = _print_summary(rows, "found", "random", "embedded test split")
        if args.heldout:
            torch.set_num_threads(args.threads)
            test = test_images_not_in(args.heldout)
            for r in rows:
                r["found_heldout"], r["random_heldout"] = (
                    heldout_top1(Path(r["run"]), a, test) for a in ("top1", "baseline-random")
                )
            out["heldout"] = {"images": len(test), **_print_summary(rows, "found_heldout", "random_heldout",
                                                                     f"{len(test)} held-out test images")}  # fmt: skip
    except (FileNotFoundError, KeyError, ValueError, UserError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows, **out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
