"""bench-supernet runs for every space here, measures the same subnet both ways, and writes JSON."""

from __future__ import annotations

import json

import pytest
import torch

from bench.supernet_cost import BenchSupernetConfig, main, run_bench_supernet, saved_activation_bytes
from core.config import build_config
from core.errors import UserError

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "space, opts",
    [("nb201", {"cells": 1}), ("resnet20", {"blocks": 1})],
)
def test_bench_runs(space, opts, tmp_path):
    path = tmp_path / "bench.json"
    res = run_bench_supernet(space, opts, batch=2, steps=2, json_path=str(path), warmup=1)
    assert json.loads(path.read_text()) == res
    assert res["max_abs_diff"] < 1e-5  # the two timed networks are the same subnet
    assert res["time_supernet_ms"] > 0 and res["time_standalone_ms"] > 0
    assert res["time_ratio"] == pytest.approx(res["time_supernet_ms"] / res["time_standalone_ms"])
    # Same subnet, same activations: the supernet only adds its resident extra weights.
    assert res["act_ratio"] == pytest.approx(1.0)
    assert res["mem_ratio"] >= 1.0
    assert res["params_supernet_m"] >= res["params_standalone_m"]


def test_saved_activation_bytes_counts_what_backward_needs():
    lin = torch.nn.Linear(100, 100)
    x = torch.randn(8, 100)
    one = saved_activation_bytes(lin, lambda: lin(x).sum())
    two = saved_activation_bytes(lin, lambda: torch.relu(lin(x)).sum())
    assert one == 8 * 100 * 4  # the input of the matmul; the weight is resident
    assert two == 2 * 8 * 100 * 4  # plus relu's output


def test_config_and_main(tmp_path):
    cfg = build_config(
        BenchSupernetConfig,
        {
            "space": "resnet20",
            "space_opts": {"blocks": 1},
            "batch_size": 2,
            "steps": 1,
            "json": str(tmp_path / "r.json"),
            "arch": "16.32.64-4.8.16",
            "device": "cpu",
        },
    )
    res = main(cfg)
    assert res["arch"] == "16.32.64-4.8.16" and (tmp_path / "r.json").is_file()
    with pytest.raises(UserError, match="--steps"):
        BenchSupernetConfig(steps=0)
