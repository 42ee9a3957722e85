"""The distributed helper, as a single process and under torchrun with two gloo ranks."""

from __future__ import annotations

import json

import torch

from core import distributed as dist
from tests.conftest import ROOT, run_torchrun


def test_single_process_fallbacks():
    assert not dist.is_distributed() and dist.rank() == 0 and dist.world_size() == 1
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    assert dist.broadcast_object(5) == 5
    assert dist.all_reduce_sum(torch.ones(2)).tolist() == [1.0, 1.0]
    assert dist.init_distributed(torch.device("cpu")) is False


def test_torchrun_two_ranks_gloo(tmp_path):
    out = tmp_path / "res"
    proc = run_torchrun(ROOT / "tests" / "dist_helper_worker.py", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads((tmp_path / f"res.{r}").read_text()) for r in range(2)]
    for r, res in enumerate(results):
        assert res["rank"] == r and res["world"] == 2 and res["threads"] == 1
        assert res["gathered"] == [{"rank": 0, "payload": [0]}, {"rank": 1, "payload": [1, 1]}]
        assert res["shared"] == {"seed": 1234}  # rank 0's object on both
        assert res["total"] == 3.0
