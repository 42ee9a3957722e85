"""`run.py pipeline`: supernet, search and retraining in one run directory, restartable at any point.

Each stage is skipped when its finished output is already in the run directory and resumed when
it was interrupted, so rerunning the same command after a crash, a preemption or Ctrl-C continues
where it stopped. Each stage can also be run alone (`run.py supernet|search|retrain --run-dir`).

A rerun must ask for the same run: when its options differ from the ones recorded in the run
directory (`pipeline.config.yaml`), finished stages would be skipped and their old results reported
under the new options, so it is refused, naming the differing keys (with or without `--resume`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from core.checkpoint import load_checkpoint
from core.config import build_config, load_yaml, resolve_alias
from core.errors import CheckpointError, UserError
from core.jsonl import read_jsonl
from core.rundir import RunDir, commit_run_config
from pipeline.config import PipelineConfig
from supernet.spaces.base import make_user_space

log = logging.getLogger(__name__)
# options that do not change what a run computes: a rerun may change them
_NOT_COMPARED = ("run_dir", "run_name", "threads", "quiet", "resume", "device", "ray_address", "ray_workers",
                 "cpus_per_trial", "gpus_per_trial", "max_retries")  # fmt: skip


def check_same_run(cfg: PipelineConfig, run_dir: Path) -> None:
    """`UserError` naming the options in which `cfg` differs from the run recorded in `run_dir` (if any)."""
    import yaml

    record = RunDir(run_dir).config("pipeline")
    if not record.exists():
        return
    saved = load_yaml(record)
    names = {f.name for f in dataclasses.fields(cfg)}
    if isinstance(saved, dict):  # an old spelling of a value (a former boolean) compares as its choice
        saved = {k: resolve_alias(cfg, k, v) if k in names and v is not None else v for k, v in saved.items()}
    now = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # the record's own round trip
    # an option the record lacks (written before it existed) had its default value
    default = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(type(cfg)()), sort_keys=False))
    keys = [k for k in now if k not in _NOT_COMPARED and now[k] != saved.get(k, default.get(k))]
    if keys:
        diffs = "; ".join(f"{k}: {saved.get(k, default.get(k))!r} -> {now[k]!r}" for k in keys)
        raise UserError(
            f"{run_dir} holds a pipeline run with other options ({diffs[:600]}); its finished stages would be "
            f"reported under the new ones: rerun with the options in {record}, or use a new --run-dir"
        )


def stage_config(cls: type, cfg: PipelineConfig, section: dict[str, Any], name: str, **fixed: Any) -> Any:
    """A stage's config: the options it shares with the pipeline, then its section, then what the pipeline fixes.

    Shared are the options of the pipeline's base classes (`CommonConfig`, `SpaceOptions`, `AmpOptions`)
    that the stage has too; the run name is the pipeline's alone.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    bases = type(cfg).__bases__
    shared = {f.name: getattr(cfg, f.name) for b in bases for f in dataclasses.fields(b) if f.name in names}
    shared.pop("run_name", None)
    values = {**shared, **section, **fixed, "run_dir": cfg.run_dir, "resume": "auto"}
    return build_config(cls, values, source=f"the pipeline's {name} section")


def supernet_done(run_dir: Path) -> bool:
    path = RunDir(run_dir).supernet.last
    try:
        return path.exists() and bool(load_checkpoint(path).get("finished"))
    except CheckpointError:
        return False  # resuming falls back to the previous good checkpoint


def search_done(run_dir: Path, budget: int) -> bool:
    out = RunDir(run_dir).search
    return out.topk.exists() and len(read_jsonl(out.journal)) >= budget


def main(cfg: PipelineConfig) -> dict[str, Any]:
    """Entry point of `run.py pipeline`."""
    from retrain.config import RetrainConfig
    from search.config import SearchConfig
    from supernet.config import SupernetConfig

    run_dir, dirs = Path(cfg.run_dir), RunDir(cfg.run_dir)
    check_same_run(cfg, run_dir)
    sn_cfg = stage_config(SupernetConfig, cfg, cfg.supernet, "supernet")
    se_cfg = stage_config(SearchConfig, cfg, {"evaluator": "supernet", **cfg.search}, "search")
    stage_config(RetrainConfig, cfg, _retrain_section(cfg), "retrain")  # validate before hours of work
    commit_run_config()  # accepted: this is the run's record from now on

    if supernet_done(run_dir):
        log.info("[1/3] supernet: finished checkpoint found in %s, skipped", dirs.supernet.path)
    else:
        from supernet.train import SupernetTrainer

        log.info("[1/3] supernet: training (%s)", "resuming" if dirs.supernet.last.exists() else "new")
        if not SupernetTrainer(sn_cfg).fit()["finished"]:
            return {"stopped": "supernet", "resume": "rerun the same command"}

    if search_done(run_dir, se_cfg.budget):
        log.info("[2/3] search: %d evaluations already in the journal, skipped", se_cfg.budget)
    else:
        from search.loop import run_search

        log.info("[2/3] search: %s with %s, budget %d", se_cfg.searcher, se_cfg.evaluator, se_cfg.budget)
        if str(run_search(se_cfg)["stopped"]).startswith("SIG"):  # stopped by SIGTERM/SIGINT: do not retrain yet
            return {"stopped": "search", "resume": "rerun the same command"}

    topk = json.loads(dirs.search.topk.read_text())
    if not topk:
        raise UserError("the search found no feasible architecture; relax --max-mflops/--max-params or raise --budget")
    results = [
        _retrain(cfg, f"top{r + 1}", arch_file=str(dirs.search.topk), rank=r)
        for r in range(min(cfg.retrain_topk, len(topk)))
    ]
    if cfg.baseline and results:
        baseline = random_same_flops(cfg, topk[0])
        results.append(_retrain(cfg, "baseline-random", arch=json.dumps(baseline)))

    from pipeline.report import write_report

    report = write_report(run_dir, make_user_space(cfg.space, **cfg.space_opts), results)
    summary = summarize(run_dir, topk[0], results, report)
    for line in summary["lines"]:
        log.warning(line) if cfg.quiet else log.info(line)
    return {k: v for k, v in summary.items() if k != "lines"}


def _retrain_section(cfg: PipelineConfig) -> dict[str, Any]:
    section = dict(cfg.retrain)
    section["space_opts"] = {**cfg.space_opts, **section.get("space_opts", {})}
    return section


def _retrain(cfg: PipelineConfig, arch_id: str, **source: Any) -> dict[str, Any]:
    from retrain.config import RetrainConfig
    from retrain.train import main as retrain_main

    report = RunDir(cfg.run_dir).retrain(arch_id).report
    if report.exists():
        log.info("[3/3] retrain %s: report found, skipped", arch_id)
    else:
        log.info("[3/3] retrain %s", arch_id)
        rt_cfg = stage_config(RetrainConfig, cfg, _retrain_section(cfg), "retrain", arch_id=arch_id, **source)
        retrain_main(rt_cfg)
        if not report.exists():
            raise UserError(f"retraining {arch_id} stopped before the end; rerun the same command to continue")
    return {"arch_id": arch_id, **json.loads(report.read_text())}


def random_same_flops(cfg: PipelineConfig, best: dict[str, Any], tolerance: float = 0.02) -> dict[str, Any]:
    """A random architecture within ±2% of the best one's MFLOPs as retrained (the baseline of the same cost).

    The cost is taken at the retraining width: the demo retrains wider than its supernet, and the ops'
    costs grow at different rates with width, so two archs level in the supernet differ by up to 5%
    retrained. The window is narrow on purpose: the space's MFLOPs are spread unevenly around a
    search's pick, so a wide window mostly holds larger architectures, and after the demo's short
    retraining a larger one of nearly the same cost is, on average, less accurate (docs/benchmarks.md).
    """
    space = make_user_space(cfg.space, **_retrain_section(cfg)["space_opts"])
    best_arch = space.from_json(best["arch"])
    target = float(space.cost(best_arch).mflops)
    rng = np.random.default_rng([cfg.seed, 0xBA5E])
    best_key = space.canonical(best_arch)
    closest, gap = None, float("inf")
    for _ in range(20000):
        arch = space.sample(rng)
        d = abs(space.cost(arch).mflops - target) / max(target, 1e-9)
        if space.canonical(arch) != best_key and d < gap:
            closest, gap = arch, d
        if gap <= tolerance:
            break
    return space.to_json(closest)


def summarize(run_dir: Path, best: dict[str, Any], results: list[dict[str, Any]], report: dict[str, Any]) -> dict:
    """What the user needs at the end: where the report is, the best architecture, its cost, how to export."""
    from pipeline.report import describe_estimate, retrained_top1

    top = next((r for r in results if r["arch_id"] == "top1"), None)
    acc = retrained_top1(top) if top else None
    lines = [
        f"report: {report['markdown']} (and {report['html']})",
        f"best architecture: {best['str']}",
        f"  search estimate: {describe_estimate(best)}; {best.get('mflops') or 0:.2f} MFLOPs, "
        f"{best.get('params') or 0:.3f}M params",
    ]
    if acc is not None:
        lines.append(f"  retrained: test top-1 {acc:.2f}%")
    base = next((r for r in results if r["arch_id"] == "baseline-random"), None)
    if base is not None and retrained_top1(base) is not None:
        lines.append(f"  random architecture of the same MFLOPs, same budget: test top-1 {retrained_top1(base):.2f}%")
    lines.append(f"export: python run.py export --run-dir {shlex.quote(str(run_dir))} --arch-id top1")
    return {
        "report": report["markdown"],
        "best": best["str"],
        "test_top1": acc,
        "baseline_top1": retrained_top1(base) if base else None,
        "lines": lines,
    }
