"""Trust and integrity (issue 24, part A): files are data, one writer per run directory, no stale results.

Each attack is crafted the way a hostile or careless file would be: a checkpoint or topk.json that
names code to import (a canary file appears if it ever runs), two writers on one run directory, a
rerun with other options, a corrupt journal line, an empty search split, an untrained timm teacher.
Each must stop with exit code 2 and one line, before anything is written or lost.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from core.checkpoint import save_checkpoint
from core.errors import UserError
from core.jsonl import read_jsonl
from tests.conftest import ROOT
from tests.reliability.helpers import RETRAIN, SUPERNET, cli, error_line, malicious_checkpoint

# ---- fixtures: the attacker's files ------------------------------------------------------------------


def _payloads(tmp_path: Path) -> dict[str, tuple[str, dict, Path]]:
    """Space names (with options) that would create a canary file if they were ever imported and called."""
    evil_py = tmp_path / "evil_space.py"
    py_canary = tmp_path / "canary-py"
    evil_py.write_text(f"from pathlib import Path\nPath({str(py_canary)!r}).touch()\nSpace = dict\n")
    run_canary, sys_canary = tmp_path / "canary-run", tmp_path / "canary-system"
    return {
        "subprocess": ("subprocess:run", {"args": ["touch", str(run_canary)]}, run_canary),
        "os.system": ("os:system", {"command": f"touch {sys_canary}"}, sys_canary),
        "py-file": (f"{evil_py}:Space", {}, py_canary),
    }


def _evil_retrain_checkpoint(path: Path, name: str, options: dict) -> Path:
    """A data-only retrain checkpoint (loads with weights_only) whose model spec names code."""
    spec = {"source": "space", "name": name, "options": options, "arch": {"space": name}, "str": "x", "head": {}}
    save_checkpoint({"kind": "retrain", "model_spec": spec, "num_classes": 10, "model": {}, "ema": None,
                     "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "step": 1}, path)  # fmt: skip
    return path


@pytest.mark.parametrize("payload", ["subprocess", "os.system", "py-file"])
def test_payloads_are_live_when_trusted(tmp_path, payload):
    """The canaries work: the same names, given by the user, do run (so the refusals below mean something)."""
    from supernet.spaces.base import make_user_space

    name, options, canary = _payloads(tmp_path)[payload]
    try:
        make_user_space(name, **options)
    except UserError:
        pass  # os.system returns an int, not a space: the command has run all the same
    assert canary.exists()


# ---- C1: a checkpoint names code -------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["subprocess", "os.system", "py-file"])
@pytest.mark.parametrize("entry", ["export-checkpoint", "export-run-dir", "teacher"])
def test_checkpoint_naming_code_is_refused_and_never_run(tmp_path, capsys, entry, payload):
    name, options, canary = _payloads(tmp_path)[payload]
    run = tmp_path / "run"
    if entry == "export-run-dir":
        ckpt = _evil_retrain_checkpoint(run / "retrain" / "evil" / "last.pt", name, options)
        argv = ["export", "--run-dir", run, "--quiet"]
    else:
        ckpt = _evil_retrain_checkpoint(tmp_path / "evil.pt", name, options)
        argv = {
            "export-checkpoint": ["export", "--checkpoint", ckpt, "--run-dir", run, "--quiet"],
            "teacher": [*RETRAIN, "--run-dir", run, "--teacher", ckpt],
        }[entry]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".lock" not in p.name)
    code, err = cli(argv, capsys)
    line = error_line(err)
    assert code == 2 and str(ckpt) in line and repr(name) in line and f"--space {name}" in line
    assert not canary.exists()
    assert not (ckpt.parent / "export").exists() and not (run / "retrain" / "tiny").exists()
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".lock" not in p.name} - set(before)
    assert written <= {Path("run"), Path("run/log.txt")}, written  # no config record, no outputs


def test_user_named_space_is_still_accepted_and_file_names_are_not(tmp_path):
    from search.evaluators import make_evaluator
    from search.searchers import make_searcher
    from supernet.spaces.base import make_space, make_user_space
    from tests.toy_space import ToySpace

    assert make_user_space("tests.toy_space:ToySpace", decisions=3).d == 3
    with pytest.raises(UserError, match=r"'tests\.toy_space:ToySpace' is not a registered space .*--space tests"):
        make_space("tests.toy_space:ToySpace", decisions=3)
    # options read from a file cannot turn the trust on
    with pytest.raises(UserError, match="not a registered space"):
        make_space("tests.toy_space:ToySpace", trusted=True)
    space = ToySpace()
    with pytest.raises(UserError, match="--searcher search.searchers"):
        make_searcher("search.searchers.random_search:RandomSearch", space, 0)
    cfg = type("C", (), {"evaluator": "tests.toy_space:evaluate"})()
    with pytest.raises(UserError, match="--evaluator tests.toy_space:evaluate"):
        make_evaluator(cfg, space)
    assert make_searcher("search.searchers.random_search:RandomSearch", space, 0, trusted=True).propose(1)


def test_checkpoint_space_is_trusted_only_when_the_user_names_it(tmp_path):
    from retrain.inputs import model_from_checkpoint

    canary = tmp_path / "canary"
    ckpt = _evil_retrain_checkpoint(tmp_path / "evil.pt", "subprocess:run", {"args": ["touch", str(canary)]})
    with pytest.raises(UserError, match="pass --space subprocess:run"):
        model_from_checkpoint(ckpt, trusted={"tests.toy_space:ToySpace"})
    assert not canary.exists()


# ---- C2: a topk.json or arch JSON names code -------------------------------------------------------


@pytest.mark.parametrize("payload", ["subprocess", "os.system", "py-file"])
@pytest.mark.parametrize("how", ["arch-file", "arch"])
def test_architecture_file_naming_code_is_refused_and_never_run(tmp_path, capsys, payload, how):
    name, options, canary = _payloads(tmp_path)[payload]
    arch = {"space": name, "normal": [], "reduce": []}
    topk = tmp_path / "topk.json"
    topk.write_text(json.dumps([{"rank": 0, "arch": arch, "space_opts": options, "str": "x", "metric": 1.0}]))
    source = ["--arch-file", topk] if how == "arch-file" else ["--arch", json.dumps(arch)]
    if how == "arch":
        source += [f"--space-opts={k}={json.dumps(v)}" for k, v in options.items()]
    run = tmp_path / "run"
    code, err = cli(["retrain", *source, "--run-dir", run, "--epochs", "1", "--threads", "1", "--quiet"], capsys)
    line = error_line(err)
    assert code == 2 and repr(name) in line and f"--space {name}" in line
    assert not canary.exists()
    assert not (run / "retrain").exists() and not (run / "retrain.config.yaml").exists()


# ---- D1: one writer per run directory ----------------------------------------------------------------


def _search_argv(run: Path, table: Path, budget: int = 20) -> list:
    return ["search", "--space", "tests.toy_space:ToySpace", "--space-opts", "decisions=5", "--space-opts", "choices=4",
            "--space-opts", "seed=5", "--evaluator", "table", "--table", table, "--arch-column", "name",
            "--metric", "score", "--budget", budget, "--batch", "4", "--seed", "3", "--quiet", "--threads", "1",
            "--run-dir", run]  # fmt: skip


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from tests.reliability.kill_resume_harness import toy_table

    return toy_table(tmp_path_factory.mktemp("table") / "toy.csv")


_HOLDER = """
import os, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from core.rundir import run_dir_lock
with run_dir_lock(Path({run!r}), "search"):
    if {fork}:
        child = os.fork()
        if child:  # the parent dies; its forked child keeps the lock open
            print(child, flush=True)
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    print("held", flush=True)
    sys.stdin.read()
"""


def _hold(run: Path, fork: bool = False) -> tuple[subprocess.Popen, str]:
    """A process holding the run directory's lock (with `fork`: its forked child holds it, the parent exits)."""
    code = textwrap.dedent(_HOLDER.format(root=str(ROOT), run=str(run), fork=fork))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline().strip()
    assert first, "the lock holder did not start"
    return proc, first


def _journal(run: Path) -> bytes:
    return (run / "search" / "journal.jsonl").read_bytes()


def test_second_writer_is_refused_and_the_journal_is_intact(tmp_path, capsys, table):
    run = tmp_path / "run"
    assert cli(_search_argv(run, table, budget=8))[0] == 0
    journal, record = _journal(run), (run / "search.config.yaml").read_bytes()
    holder, _ = _hold(run)
    try:
        code, err = cli([*_search_argv(run, table), "--resume", "auto"], capsys)
        line = error_line(err)
        assert code == 2 and f"pid {holder.pid}" in line and "in use by search" in line and "since" in line
        assert _journal(run) == journal and (run / "search.config.yaml").read_bytes() == record
        info = cli(["info", run], capsys)  # readers need no lock
        assert info[0] == 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=20)
    assert cli([*_search_argv(run, table), "--resume", "auto"])[0] == 0  # released: the search continues
    indices = [r["index"] for r in read_jsonl(run / "search" / "journal.jsonl")]
    assert indices == list(range(20))


def test_two_real_search_processes_never_both_write(tmp_path, table):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, str(ROOT / "run.py"), *map(str, _search_argv(run, table, budget=40))]
    procs = [subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    indices = [r["index"] for r in read_jsonl(run / "search" / "journal.jsonl")]
    assert len(indices) == len(set(indices)) == 40, indices
    if codes == [0, 2]:  # they overlapped: the second was refused with one line
        refused = next(e for c, e in results if c == 2)
        line = error_line(refused)  # the lock's holder named, or not yet (caught before it wrote its pid)
        assert "in use by search" in line or "in use by another process" in line or "already exists" in line, line
    else:  # one finished before the other began: the second refuses the finished journal
        pytest.fail(f"both exited {codes}: " + " | ".join(e[-300:] for _, e in results))


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog, table):
    run = tmp_path / "run"
    run.mkdir()
    holder, _ = _hold(run)
    holder.send_signal(signal.SIGKILL)  # killed: the lock file still names it
    holder.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING):
        assert cli(_search_argv(run, table, budget=4))[0] == 0
    assert f"pid {holder.pid}" in caplog.text and "taking it over" in caplog.text


def test_lock_still_held_by_a_forked_child_of_a_dead_process_is_taken_over(tmp_path, caplog, table):
    run = tmp_path / "run"
    run.mkdir()
    holder, child = _hold(run, fork=True)
    holder.wait(timeout=20)  # the parent is gone (and reaped); its child still holds the flock
    try:
        with caplog.at_level(logging.WARNING):
            assert cli(_search_argv(run, table, budget=4))[0] == 0
        assert f"pid {holder.pid}" in caplog.text and "no longer running" in caplog.text
    finally:
        os.kill(int(child), signal.SIGKILL)


def test_lock_is_reentrant_in_one_process(tmp_path):
    from core.rundir import run_dir_lock

    with run_dir_lock(tmp_path, "pipeline"), run_dir_lock(tmp_path, "supernet"):
        assert json.loads((tmp_path / ".lock").read_text())["command"] == "pipeline"
    assert (tmp_path / ".lock").read_text() == ""  # released cleanly: no holder left behind


# ---- D2: the record of a run is never overwritten by a refused command, nor reused for another ----------


def test_refused_command_leaves_the_config_record_byte_identical(tmp_path, capsys, table):
    run = tmp_path / "run"
    assert cli(_search_argv(run, table, budget=8))[0] == 0
    record = run / "search.config.yaml"
    before = record.read_bytes()
    refused = [
        [*_search_argv(run, table, budget=12)],  # no --resume: the journal exists (refused by the stage)
        [*_search_argv(run, table), "--resume", "auto", "--seed", "4"],  # another seed than the saved state
        [*_search_argv(run, table), "--resume", "auto", "--evaluator", "table", "--table", tmp_path / "none.csv"],
        [*_search_argv(run, table), "--budget", "0"],  # refused while resolving the options
    ]
    for argv in refused:
        code, err = cli(argv, capsys)
        assert code == 2 and error_line(err)
        assert record.read_bytes() == before, argv
    assert cli([*_search_argv(run, table, budget=12), "--resume", "auto"])[0] == 0  # accepted: recorded
    assert b"budget: 12" in record.read_bytes()


def _saved_pipeline(run: Path, *flags: str) -> Path:
    """The record a `pipeline --preset test-tiny` run leaves, written as run.py writes it."""
    import run as run_py
    from core.config import resolve
    from core.rundir import save_run_config

    parser, available = run_py.build_parser()
    args = parser.parse_args(["pipeline", "--preset", "test-tiny", "--run-dir", str(run), *flags])
    cfg = resolve(available["pipeline"], args, stage="pipeline", stages=run_py.STAGES)
    run.mkdir(parents=True, exist_ok=True)
    return save_run_config(cfg, run, "pipeline.config.yaml")


@pytest.mark.parametrize(
    "change, key",
    [(["--seed", "1"], "seed: 0 -> 1"), (["--space-opts", "channels=8"], "space_opts"),
     (["--search", "budget=4"], "search"), (["--resume", "auto", "--seed", "2"], "seed: 0 -> 2")],
)  # fmt: skip
def test_pipeline_rerun_with_other_options_is_refused(tmp_path, capsys, change, key):
    run = tmp_path / "run"
    record = _saved_pipeline(run, "--seed", "0")
    before = record.read_bytes()
    code, err = cli(
        ["pipeline", "--preset", "test-tiny", "--run-dir", run, "--threads", "1", "--quiet", *change], capsys
    )
    line = error_line(err)
    assert code == 2 and key in line and "new --run-dir" in line
    assert record.read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [".lock", "log.txt", "pipeline.config.yaml"]  # no stage ran


def test_pipeline_rerun_may_change_threads_quiet_and_device(tmp_path):
    from pipeline.config import PipelineConfig
    from pipeline.run import check_same_run

    run = tmp_path / "run"
    _saved_pipeline(run, "--seed", "0", "--threads", "2")
    import run as run_py
    from core.config import resolve

    parser, available = run_py.build_parser()
    args = parser.parse_args(["pipeline", "--preset", "test-tiny", "--run-dir", str(run), "--seed", "0",
                              "--threads", "1", "--quiet", "--device", "cpu", "--resume", "auto"])  # fmt: skip
    cfg = resolve(available["pipeline"], args, stage="pipeline", stages=run_py.STAGES)
    assert isinstance(cfg, PipelineConfig)
    check_same_run(cfg, run)  # nothing that changes the results: accepted
    cfg.seed = 5
    with pytest.raises(UserError, match="seed: 0 -> 5"):
        check_same_run(cfg, run)


# ---- D3: journal indices come from the records ---------------------------------------------------------


def test_corrupt_line_in_the_unsaved_tail_never_makes_an_index_repeat(tmp_path, table):
    ref = tmp_path / "ref"
    assert cli(_search_argv(ref, table, budget=40))[0] == 0
    run = tmp_path / "run"
    assert cli(_search_argv(run, table, budget=20))[0] == 0  # state.pt has seen 20 lines
    lines = _journal(ref).splitlines(keepends=True)
    # killed after writing 8 more lines than the state saw; one of them was damaged on disk
    tail = lines[20:28]
    tail[2] = b'{"index": 22, "arch": [1, 2, \x00\x00 garbage\n'
    (run / "search" / "journal.jsonl").write_bytes(b"".join(lines[:20] + tail))
    assert cli([*_search_argv(run, table, budget=40), "--resume", "auto"])[0] == 0
    records = read_jsonl(run / "search" / "journal.jsonl")
    indices = [r["index"] for r in records]
    assert len(indices) == len(set(indices)) == 40, indices
    assert sorted(r["str"] for r in records) == sorted(r["str"] for r in read_jsonl(ref / "search" / "journal.jsonl"))


def test_next_index_ignores_gaps_and_junk():
    from search.loop import next_index

    assert next_index([]) == 0
    assert next_index([{"index": 0}, {"index": 2}, {"index": True}, {"index": "9"}, {}]) == 3


# ---- D4: an empty search split ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["supernet", "search-train", "pipeline"])
def test_empty_search_split_is_refused_before_any_work(tmp_path, capsys, command):
    run = tmp_path / "run"
    argv = {
        "supernet": [*SUPERNET, "--run-dir", run],
        "search-train": [
            "search",
            "--space",
            "nb201",
            "--evaluator",
            "train",
            "--budget",
            "2",
            "--run-dir",
            run,
            "--threads",
            "1",
            "--quiet",
        ],  # fmt: skip
        "pipeline": ["pipeline", "--preset", "test-tiny", "--run-dir", run, "--threads", "1", "--quiet"],
    }[command]
    code, err = cli([*argv, "--search-size", "0"], capsys)
    assert code == 2 and "--search-size 0 leaves the search split empty" in error_line(err)
    assert not run.exists() or {p.name for p in run.iterdir()} <= {".lock", "log.txt"}  # no stage, no record


def test_supernet_checkpoint_with_an_empty_search_split_is_refused(tmp_path, capsys):
    from core.checkpoint import load_checkpoint

    run = tmp_path / "sn"
    assert cli([*SUPERNET, "--run-dir", run, "--max-steps", "1"])[0] == 0
    state = load_checkpoint(run / "supernet" / "last.pt")
    state["data"]["search_size"] = 0  # as a supernet trained before the option was checked
    ckpt = save_checkpoint(state, tmp_path / "empty-split.pt")
    code, err = cli(["search", "--space", "nb201", "--space-opts", "channels=8", "--space-opts", "cells=1",
                     "--evaluator", "supernet", "--supernet-ckpt", ckpt, "--budget", "2", "--run-dir", tmp_path / "s",
                     "--threads", "1", "--quiet"], capsys)  # fmt: skip
    assert code == 2 and "empty search split" in error_line(err)
    assert not (tmp_path / "s" / "search" / "journal.jsonl").exists()


# ---- K2: a timm teacher must carry trained weights ---------------------------------------------------


def test_timm_teacher_without_weights_is_refused(tmp_path, capsys):
    code, err = cli([*RETRAIN, "--run-dir", tmp_path / "run", "--teacher", "timm:resnet18"], capsys)
    line = error_line(err)
    assert code == 2 and "timm:resnet18" in line and "--teacher-weights" in line
    assert not (tmp_path / "run" / "retrain" / "tiny" / "last.pt").exists()


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    import timm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "resnet18-c10.pt"
    torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), path)
    return path


def test_timm_teacher_loads_the_given_weights(resnet18_weights):
    from types import SimpleNamespace

    from retrain.inputs import load_teacher

    cfg = SimpleNamespace(kd_online=False, teacher_weights=str(resnet18_weights), space="")
    net, spec = load_teacher("timm:resnet18", 10, True, cfg)
    saved = torch.load(resnet18_weights, weights_only=True)
    assert spec["name"] == "resnet18" and all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())


def test_timm_teacher_weights_run_end_to_end(tmp_path, resnet18_weights):
    argv = [*RETRAIN, "--run-dir", tmp_path / "run", "--teacher", "timm:resnet18", "--teacher-weights",
            resnet18_weights, "--max-steps", "1"]  # fmt: skip
    assert cli(argv)[0] == 0
    assert (tmp_path / "run" / "retrain" / "tiny" / "last.pt").exists()


@pytest.mark.parametrize("bad", ["malicious", "other-classes", "missing"])
def test_bad_teacher_weights_are_refused(tmp_path, capsys, bad):
    import timm

    canary = tmp_path / "pwned"
    path = {
        "malicious": lambda: malicious_checkpoint(tmp_path / "w.pt", canary),
        "other-classes": lambda: (
            torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "w.pt") or tmp_path / "w.pt"
        ),
        "missing": lambda: tmp_path / "none.pt",
    }[bad]()
    argv = [*RETRAIN, "--run-dir", tmp_path / "run", "--teacher", "timm:resnet18", "--teacher-weights", path]
    code, err = cli(argv, capsys)
    line = error_line(err)
    assert code == 2 and "--teacher-weights" in line
    assert not canary.exists() and not (tmp_path / "run" / "retrain" / "tiny" / "last.pt").exists()


def test_teacher_weights_need_a_timm_teacher(tmp_path, capsys):
    code, err = cli([*RETRAIN, "--run-dir", tmp_path / "run", "--teacher-weights", tmp_path / "w.pt"], capsys)
    assert code == 2 and "--teacher-weights is for a fixed --teacher timm:" in error_line(err)
