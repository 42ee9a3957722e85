"""`run.py retrain` from the command line: a timm baseline end to end, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import run_cli

TINY = ["--epochs", "1", "--batch-size", "8", "--train-images", "8", "--test-images", "8", "--search-size", "100"]


def test_timm_resnet18_baseline_trains_from_the_command(tmp_path):
    proc = run_cli("retrain", "--model", "timm:resnet18", "--run-dir", str(tmp_path), "--quiet", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "retrain" / "timm-resnet18"
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["source"] == "timm" and report["model"]["name"] == "resnet18"
    assert report["complexity"]["params_m"] == pytest.approx(11.18, abs=0.01)  # resnet18 with 10 classes
    assert (out / "last.pt").exists() and (out / "curve.png").exists() and (out / "tb").is_dir()
    assert (tmp_path / "retrain.config.yaml").exists()


def test_missing_arch_file_exits_2_with_one_line(tmp_path):
    proc = run_cli("retrain", "--run-dir", str(tmp_path), "--arch-file", "missing/topk.json", *TINY)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --arch-file") and "does not exist" in lines[0], proc.stderr


@pytest.mark.parametrize(
    "arch, message",
    [
        ('{"space": "nasnet", "normal": [[0, "sep_conv_3x3"]', "not valid JSON"),
        ('{"space": "nasnet", "normal": [], "reduce": []}', "nasnet: normal has 0 edges"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_malformed_arch_exits_2_with_one_line(tmp_path, capsys, arch, message):
    # in-process through run.main (the same path as the command, without another interpreter start-up)
    import run

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = run.main(["retrain", "--run-dir", str(tmp_path), "--threads", "1", "--arch", arch, *TINY])
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], err
