"""Parsers that fail closed: hostile or careless input files and options, made the way an attacker or a
careless user would make them, each run through `run.main` (in this process). Every one must stop with
one `error:` line and exit code 2 (never a traceback, a hang or an out-of-memory kill), or recover, and
must not write over or lose what a run had saved before.

Options and configs: T1 (--image-size), T5 (YAML keys and nesting, space options, seeds), U1 (NaN/inf
options and the NaN-loss message), T8 (--help of every command). Files: T2 (a random-bytes last.pt),
T3 (journal and metrics lines), T4 (architecture JSON), T6 (checkpoints with missing entries or
ill-shaped tensors), T7 (an unwritable export folder), U2 (empty class folders), U3 (an empty top-k),
U4 (the export hint). DDP: K1 (a NASNet network with a dead cell under a 2-rank gloo torchrun).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from core.checkpoint import load_checkpoint, previous_path, save_checkpoint
from core.errors import CheckpointError, UserError
from tests.conftest import ROOT, run_torchrun
from tests.reliability.helpers import RETRAIN, SUPERNET, cli, error_line, image_folder, step_of


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (to show that a refused command changed nothing); TensorBoard
    event files are left out (a trainer opens a new one when it starts)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "tb" not in p.relative_to(root).parts
    }


def _refused(argv: list, capsys, *needles: str) -> str:
    code, err = cli(argv, capsys)
    line = error_line(err)
    assert code == 2, err[-2000:]
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture(scope="module")
def sn(tmp_path_factory):
    """A tiny supernet run stopped at step 5 (last.pt step 5, last.prev.pt step 4)."""
    base = tmp_path_factory.mktemp("sn")
    assert cli([*SUPERNET, "--run-dir", base / "part", "--max-steps", "5"])[0] == 0
    ckpt = base / "part" / "supernet" / "last.pt"
    assert step_of(ckpt) == 5 and step_of(previous_path(ckpt)) == 4
    return base / "part"


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    """A tiny retrain run of one step (retrain/tiny/last.pt)."""
    base = tmp_path_factory.mktemp("rt")
    assert cli([*RETRAIN, "--run-dir", base, "--max-steps", "1"])[0] == 0
    return base


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- T1: image size ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["100000", "4097"])
def test_image_size_too_large_refused_before_anything_is_read(tmp_path, capsys, size):
    run = tmp_path / "run"
    _refused([*SUPERNET, "--run-dir", run, "--image-size", size], capsys, "--image-size", "4096")
    assert not run.exists()


# ---- T2: a checkpoint of random bytes ------------------------------------------------------------


def _junk(seed: int) -> bytes:
    """Random bytes, every other one behind a zip signature; seeds 12 and 48 make torch.load raise
    KeyError and IndexError, which are neither I/O, unpickling nor zip errors."""
    rng = random.Random(seed)
    junk = rng.randbytes(rng.choice([64, 4096, 5000]))
    return b"PK\x03\x04" + junk if seed % 2 else junk


def test_random_bytes_checkpoints_are_corrupt_not_crashes(tmp_path):
    from core.checkpoint import load_latest

    good = save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, tmp_path / "last.pt")
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 2}, good)
    for seed in range(100):
        good.write_bytes(_junk(seed))
        with pytest.raises(CheckpointError, match="truncated or corrupt|refused"):
            load_checkpoint(good)
        state, used = load_latest(good)
        assert used == previous_path(good) and state["step"] == 1


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, MemoryError])
def test_interrupts_and_memory_errors_during_a_load_are_not_called_corrupt(tmp_path, monkeypatch, exc):
    path = save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, tmp_path / "last.pt")

    def load(*a, **k):
        raise exc()

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(exc):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", [12, 48])
def test_random_bytes_last_resumes_from_previous(sn, tmp_path, caplog, seed):
    run = _copy(sn, tmp_path / "run")
    ckpt = run / "supernet" / "last.pt"
    ckpt.write_bytes(_junk(seed))
    with caplog.at_level(logging.INFO):
        assert cli([*SUPERNET, "--run-dir", run, "--resume", "auto"])[0] == 0
    assert "truncated or corrupt" in caplog.text
    assert f"resumed from {previous_path(ckpt)} at step 4" in caplog.text
    assert step_of(ckpt) == 8


# ---- T3: journal and metrics lines ---------------------------------------------------------------


def _search_argv(run: Path, table: Path, budget: int = 8) -> list:
    return ["search", "--space", "tests.toy_space:ToySpace", "--space-opts", "decisions=5", "--space-opts", "choices=4",
            "--space-opts", "seed=5", "--evaluator", "table", "--table", table, "--arch-column", "name",
            "--metric", "score", "--budget", budget, "--batch", "4", "--seed", "3", "--quiet", "--threads", "1",
            "--run-dir", run]  # fmt: skip


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    from tests.reliability.kill_resume_harness import toy_table

    base = tmp_path_factory.mktemp("search")
    table = toy_table(base / "toy.csv")
    assert cli(_search_argv(base / "run", table))[0] == 0
    return base / "run", table


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "line",
    [b"5\n", b'"text"\n', b"[1, 2]\n", b"null\n", b'{"index": 8, "str": "0-0-0-0-0", "arch": {}}\n',
     b'{"index": "8", "str": "0-0-0-0-0", "arch": {}, "metric": 1.0}\n', DEEP + b"\n",
     b'{"index": 8, "str": "x", "arch": {}, "metric": ' + b"9" * 5000 + b"}\n"],
    ids=["number", "string", "list", "null", "no-metric", "index-string", "deep", "huge-int"],
)  # fmt: skip
def test_journal_line_of_the_wrong_shape_refused_on_resume(search_run, tmp_path, capsys, line):
    run, table = search_run
    run = _copy(run, tmp_path / "run")
    journal = run / "search" / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + line)
    before = _files(run / "search")
    _refused([*_search_argv(run, table, budget=12), "--resume", "auto"], capsys, "journal.jsonl: line 9",
             "restore the file")  # fmt: skip
    assert _files(run / "search") == before


def test_deep_torn_tail_of_the_journal_is_dropped_and_the_search_goes_on(search_run, tmp_path, caplog):
    run, table = search_run
    run = _copy(run, tmp_path / "run")
    journal = run / "search" / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + DEEP[:150_000])  # killed while writing a (hostile) line
    with caplog.at_level(logging.WARNING):
        assert cli([*_search_argv(run, table, budget=12), "--resume", "auto"])[0] == 0
    assert "dropping a torn last line" in caplog.text
    from core.jsonl import read_jsonl

    assert [r["index"] for r in read_jsonl(journal)] == list(range(12))


@pytest.mark.parametrize(
    "line", [b"7\n", b'{"step": "abc", "epoch": 1}\n', b'{"step": 1, "epoch": [1]}\n', DEEP + b"\n"]
)
def test_metrics_line_of_the_wrong_shape_refused_on_resume(sn, tmp_path, capsys, line):
    run = _copy(sn, tmp_path / "run")
    metrics = run / "supernet" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes() + line)
    before = _files(run / "supernet")
    _refused([*SUPERNET, "--run-dir", run, "--resume", "auto"], capsys, "metrics.jsonl: line")
    assert _files(run / "supernet") == before


def test_read_jsonl_keeps_torn_lines_a_warning_and_refuses_foreign_ones(tmp_path, caplog):
    from core.jsonl import read_jsonl

    path = tmp_path / "any.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2\n{"a": 3}\n')  # a torn line finished by the next append
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    assert "line 2 is incomplete or corrupt" in caplog.text
    for bad in (b"3\n", DEEP + b"\n", b"[" * 20 + b"]" * 20 + b"\n", b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}\n"):
        path.write_bytes(b'{"a": 1}\n' + bad)
        with pytest.raises(UserError, match="line 2 is not a record this tool writes"):
            read_jsonl(path)


# ---- T4 and U3: architecture JSON ----------------------------------------------------------------

NASNET = '{"space": "nasnet", "normal": [[0, "sep_conv_3x3"], [1, "skip_connect"], [1, "max_pool_3x3"], [2, "sep_conv_3x3"]], "reduce": [[0, "sep_conv_3x3"], [1, "skip_connect"], [1, "max_pool_3x3"], [2, "sep_conv_3x3"]]}'  # noqa: E501
HOSTILE = {
    "inf": NASNET.replace("[0, ", "[1e999, ", 1),
    "nan": NASNET.replace("[0, ", "[NaN, ", 1),
    "bigint": NASNET.replace("[0, ", "[" + "7" * 5000 + ", ", 1),
    "deep": NASNET.replace('"sep_conv_3x3"', "[" * 50_000 + "1" + "]" * 50_000, 1),
    "deep-200": NASNET.replace('"sep_conv_3x3"', "[" * 200 + "1" + "]" * 200, 1),
    "space-list": NASNET.replace('"nasnet"', '["nasnet"]', 1),
}
RETRAIN_BASE = ["--space-opts", "nodes=2", "--space-opts", "channels=4", "--space-opts", "blocks=1,1",
                "--space-opts", "ops=lanas", "--epochs", "1", "--train-images", "32", "--test-images", "16",
                "--batch-size", "16", "--search-size", "100", "--threads", "1", "--quiet"]  # fmt: skip


def test_the_base_architecture_is_valid(tmp_path):
    """The hostile variants below differ from a valid architecture in one value only."""
    assert cli(["retrain", "--arch", NASNET, *RETRAIN_BASE, "--run-dir", tmp_path, "--max-steps", "1"])[0] == 0


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_arch_json_refused(tmp_path, capsys, kind):
    _refused(["retrain", "--arch", HOSTILE[kind], *RETRAIN_BASE, "--run-dir", tmp_path / "a"], capsys, "--arch")
    topk = tmp_path / "topk.json"
    topk.write_text('[{"rank": 0, "arch": ' + HOSTILE[kind] + "}]")
    _refused(["retrain", "--arch-file", topk, *RETRAIN_BASE, "--run-dir", tmp_path / "b"], capsys)
    assert not (tmp_path / "a" / "retrain").exists() and not (tmp_path / "b" / "retrain").exists()


@pytest.mark.parametrize(
    "content, needle",
    [('[{"rank": 0, "arch": ARCH, "space_opts": "channels=4"}]', "'space_opts' of rank 0"),
     ('[{"rank": 0, "arch": ARCH, "space_opts": [1, 2]}]', "'space_opts' of rank 0"),
     ("[]", "lists no architectures"), ('{"topk": []}', "lists no architectures"),
     ("[" * 100_000, "nested too deeply"), ("\xff\xfe garbage", "not valid JSON")],
    ids=["opts-string", "opts-list", "empty-list", "empty-topk", "deep", "bytes"],
)  # fmt: skip
def test_malformed_topk_files_refused(tmp_path, capsys, content, needle):
    topk = tmp_path / "topk.json"
    topk.write_bytes(content.replace("ARCH", NASNET).encode("latin-1"))
    line = _refused(["retrain", "--arch-file", topk, *RETRAIN_BASE, "--run-dir", tmp_path], capsys, needle)
    assert "use 0 to -1" not in line
    assert not (tmp_path / "retrain").exists()


def test_parse_json_limits():
    from core.safejson import MAX_DEPTH, brief, parse_json

    assert parse_json('{"a": [1, 2.5, "x"]}', "t") == {"a": [1, 2.5, "x"]}
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(ok, "t") is not None
    for bad in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "1e999", "-Infinity", "NaN", "9" * 31, "{"):
        with pytest.raises(UserError, match="^t"):
            parse_json(bad, "t")
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    assert "nested too deeply" in brief(nested) and brief(10**5000) == "<a int>"


# ---- T5: configs, space options and seeds --------------------------------------------------------

DEEP_BLOCK = "a:\n" + "".join("  " * i + "- \n" for i in range(1, 200))  # block lists 200 deep


@pytest.mark.parametrize(
    "text, needle",
    [("1: 2\n", "key 1"), ("epochs: 1\nsupernet:\n  3: x\n", "key 3"), ("null: 1\n", "key None"),
     ("[" * 50_000 + "]" * 50_000 + "\n", "nests too deeply"), (DEEP_BLOCK, "nest"),
     ("lr: .nan\n", "lr"), ("lr: .inf\n", "lr"), ("split_seed: 123456789012345678901234\n", "--split-seed")],
    ids=["int-key", "int-key-in-section", "null-key", "deep-flow", "deep-block", "nan", "inf", "huge-seed"],
)  # fmt: skip
def test_hostile_yaml_configs_refused(tmp_path, capsys, text, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    _refused([*SUPERNET, "--config", cfg, "--run-dir", tmp_path / "run"], capsys, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "space, opt, needle",
    [("nasnet", "channels=abc", "channels"), ("nasnet", "channels=0", "channels"),
     ("nasnet", "channels=.nan", "channels"), ("nasnet", "channels=1e999", "channels"),
     ("nasnet", "blocks=5", "blocks"), ("nasnet", "nodes=-1", "nodes"), ("nb201", "channels=abc", "channels"),
     ("nb201", "channels=0", "channels"), ("nb201", "cells=.inf", "cells"), ("mbconv", "kernels=abc", "kernels"),
     ("mbconv", "width_mult=.nan", "width_mult"), ("resnet20", "blocks=x", "blocks"),
     ("resnet20", "ratios=.nan", "ratios"), ("nasnet", "channels=" + "[" * 50_000, "channels")],
    ids=lambda v: v[:20],
)  # fmt: skip
def test_bad_space_options_refused(tmp_path, capsys, space, opt, needle):
    i = SUPERNET.index("--space")
    argv = [*SUPERNET[:i], "--space", space, *SUPERNET[i + 6 :], "--space-opts", opt, "--run-dir", tmp_path]
    _refused(argv, capsys, needle)
    assert not list(tmp_path.rglob("*.pt"))


@pytest.mark.parametrize("seed", ["-1", "4294967296", "12345678901234567890123", "1.5", "nan"])
def test_out_of_range_seeds_refused(tmp_path, capsys, seed):
    _refused([*SUPERNET, "--run-dir", tmp_path / "run", "--seed", seed], capsys, "seed")
    _refused([*RETRAIN, "--run-dir", tmp_path / "run", "--split-seed", seed], capsys, "seed")
    assert not (tmp_path / "run").exists()


def test_largest_seed_accepted():
    from supernet.config import SupernetConfig

    assert SupernetConfig(seed=2**32 - 1).seed == 2**32 - 1


# ---- U1: non-finite options and the NaN-loss message ---------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("flag", ["--lr", "--weight-decay", "--checkpoint-minutes"])
def test_non_finite_numbers_refused(tmp_path, capsys, value, flag):
    needle = flag.lstrip("-").replace("-", "_")
    _refused([*RETRAIN, "--run-dir", tmp_path / "run", f"{flag}={value}"], capsys, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "-1", "1e7"])
def test_loader_timeout_out_of_range_refused(tmp_path, capsys, value):
    argv = [*RETRAIN, "--run-dir", tmp_path / "run", f"--loader-timeout={value}"]
    _refused(argv, capsys, "loader-timeout in (0, 1e6]")


def test_non_finite_values_refused_when_a_config_is_built_directly():
    from retrain.config import RetrainConfig

    with pytest.raises(UserError, match="--lr nan: give a finite number"):
        RetrainConfig(lr=float("nan"))


def test_nan_loss_before_any_checkpoint_does_not_claim_one_was_kept(tmp_path, monkeypatch, capsys):
    from retrain.train import RetrainTrainer

    original = RetrainTrainer.fit

    def fit(self):
        with torch.no_grad():
            next(self.net.parameters()).fill_(float("nan"))  # the first loss is NaN
        return original(self)

    monkeypatch.setattr(RetrainTrainer, "fit", fit)
    line = _refused([*RETRAIN, "--run-dir", tmp_path], capsys, "non-finite loss", "no checkpoint was written yet")
    assert "is kept" not in line
    assert not list(tmp_path.rglob("*.pt"))


def test_nan_loss_after_a_checkpoint_names_the_kept_one(rt, tmp_path, monkeypatch, capsys):
    from retrain.train import RetrainTrainer

    run = _copy(rt, tmp_path / "run")
    ckpt = run / "retrain" / "tiny" / "last.pt"
    before = ckpt.read_bytes()
    original = RetrainTrainer.try_resume

    def try_resume(self):
        resumed = original(self)
        with torch.no_grad():
            next(self.net.parameters()).fill_(float("nan"))  # the first loss after the resume is NaN
        return resumed

    monkeypatch.setattr(RetrainTrainer, "try_resume", try_resume)
    _refused([*RETRAIN, "--run-dir", run, "--resume", "auto"], capsys, f"the last good checkpoint {ckpt} is kept")
    assert ckpt.read_bytes() == before


# ---- T6: checkpoints that match the run but lack entries or have ill-shaped tensors --------------


def _edit_checkpoint(path: Path, edit) -> None:
    state = load_checkpoint(path)
    edit(state)
    state.pop("_format")
    save_checkpoint(state, path, keep_previous=False)


def _wrong_shape(state: dict) -> None:
    name = next(k for k, v in state["model"].items() if v.dim() == 4)
    state["model"][name] = torch.zeros(1, 1, 1, 1)


EDITS = {
    "no-optimizer": lambda s: s.pop("optimizer"),
    "no-scheduler": lambda s: s.pop("scheduler"),
    "no-rng": lambda s: s.pop("rng"),
    "bad-optimizer": lambda s: s.update(optimizer={"state": {}, "param_groups": "x"}),
    "wrong-shape": _wrong_shape,
    "missing-weight": lambda s: s["model"].pop(next(iter(s["model"]))),
    "step-text": lambda s: s.update(step="five"),
}


@pytest.mark.parametrize("kind", list(EDITS))
def test_supernet_checkpoint_with_bad_contents_refused_on_resume(sn, tmp_path, capsys, kind):
    run = _copy(sn, tmp_path / "run")
    ckpt = run / "supernet" / "last.pt"
    _edit_checkpoint(ckpt, EDITS[kind])
    before = _files(run / "supernet")
    _refused([*SUPERNET, "--run-dir", run, "--resume", "auto"], capsys, f"{ckpt} does not fit")
    assert _files(run / "supernet") == before


@pytest.mark.parametrize("kind", ["no-optimizer", "wrong-shape", "missing-weight"])
def test_retrain_checkpoint_with_bad_contents_refused_on_resume_export_and_as_teacher(rt, tmp_path, capsys, kind):
    run = _copy(rt, tmp_path / "run")
    ckpt = run / "retrain" / "tiny" / "last.pt"
    _edit_checkpoint(ckpt, EDITS[kind])
    before = _files(ckpt.parent)
    _refused([*RETRAIN, "--run-dir", run, "--resume", "auto"], capsys, "does not fit")
    if kind != "no-optimizer":  # export and a teacher need only the weights
        _refused(["export", "--checkpoint", ckpt, "--out-dir", tmp_path / "exp", "--formats", "torchscript",
                  "--run-dir", tmp_path / "x"], capsys, "does not fit")  # fmt: skip
        _refused([*RETRAIN, "--run-dir", tmp_path / "student", "--teacher", ckpt], capsys, "does not fit")
        assert not list((tmp_path / "student").rglob("*.pt")) and not (tmp_path / "exp").exists()
    assert _files(ckpt.parent) == before


# ---- T7: an export folder that cannot be written -------------------------------------------------


@pytest.mark.parametrize("where", ["mkdir", "write"])
def test_export_to_a_read_only_folder(rt, tmp_path, monkeypatch, capsys, where):
    """A read-only file system (EROFS), injected: the tests may run as root, which ignores permissions."""
    ro = tmp_path / "ro-out"
    if where == "write":
        ro.mkdir()
    real_mkdir, real_open = Path.mkdir, Path.open

    def mkdir(self, *a, **k):
        if "ro-out" in str(self) and not self.exists():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)

    def open_(self, mode="r", *a, **k):
        if "ro-out" in str(self) and any(m in mode for m in "wax"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_open(self, mode, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "open", open_)
    ckpt = rt / "retrain" / "tiny" / "last.pt"
    before = _files(rt / "retrain")
    _refused(["export", "--checkpoint", ckpt, "--out-dir", ro, "--run-dir", tmp_path / "x"], capsys,
             "cannot write the export", "Read-only", "--out-dir")  # fmt: skip
    assert _files(rt / "retrain") == before
    assert not ro.exists() or not list(ro.iterdir())


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_export_to_a_folder_without_write_permission(rt, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused(["export", "--checkpoint", rt / "retrain" / "tiny" / "last.pt", "--out-dir", ro / "x",
                  "--run-dir", tmp_path / "x"], capsys, "cannot write the export")  # fmt: skip
    finally:
        ro.chmod(0o755)


# ---- T8: --help of every command -----------------------------------------------------------------


def _commands() -> list[str]:
    import run

    return ["", *run.COMMANDS, "info"]


@pytest.mark.parametrize("command", _commands())
def test_help_of_every_command(command, capsys):
    import run

    with pytest.raises(SystemExit) as stop:
        run.main([command, "--help"] if command else ["--help"])
    out = capsys.readouterr()
    assert stop.value.code == 0 and "usage:" in out.out and "Traceback" not in out.err


def test_percent_in_help_text_is_shown_literally(capsys):
    import run

    with pytest.raises(SystemExit):
        run.main(["pipeline", "--help"])
    assert "2%" in capsys.readouterr().out.replace("\n", " ")


# ---- U2: empty class folders ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_empty_class_folder_refused_by_name(tmp_path, capsys, form):
    data = image_folder(tmp_path / "data", classes=3, per_class=6)
    for split in ("train", "test"):
        (data / split / "class9").mkdir()
    if form == "zip":
        data = Path(shutil.make_archive(str(tmp_path / "data"), "zip", root_dir=tmp_path, base_dir="data"))
    argv = [*SUPERNET, "--run-dir", tmp_path / "run", "--dataset", "imagefolder", "--data-dir", data,
            "--search-size", "6", "--batch-size", "8"]  # fmt: skip
    _refused(argv, capsys, "class9", "holds no images")
    assert not list((tmp_path / "run").rglob("*.pt"))


# ---- U4: the export hint -------------------------------------------------------------------------


def test_export_hint_is_shell_quoted(tmp_path):
    from pipeline.run import summarize

    run_dir = tmp_path / "my run; rm -rf x"
    best = {"str": "a", "metric": 50.0, "mflops": 1.0, "params": 0.1}
    out = summarize(run_dir, best, [], {"markdown": "r.md", "html": "r.html"})
    hint = next(line for line in out["lines"] if line.startswith("export: "))
    argv = shlex.split(hint[len("export: ") :])
    assert argv[argv.index("--run-dir") + 1] == str(run_dir) and argv[-2:] == ["--arch-id", "top1"]


# ---- K1: unused parameters under DDP -------------------------------------------------------------

# Two nodes, every edge a sep_conv_3x3; the inputs (0, 0, 0, 2) never read input 1, the previous cell's
# output, so the cell before the last one feeds nothing: its parameters get no gradient.
DEAD_CELL = "0,0,0,0,0,0,0,2"
ALL_USED = "2,3,1,0,0,1,1,2"


def _built(lanet: str) -> torch.nn.Module:
    from retrain.inputs import _from_cells
    from supernet.spaces.base import make_space

    name, opts, arch = _from_cells("--lanet", lanet, "nasnet", {"channels": 4, "blocks": [1, 1]})
    space = make_space(name, **opts)
    return space.build(space.from_json(arch), 10)


def test_unused_parameter_probe_is_exact_and_changes_nothing():
    from core.distributed import has_unused_parameters

    for lanet, expected in ((DEAD_CELL, True), (ALL_USED, False)):
        net = _built(lanet).eval()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        x = torch.randn(2, 3, 32, 32)
        rng = torch.get_rng_state()
        assert has_unused_parameters(net, x) is expected
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN statistics restored
        assert torch.equal(rng, torch.get_rng_state()) and not net.training
        assert all(p.grad is None for p in net.parameters())


def test_retrain_under_torchrun_with_a_dead_cell(tmp_path):
    i = RETRAIN.index("--lanet")
    argv = [*RETRAIN[:i], "--lanet", DEAD_CELL, *RETRAIN[i + 2 :], "--epochs", "1", "--device", "cpu"]
    proc = run_torchrun(ROOT / "run.py", *argv, "--run-dir", str(tmp_path), timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    state = load_checkpoint(tmp_path / "retrain" / "tiny" / "last.pt")
    assert state["finished"] and json.loads(json.dumps(state["model_spec"]))["arch"]["normal"][1][0] == 0
