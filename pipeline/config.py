"""Configuration of `run.py pipeline`: shared options plus one section per stage.

A pipeline YAML holds the shared keys at its top level (dataset, space, seed, ...) and the options
of each stage under `supernet:`, `search:` and `retrain:`; on the command line, `--supernet
KEY=VALUE` (and `--search`, `--retrain`) overrides one option of a stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import AmpOptions, CommonConfig, SpaceOptions, opt
from core.errors import UserError
from search.executors import ExecutorConfig, validate_executor


@dataclass
class PipelineConfig(SpaceOptions, AmpOptions, CommonConfig, ExecutorConfig):
    """Supernet, search and retraining of the top-k architectures in one run directory.

    Its space, space options, amp and the common options are every stage's, its executor options the
    search's (see `pipeline.run.stage_config`).
    """

    supernet: dict = opt({}, "options of the supernet stage (see run.py supernet --help), KEY=VALUE")
    search: dict = opt({}, "options of the search stage (see run.py search --help), KEY=VALUE")
    retrain: dict = opt({}, "options of the retrain stage (see run.py retrain --help), KEY=VALUE")
    retrain_topk: int = opt(1, "retrain this many of the best architectures found")
    baseline: bool = opt(True, "also retrain a random arch of the same MFLOPs (±2%, as retrained), for comparison")

    def validate(self) -> None:
        super().validate()
        if self.retrain_topk < 0:
            raise UserError(f"--retrain-topk must be >= 0, got {self.retrain_topk}")
        validate_executor(self)
