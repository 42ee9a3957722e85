"""Faults injected into real runs (in this process, through `run.main`): torn files, a full disk,
NaN/inf weights, malicious checkpoints and mismatched inputs. Each must stop with one line and exit
code 2, or recover, and never lose or poison what was saved before.

Kills of real processes are in `test_reliability_kill.py`; parsers are in `test_reliability_parsers.py`.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from core.checkpoint import previous_path
from core.errors import UserError
from core.jsonl import read_jsonl
from tests.reliability.helpers import (
    RETRAIN,
    SUPERNET,
    cli,
    error_line,
    failing_open,
    image_folder,
    malicious_checkpoint,
    model_of,
    same_tensors,
    step_of,
)


@pytest.fixture(scope="module")
def sn(tmp_path_factory):
    """A finished 8-step supernet run (the reference) and one stopped at step 5 (last.pt 5, last.prev.pt 4)."""
    base = tmp_path_factory.mktemp("sn")
    assert cli([*SUPERNET, "--run-dir", base / "ref"])[0] == 0
    assert cli([*SUPERNET, "--run-dir", base / "part", "--max-steps", "5"])[0] == 0
    ckpt = base / "part" / "supernet" / "last.pt"
    assert step_of(ckpt) == 5 and step_of(previous_path(ckpt)) == 4
    return base


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- torn writes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0.5, -1])
def test_torn_supernet_checkpoint_resumes_from_previous_identically(sn, tmp_path, caplog, cut):
    run = _copy(sn / "part", tmp_path / "run")
    ckpt = run / "supernet" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: int(len(data) * cut) if cut > 0 else len(data) + cut])
    with caplog.at_level(logging.INFO):
        assert cli([*SUPERNET, "--run-dir", run, "--resume", "auto"])[0] == 0
    text = caplog.text
    assert re.search(r"last\.pt is truncated or corrupt .*; trying the previous checkpoint", text)
    assert f"resumed from {previous_path(ckpt)} at step 4" in text
    assert same_tensors(model_of(ckpt), model_of(sn / "ref" / "supernet" / "last.pt"))


def test_damaged_last_does_not_push_out_the_good_previous(tmp_path):
    """Saving over a torn last.pt keeps last.prev.pt: a crash during that save still leaves a good file."""
    from core.checkpoint import save_checkpoint

    p = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, p)
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 2}, p)
    p.write_bytes(p.read_bytes()[:100])
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 3}, p)
    assert step_of(p) == 3 and step_of(previous_path(p)) == 1


def test_journal_cut_at_every_byte_keeps_exactly_the_complete_lines(tmp_path, caplog):
    from core.jsonl import append_jsonl

    full = tmp_path / "full.jsonl"
    records = [{"i": i, "arch": "x" * i, "metric": i / 3} for i in range(4)]
    for r in records:
        append_jsonl(full, r)
    data = full.read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    cut = tmp_path / "cut.jsonl"
    for n in range(len(data) + 1):
        cut.write_bytes(data[:n])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            got = read_jsonl(cut)
        complete = sum(e <= n for e in ends)
        assert got == records[:complete], n
        torn = n not in ends and n > 0
        assert ("torn write" in caplog.text) == torn, n


def _search_argv(run: Path, table: Path, budget: int = 40) -> list:
    return ["search", "--space", "tests.toy_space:ToySpace", "--space-opts", "decisions=5", "--space-opts", "choices=4",
            "--space-opts", "seed=5", "--evaluator", "table", "--table", table, "--arch-column", "name",
            "--metric", "score", "--report-metric", "other", "--budget", budget, "--batch", "4", "--seed", "3",
            "--quiet", "--threads", "1", "--run-dir", run]  # fmt: skip


def _lines(run: Path) -> list[tuple]:
    return [(r["index"], r["str"], r["metric"]) for r in read_jsonl(run / "search" / "journal.jsonl")]


@pytest.fixture(scope="module")
def search_ref(tmp_path_factory):

    from tests.reliability.kill_resume_harness import toy_table

    base = tmp_path_factory.mktemp("search")
    table = toy_table(base / "toy.csv")
    assert cli(_search_argv(base / "ref", table))[0] == 0
    return base, table


def test_search_resumes_identically_after_a_journal_torn_at_random_bytes(search_ref, tmp_path, caplog):
    import random

    base, table = search_ref
    ref_lines = _lines(base / "ref")
    pristine = tmp_path / "pristine"
    assert cli(_search_argv(pristine, table, budget=20))[0] == 0  # state.pt has seen 20 lines
    # The reference's own first 20 lines (its wall-clock "seconds" fields may be longer or shorter
    # than the pristine run's, so the byte offset must come from the reference journal itself).
    ref_bytes = (base / "ref" / "search" / "journal.jsonl").read_bytes()
    first_20 = b"".join(ref_bytes.splitlines(keepends=True)[:20])
    assert _lines(pristine)[:20] == ref_lines[:20]  # the same searcher made the same 20 proposals
    saved, tail = first_20, ref_bytes[len(first_20) :]
    rng = random.Random(0)
    for n in [1, len(tail) - 1, *rng.sample(range(2, len(tail) - 1), 2)]:
        run = _copy(pristine, tmp_path / f"cut{n}")
        # killed while writing lines that the saved state had not seen yet
        (run / "search" / "journal.jsonl").write_bytes(saved + tail[:n])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cli([*_search_argv(run, table), "--resume", "auto"])[0] == 0
        assert _lines(run) == ref_lines, n
        assert ("dropping a torn last line" in caplog.text) == (not tail[:n].endswith(b"\n")), n


def test_journal_shorter_than_the_saved_state_is_refused(search_ref, tmp_path, capsys):
    base, table = search_ref
    run = _copy(base / "ref", tmp_path / "run")
    journal = run / "search" / "journal.jsonl"
    journal.write_bytes(journal.read_bytes()[: len(journal.read_bytes()) // 2])
    code, err = cli([*_search_argv(run, table), "--resume", "auto"], capsys)
    assert code == 2 and "restore the journal" in error_line(err)


# ---- disk full and unwritable paths --------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_checkpoint_write_failure_keeps_previous_and_exits_2(sn, tmp_path, monkeypatch, capsys, code):
    run = _copy(sn / "part", tmp_path / "run")
    ckpt = run / "supernet" / "last.pt"
    before = ckpt.read_bytes()
    monkeypatch.setattr("core.checkpoint.open", failing_open("last.pt", nth=1, budget=5000, code=code), raising=False)
    status, err = cli([*SUPERNET, "--run-dir", run, "--resume", "auto", "--max-steps", "6"], capsys)
    line = error_line(err)
    assert status == 2 and "could not write checkpoint" in line and "previous checkpoint is intact" in line
    assert ("disk is full" in line) == (code == errno.ENOSPC)
    assert ckpt.read_bytes() == before and step_of(ckpt) == 5
    assert not [f for f in ckpt.parent.iterdir() if ".tmp" in f.name]
    if code == errno.ENOSPC:  # space freed: the run resumes and ends as if nothing happened
        monkeypatch.undo()
        assert cli([*SUPERNET, "--run-dir", run, "--resume", "auto"])[0] == 0
        assert same_tensors(model_of(ckpt), model_of(sn / "ref" / "supernet" / "last.pt"))


def test_journal_append_disk_full_exits_2_and_resume_loses_nothing(search_ref, tmp_path, monkeypatch, capsys):
    base, table = search_ref
    run = tmp_path / "run"
    # the 13th journal line hits a full disk half-way through
    monkeypatch.setattr("core.jsonl.open", failing_open("journal.jsonl", nth=13, budget=40), raising=False)
    code, err = cli(_search_argv(run, table), capsys)
    line = error_line(err)
    assert code == 2 and "could not append" in line and "disk is full" in line
    assert _lines(run) == _lines(base / "ref")[:12]  # the torn 13th line is not read back
    monkeypatch.undo()
    assert cli([*_search_argv(run, table), "--resume", "auto"])[0] == 0
    assert _lines(run) == _lines(base / "ref")


# ---- numerical faults ----------------------------------------------------------------------------


def _poison_after(trainer, step: int, value: float = math.nan) -> None:
    """Write NaN/inf into one weight once the trainer passes `step` (as a bad update would)."""
    original = trainer.train_step

    def step_then_poison(x, y):
        out = original(x, y)
        if trainer.step == step:
            with torch.no_grad():
                next(trainer.net.parameters()).view(-1)[0] = value
        return out

    trainer.train_step = step_then_poison


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_supernet_refuses_to_save_poisoned_weights(sn, tmp_path, value):
    from supernet.train import SupernetTrainer

    run = _copy(sn / "part", tmp_path / "run")
    args = dict(run_dir=str(run), space="nb201", space_opts={"channels": 8, "cells": 1}, epochs=2, train_images=128,
                batch_size=32, search_size=500, recal_images=32, panel_random=0, checkpoint_minutes=0, quiet=True,
                seed=3, resume="auto", max_steps=6)  # fmt: skip
    from supernet.config import SupernetConfig

    trainer = SupernetTrainer(SupernetConfig(**args))
    _poison_after(trainer, 6, value)
    with pytest.raises(UserError, match=r"model\.\S+ holds NaN/inf at step 6; the previous checkpoint is kept"):
        trainer.fit()
    ckpt = run / "supernet" / "last.pt"
    assert step_of(ckpt) == 5 and all(torch.isfinite(t).all() for t in model_of(ckpt).values() if t.is_floating_point())


def test_retrain_refuses_to_save_poisoned_weights_and_cli_reports_the_step(tmp_path, monkeypatch, capsys):
    from retrain.train import RetrainTrainer

    run = tmp_path / "run"
    assert cli([*RETRAIN, "--run-dir", run, "--max-steps", "2"])[0] == 0
    original = RetrainTrainer.fit

    def fit(self):
        _poison_after(self, 3)
        return original(self)

    monkeypatch.setattr(RetrainTrainer, "fit", fit)
    code, err = cli([*RETRAIN, "--run-dir", run, "--max-steps", "3", "--resume", "auto"], capsys)
    assert code == 2 and "holds NaN/inf at step 3" in error_line(err)
    assert step_of(run / "retrain" / "tiny" / "last.pt") == 2


# ---- untrusted checkpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["info", "resume", "supernet-ckpt", "teacher"])
def test_malicious_checkpoint_refused_at_every_entry_point(tmp_path, capsys, entry):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.pt", marker)
    argv = {
        "info": ["info", evil],
        "resume": [*SUPERNET, "--run-dir", tmp_path / "run", "--resume", evil],
        "supernet-ckpt": [
            "search",
            "--space",
            "nb201",
            "--evaluator",
            "supernet",
            "--supernet-ckpt",
            evil,
            "--budget",
            "2",
            "--run-dir",
            tmp_path / "run",
            "--threads",
            "1",
            "--quiet",
        ],  # fmt: skip
        "teacher": [*RETRAIN, "--run-dir", tmp_path / "run", "--teacher", evil],
    }[entry]
    code, err = cli(argv, capsys)
    assert code == 2 and "refused" in error_line(err) and str(evil) in err
    assert not marker.exists()


# ---- mismatched inputs ---------------------------------------------------------------------------


def test_checkpoint_of_another_space_or_config_refused(sn, tmp_path, capsys):
    run = _copy(sn / "part", tmp_path / "run")
    i = SUPERNET.index("--space")
    other_space = [*SUPERNET[:i], "--space", "resnet20", *SUPERNET[i + 6 :], "--run-dir", run, "--resume", "auto"]
    code, err = cli(other_space, capsys)
    assert code == 2 and "space 'nb201'" in error_line(err) and "'resnet20'" in err
    code, err = cli([*SUPERNET, "--run-dir", run, "--resume", "auto", "--space-opts", "channels=16"], capsys)
    assert code == 2 and "space options" in error_line(err) and "'channels': 8" in err
    ckpt = run / "supernet" / "last.pt"
    code, err = cli(["search", "--space", "nasnet", "--evaluator", "supernet", "--supernet-ckpt", ckpt,
                     "--budget", "2", "--run-dir", tmp_path / "s", "--threads", "1", "--quiet"], capsys)  # fmt: skip
    assert code == 2 and "'nb201'" in error_line(err) and "'nasnet'" in err
    code, err = cli([*RETRAIN, "--run-dir", tmp_path / "r", "--teacher", ckpt], capsys)
    assert code == 2 and "'supernet' checkpoint, not a retrained model" in error_line(err)


def test_dataset_with_another_class_count_refused(sn, tmp_path, capsys):
    data = image_folder(tmp_path / "three")
    folder = ["--dataset", "imagefolder", "--data-dir", data, "--search-size", "6", "--batch-size", "8"]
    run = _copy(sn / "part", tmp_path / "run")
    code, err = cli([*SUPERNET, "--run-dir", run, "--resume", "auto", *folder], capsys)
    assert code == 2 and "trained on 10 classes but the data has 3" in error_line(err)
    teacher = tmp_path / "teacher"
    assert cli([*RETRAIN, "--run-dir", teacher, "--max-steps", "1"])[0] == 0
    code, err = cli([*RETRAIN, "--run-dir", tmp_path / "student", "--teacher", teacher / "retrain" / "tiny" / "last.pt",
                     *folder], capsys)  # fmt: skip
    assert code == 2 and "predicts 10 classes, but the data has 3" in error_line(err)
    code, err = cli([*RETRAIN, "--run-dir", teacher, "--resume", "auto", *folder], capsys)
    assert code == 2 and "trained on 10 classes but the data has 3" in error_line(err)


def test_architecture_of_another_space_refused(tmp_path, capsys):
    from supernet.spaces.base import make_space

    nb = make_space("nb201")
    arch = json.dumps(nb.to_json(nb.sample(__import__("numpy").random.default_rng(0))))
    base = ["retrain", "--run-dir", tmp_path, "--threads", "1", "--quiet", "--epochs", "1"]
    code, err = cli([*base, "--arch", arch, "--space", "nasnet"], capsys)
    assert code == 2 and "space 'nb201' but --space is 'nasnet'" in error_line(err)
    no_key = json.dumps({k: v for k, v in json.loads(arch).items() if k != "space"})
    code, err = cli([*base, "--arch", no_key, "--space", "resnet20"], capsys)
    assert code == 2 and "resnet20" in error_line(err)
    code, err = cli([*base, "--lanet", "0,1,2,3", "--space", "nb201"], capsys)
    assert code == 2 and "use --space nasnet" in error_line(err)


def test_flops_budget_below_every_architecture_refused(search_ref, tmp_path, capsys):
    """A bound no architecture meets is reported up front, not searched for ever."""
    table = Path(__file__).parent / "data" / "nb201_tiny.csv"
    code, err = cli(["search", "--space", "nb201", "--evaluator", "table", "--table", table,
                     "--max-mflops", "0.001", "--budget", "4", "--run-dir", tmp_path, "--quiet"], capsys)  # fmt: skip
    assert code == 2 and "--max-mflops" in error_line(err)


def test_crash_between_metrics_line_and_checkpoint_does_not_repeat_the_line(sn, tmp_path, monkeypatch):
    """A kill after an epoch's metrics line is written but before its checkpoint: the line is not doubled."""
    from supernet.train import SupernetTrainer

    run = _copy(sn / "part", tmp_path / "run")  # last.pt at step 5, epoch 1's line already written
    original = SupernetTrainer.save

    def crash_at_the_end(self, finished=False):
        if self.step == 8:
            raise KeyboardInterrupt  # dies after end_epoch logged epoch 2, before last.pt of step 8
        original(self, finished)

    monkeypatch.setattr(SupernetTrainer, "save", crash_at_the_end)
    assert cli([*SUPERNET, "--run-dir", run, "--resume", "auto"])[0] == 130
    monkeypatch.undo()
    assert cli([*SUPERNET, "--run-dir", run, "--resume", "auto"])[0] == 0
    lines = read_jsonl(run / "supernet" / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [1, 2]
    ref = read_jsonl(sn / "ref" / "supernet" / "metrics.jsonl")
    assert [r["panel_mean_acc"] for r in lines] == [r["panel_mean_acc"] for r in ref]
