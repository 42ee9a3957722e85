"""Every preset in configs/ resolves for each stage, builds its spaces, and has a reachable FLOPs window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from core.config import CONFIG_DIR
from pipeline.config import PipelineConfig
from pipeline.run import _retrain_section, stage_config
from retrain.config import RetrainConfig
from search.config import SearchConfig
from supernet.config import SupernetConfig
from supernet.spaces.base import make_space

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def test_the_documented_presets_exist():
    for name in ("demo", "demo-mbconv", "test-tiny", "nasnet-cifar10", "mbconv-imagenet-600", "mbconv-imagenet-240"):
        assert name in PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_resolves_for_every_stage(name, tmp_path):
    import run

    parser, _ = run.build_parser()
    args = parser.parse_args(["pipeline", "--preset", name, "--run-dir", str(tmp_path)])
    from core.config import resolve

    cfg = resolve(PipelineConfig, args, stage="pipeline", stages=run.STAGES)
    sup = stage_config(SupernetConfig, cfg, cfg.supernet, "supernet")
    search = stage_config(SearchConfig, cfg, cfg.search, "search")
    retrain = stage_config(RetrainConfig, cfg, _retrain_section(cfg), "retrain", arch_file="topk.json")
    assert sup.space == search.space == cfg.space and sup.space_opts == search.space_opts == cfg.space_opts
    assert set(cfg.space_opts) <= set(retrain.space_opts)  # the retrain network extends the searched macro options
    for stage in ("supernet", "search", "retrain"):  # each stage alone from the same preset
        alone = parser.parse_args([stage, "--preset", name, "--run-dir", str(tmp_path / stage)])
        cls = {"supernet": SupernetConfig, "search": SearchConfig, "retrain": RetrainConfig}[stage]
        if stage == "retrain":
            alone.arch_file = "topk.json"
        alone_cfg = resolve(cls, alone, stage=stage, stages=run.STAGES)
        in_pipeline = {"supernet": sup, "search": search, "retrain": retrain}[stage]
        assert alone_cfg.space_opts == in_pipeline.space_opts, f"{stage} alone builds another network"

    space = make_space(search.space, **search.space_opts)
    make_space(search.space, **retrain.space_opts)  # the retrain network's macro options build too
    lo, hi = search.min_mflops, search.max_mflops or float("inf")
    if search.min_mflops or search.max_mflops:
        rng = np.random.default_rng(0)
        costs = [space.cost(space.sample(rng), 1000 if "imagenet" in name else 10).mflops for _ in range(400)]
        inside = np.mean([lo <= c <= hi for c in costs])
        assert inside >= 0.05, f"{name}: only {inside:.1%} of random archs fall within [{lo}, {hi}] MFLOPs"


def test_preset_files_are_plain_yaml():
    for path in Path(CONFIG_DIR).glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
