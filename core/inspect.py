"""What a checkpoint or a run directory holds, for `run.py info PATH`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.checkpoint import load_checkpoint
from core.errors import UserError
from core.jsonl import read_jsonl
from core.rundir import RunDir

_META_KEYS = ("kind", "space", "arch", "epoch", "step", "best", "metrics", "num_classes")


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """Metadata and tensor counts of one checkpoint (loaded safely)."""
    state = load_checkpoint(path)
    out: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size, "keys": sorted(state)}
    for key in _META_KEYS:
        if key in state:
            out[key] = state[key]
    model = state.get("model")
    if isinstance(model, dict):
        tensors = [v for v in model.values() if isinstance(v, torch.Tensor)]
        out["model_tensors"] = len(tensors)
        out["model_params_m"] = round(sum(t.numel() for t in tensors if t.is_floating_point()) / 1e6, 4)
    if isinstance(state.get("config"), dict):
        out["config"] = state["config"]
    return out


def describe_run(run_dir: Path) -> dict[str, Any]:
    """Configs, checkpoints and journal sizes found under a run directory."""
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    out["configs"] = sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("*.yaml"))
    ckpts = {}
    for p in sorted(run_dir.rglob("*.pt")):
        try:
            d = describe_checkpoint(p)
            ckpts[str(p.relative_to(run_dir))] = {k: d[k] for k in ("epoch", "step", "kind") if k in d}
        except UserError as exc:
            ckpts[str(p.relative_to(run_dir))] = {"error": str(exc)}
    out["checkpoints"] = ckpts
    journal = RunDir(run_dir).search.journal
    if journal.exists():
        out["evaluated_archs"] = len(read_jsonl(journal))
    return out


def describe_path(path: str) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        return describe_run(p)
    if p.is_file():
        return describe_checkpoint(p)
    raise UserError(f"{path} is neither a checkpoint file nor a run directory")
