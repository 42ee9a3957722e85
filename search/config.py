"""Configuration of the search stage (`run.py search`).

One dataclass per command, in the style of `core/config.py`: every field documents itself (its
help becomes `--help`), and values are checked on construction with a one-line `UserError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import AmpOptions, CommonConfig, SpaceOptions, opt
from core.errors import UserError
from search.executors import ExecutorConfig, validate_executor

BUILTIN_SEARCHERS = ("lanas", "evolution", "random")
BUILTIN_EVALUATORS = ("supernet", "train", "table")


@dataclass
class SearchConfig(SpaceOptions, AmpOptions, CommonConfig, ExecutorConfig):
    """`run.py search`: propose architectures, evaluate them, keep the best under cost bounds."""

    evaluator: str = opt("supernet", "how archs are scored: supernet, train, table or module:function")
    table: str = opt("", "CSV of precomputed metrics for --evaluator table (e.g. the NAS-Bench-201 table as nb201.csv)")
    arch_column: str = opt("arch", "table column holding the space's arch string (space.to_str)")
    metric: str = opt("c10_valid_12ep", "table column to maximise (--evaluator table)")
    report_metric: str = opt("", "table column recorded beside the metric, never searched on (e.g. a test accuracy)")
    searcher: str = opt("lanas", "search strategy: lanas, evolution, random or module:Class")
    searcher_opts: dict = opt({}, "keyword options for the searcher (e.g. height=5 cp=0.5), KEY=VALUE")
    budget: int = opt(200, "number of architectures to evaluate (distinct networks)")
    time_budget_minutes: float = opt(0.0, "stop after this much wall time as well (0: no time limit)")
    batch: int = opt(1, "architectures proposed per round (q); evaluated together")
    max_mflops: float = opt(0.0, "upper bound on MFLOPs (multiply-accumulates); 0: none")
    min_mflops: float = opt(0.0, "lower bound on MFLOPs; 0: none")
    max_params: float = opt(0.0, "upper bound on parameters in millions; 0: none")
    latency_table: str = opt(
        "", "latency table (run.py latency-table): --max/--min-latency-ms, and the accuracy-latency front"
    )
    max_latency_ms: float = opt(0.0, "upper bound on predicted latency in ms (needs --latency-table); 0: none")
    min_latency_ms: float = opt(0.0, "lower bound on predicted latency in ms (needs --latency-table); 0: none")
    topk: int = opt(5, "how many of the best architectures go into topk.json")
    supernet_ckpt: str = opt("", "supernet checkpoint for --evaluator supernet (default: <run_dir>/supernet/best.pt)")
    score: str = opt(
        "acc",
        "supernet evaluator: what to maximise on the search split: acc (top-1) or nll (minus cross-entropy)",
        choices=("acc", "nll"),
    )
    recal_images: int = opt(2000, "supernet evaluator: training images to re-estimate BatchNorm statistics per arch")
    prior: str = opt(
        "",
        "average the score's percentile with the arch's size percentile (params, mflops) or with a zero-cost "
        "proxy's, gradnorm: the log gradient norm at initialisation ('': off)",
        choices=("", "params", "mflops", "gradnorm"),
    )
    prior_reference: int = opt(100, "with --prior: uniform archs scored first, beyond --budget")
    prior_reps: int = opt(4, "with --prior gradnorm: (initialisation, batch of 64) pairs averaged per arch")
    train_epochs: int = opt(1, "train evaluator: epochs of from-scratch training per candidate")
    train_batch_size: int = opt(64, "train evaluator: batch size")
    train_lr: float = opt(0.05, "train evaluator: peak learning rate (cosine schedule)")

    def validate(self) -> None:
        super().validate()
        if self.budget < 1:
            raise UserError(f"--budget must be >= 1 evaluation, got {self.budget}")
        if self.batch < 1:
            raise UserError(f"--batch must be >= 1, got {self.batch}")
        if self.time_budget_minutes < 0 or self.topk < 1:
            raise UserError("--time-budget-minutes must be >= 0 and --topk >= 1")
        if min(self.max_mflops, self.min_mflops, self.max_params) < 0:
            raise UserError("--max-mflops, --min-mflops and --max-params must be >= 0 (0 disables a bound)")
        if self.max_mflops and self.min_mflops > self.max_mflops:
            raise UserError(f"--min-mflops {self.min_mflops} is above --max-mflops {self.max_mflops}")
        if min(self.max_latency_ms, self.min_latency_ms) < 0:
            raise UserError("--max-latency-ms and --min-latency-ms must be >= 0 (0 disables a bound)")
        if self.max_latency_ms and self.min_latency_ms > self.max_latency_ms:
            raise UserError(f"--min-latency-ms {self.min_latency_ms} is above --max-latency-ms {self.max_latency_ms}")
        if (self.max_latency_ms or self.min_latency_ms) and not self.latency_table:
            raise UserError("--max/--min-latency-ms need --latency-table FILE (build one with run.py latency-table)")
        if self.searcher not in BUILTIN_SEARCHERS and ":" not in self.searcher:
            raise UserError(f"--searcher {self.searcher!r}: use {', '.join(BUILTIN_SEARCHERS)} or module:Class")
        if self.evaluator not in BUILTIN_EVALUATORS and ":" not in self.evaluator:
            raise UserError(f"--evaluator {self.evaluator!r}: use {', '.join(BUILTIN_EVALUATORS)} or module:function")
        if self.prior_reps < 1:
            raise UserError(f"--prior-reps must be >= 1, got {self.prior_reps}")
        if self.prior and self.prior_reference < 2:
            raise UserError(f"--prior-reference must be >= 2 architectures, got {self.prior_reference}")
        if self.evaluator == "train" and self.search_size < 1:
            raise UserError(
                f"--search-size {self.search_size} leaves the search split empty: nothing to score architectures on; "
                "pass --search-size N (e.g. 1000)"
            )
        if self.evaluator == "table" and not self.table:
            raise UserError("--evaluator table needs --table CSV (for example the NAS-Bench-201 table as nb201.csv)")
        validate_executor(self)
