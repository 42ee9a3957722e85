"""Options of `run.py bench-nb201` (`BenchNB201Config`) and the supernet training strategies it compares."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, opt
from core.errors import UserError
from supernet.nets.nb201 import EDGES

STRATEGIES = ("uniform", "sandwich", "fair", "fewshot")


@dataclass
class BenchNB201Config(CommonConfig):
    """Train NB201 supernets under a time budget; rank quality and search results against the table."""

    dataset: str = opt(
        "imagefolder", "dataset name", choices=("cifar10-mini", "cifar10", "cifar100", "imagefolder", "synthetic")
    )
    threads: int = opt(1, "torch compute threads (1: timings comparable on a shared machine)")
    table: str = opt("", "NAS-Bench-201 CSV, one row per cell (e.g. ../shared/benchmarks/nb201.csv)")
    truth: str = opt("c10_test_200ep", "table column taken as the ground truth")
    proxy: str = opt("c10_valid_12ep", "table column reported as a reference ranking ('' to skip)")
    budget_minutes: float = opt(5.0, "wall-clock training minutes per supernet (the same for every strategy)")
    max_steps: int = opt(0, "also stop each supernet after this many steps (0: the time budget only)")
    strategies: list[str] = opt(["uniform", "sandwich", "fair"], "supernets to compare: uniform,sandwich,fair,fewshot")
    recal: list[int] = opt([500, 0], "BN recalibration images per comparison (0: off); the first is used to search")
    n_archs: int = opt(200, "architectures drawn uniformly from the table (distinct canonical forms)")
    n_top: int = opt(50, "extra architectures drawn from the table's best tenth, for the top-tenth correlation")
    bootstrap: int = opt(1000, "bootstrap resamples of each confidence interval")
    searchers: list[str] = opt(["lanas", "evolution", "random"], "searchers run on the supernet evaluator")
    search_seeds: int = opt(3, "seeds per searcher")
    search_budget: int = opt(60, "distinct architectures each search evaluates")
    search_batch: int = opt(5, "architectures per propose/observe round")
    search_on: str = opt(
        "first", "supernets searched: first (first strategy), all, or none", choices=("first", "all", "none")
    )
    space_opts: dict = opt({"channels": 8, "cells": 1}, "NB201 macro network (C, N): smaller than 16/5 fits a CPU")
    batch_size: int = opt(64, "training batch size")
    lr: float = opt(0.05, "peak learning rate of the time-based cosine schedule")
    min_lr: float = opt(0.0, "learning rate when the budget is spent")
    weight_decay: float = opt(3e-4, "weight decay")
    warmup: float = opt(0.02, "linear warm-up as a fraction of the budget")
    sandwich_k: int = opt(2, "sandwich: random subnets per step besides the largest and the smallest")
    fewshot_edge: int = opt(0, "few-shot: the edge (0..5) whose op splits the supernet into 5 sub-supernets")
    fewshot_share: float = opt(0.5, "few-shot: budget share of the shared one-shot phase before the split")
    fewshot_inner: str = opt(
        "uniform", "few-shot: sampling rule of the shared phase and each sub-supernet", choices=("uniform", "sandwich")
    )
    size_prior: str = opt(
        "params", "also rank and search with the score averaged with a size percentile ('': off)",
        choices=("", "params", "mflops"),
    )  # fmt: skip
    final_k: int = opt(
        0, "retrain the K best-scored cells of each search alone and return the best on the search split (0: off)"
    )
    final_on: str = opt(
        "prior", "searches that go through --final-k: prior (those on the --size-prior score, if on), all",
        choices=("prior", "all"),
    )  # fmt: skip
    final_searchers: list[str] = opt(["lanas"], "searchers whose results go through the --final-k stage")
    final_workers: int = opt(1, "cells trained alone at once by --final-k, one process each (--threads each)")
    final_space_opts: dict = opt(
        {}, "macro network of the cells trained alone (empty: --space-opts), e.g. channels=8 cells=5"
    )
    final_epochs: float = opt(3.0, "training epochs of each cell trained alone by --final-k (cosine, from scratch)")
    eval_batch: int = opt(500, "evaluation batch size")
    score: str = opt("acc", "supernet score: acc (top-1 on the search split) or nll (minus cross-entropy)",
                     choices=("acc", "nll"))  # fmt: skip
    reuse: bool = opt(True, "reuse a supernet this run directory already trained with the same settings")
    json: str = opt("", "write all figures to this JSON file")
    plot: str = opt("", "scatter plot PNG (default: <run_dir>/ranking.png)")
    split_seed: int = opt(0, "seed of the search split carved from the training set")
    sample_seed: int = opt(0, "seed of the architectures drawn for the ranking")

    def validate(self) -> None:
        super().validate()
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise UserError(f"--strategies {bad or '(empty)'}: choose from {', '.join(STRATEGIES)}")
        if not self.recal or any(r < 0 for r in self.recal):
            raise UserError("--recal needs one or more image counts >= 0 (0: recalibration off), e.g. 500,0")
        if self.budget_minutes <= 0 or self.max_steps < 0:
            raise UserError("--budget-minutes must be > 0 and --max-steps >= 0")
        if self.n_archs < 3 or self.n_top < 0 or self.bootstrap < 0:
            raise UserError("--n-archs must be >= 3, --n-top and --bootstrap >= 0")
        if self.search_seeds < 0 or self.search_budget < 1 or self.search_batch < 1:
            raise UserError("--search-seeds >= 0, --search-budget >= 1 and --search-batch >= 1 are required")
        if not 0 <= self.fewshot_edge < len(EDGES) or not 0 < self.fewshot_share < 1:
            raise UserError(f"--fewshot-edge must be in 0..{len(EDGES) - 1} and --fewshot-share in (0, 1)")
        if self.final_k < 0 or self.final_epochs <= 0 or self.final_workers < 1:
            raise UserError("--final-k must be >= 0, --final-epochs > 0 and --final-workers >= 1")
        if self.batch_size < 1 or self.lr <= 0 or not 0 <= self.warmup < 1:
            raise UserError("--batch-size >= 1, --lr > 0 and 0 <= --warmup < 1 are required")
