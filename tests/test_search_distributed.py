"""A 2-rank torchrun search with the supernet evaluator writes the same journal as a 1-rank one."""

from __future__ import annotations

from core.jsonl import read_jsonl
from supernet.config import SupernetConfig
from supernet.train import SupernetTrainer
from tests.conftest import ROOT, run_cli, run_torchrun


def test_two_rank_search_matches_one_rank(tmp_path):
    cfg = SupernetConfig(
        run_dir=str(tmp_path / "sn"),
        space="nb201",
        space_opts={"channels": 8, "cells": 1},
        epochs=1,
        max_steps=3,
        batch_size=32,
        search_size=300,
        recal_images=32,
        panel_random=0,
        quiet=True,
        checkpoint_minutes=0,
    )
    SupernetTrainer(cfg).fit()
    ckpt = str(tmp_path / "sn" / "supernet" / "last.pt")
    args = [
        "search",
        "--space",
        "nb201",
        "--space-opts",
        "channels=8",
        "--space-opts",
        "cells=1",
        "--evaluator",
        "supernet",
        "--supernet-ckpt",
        ckpt,
        "--budget",
        "6",
        "--batch",
        "3",
        "--recal-images",
        "32",
        "--threads",
        "1",
        "--quiet",
        "--device",
        "cpu",
    ]
    one = run_cli(*args, "--run-dir", str(tmp_path / "one"), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_torchrun(ROOT / "run.py", *args, "--run-dir", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    a = read_jsonl(tmp_path / "one" / "search" / "journal.jsonl")
    b = read_jsonl(tmp_path / "two" / "search" / "journal.jsonl")
    assert len(a) == len(b) == 6  # rank 1 wrote nothing: no duplicated lines
    assert [(r["str"], r["metric"]) for r in a] == [(r["str"], r["metric"]) for r in b]
    assert len({r["metric"] for r in a}) > 1
