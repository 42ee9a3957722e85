"""The command line: bad input exits 2 with one line, help documents options, info works."""

from __future__ import annotations

import time

import pytest

import run
from tests.conftest import run_cli


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "mnist"], "invalid choice"),
        (["--dataset", "imagefolder", "--data-dir", "/no/such/dir"], "does not exist"),
        (["--dataset", "cifar10", "--data-dir", "/tmp"], "not found at"),
        (["--num-classes", "7"], "does not match the 10 classes"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--lr", "abc"], "cannot read"),
        (["--space", "nosuch"], "unknown space"),
        (["--space-opts", "bogus=1"], "bad options for space"),
        (["--resume", "/no/such.pt"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    t0 = time.monotonic()
    with pytest.raises(SystemExit) if "invalid choice" in message else _nullctx():
        code = run.main(["supernet", "--run-dir", str(tmp_path / "r"), "--space", "nb201", "--quiet", *argv])
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert time.monotonic() - t0 < 30


def test_a_missing_package_is_named_not_reported_as_bad_options(monkeypatch, capsys):
    real_load = run._load

    def load(spec):
        if spec.startswith("bench.nb201."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_load(spec)

    monkeypatch.setattr(run, "_load", load)
    monkeypatch.setattr(run, "MISSING", {})
    assert run.main(["bench-nb201", "--budget-minutes", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the package 'torch'" in err and "README" in err
    assert run.main(["supernet", "--epochs", "0"]) == 2  # the other commands still parse their options
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_unknown_config_key_and_unwritable_run_dir(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nlearning_rate: 0.1\n")
    assert run.main(["supernet", "--config", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown option 'learning_rate'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run.main(["supernet", "--run-dir", str(blocker / "sub"), "--space", "nb201"]) == 2
    assert "not writable" in capsys.readouterr().err
    assert run.main(["supernet", "--preset", "nosuchpreset"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_real_process_exit_code_and_help(tmp_path):
    proc = run_cli(
        "supernet", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path / "r")
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    helped = run_cli("supernet", "--help")
    assert helped.returncode == 0
    for flag in (
        "--run-dir",
        "--seed",
        "--device",
        "--dataset",
        "--data-dir",
        "--epochs",
        "--resume",
        "--quiet",
        "--strategy",
        "--amp",
    ):
        assert flag in helped.stdout


def test_info_environment_and_checkpoint(tmp_path, capsys):
    import json

    import torch

    from core.checkpoint import save_checkpoint

    assert run.main(["info"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch"] == torch.__version__ and env["cpu_cores_free"] >= 1
    save_checkpoint({"kind": "supernet", "step": 3, "model": {"w": torch.zeros(2, 3)}}, tmp_path / "s" / "last.pt")
    assert run.main(["info", str(tmp_path / "s" / "last.pt")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "supernet" and info["step"] == 3 and info["model_tensors"] == 1
    assert run.main(["info", str(tmp_path)]) == 0
    assert "s/last.pt" in json.loads(capsys.readouterr().out)["checkpoints"]
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert run.main(["info", str(tmp_path / "bad.pt")]) == 2


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
