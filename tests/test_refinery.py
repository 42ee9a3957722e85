"""Label refinery: `--teacher` takes a previous retrain run, the soft labels come from the student's own
augmented crop, each step's report names its teacher and the teacher's accuracy; the preset chain."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from core.config import CONFIG_DIR
from core.errors import UserError
from retrain.config import RetrainConfig
from retrain.inputs import find_teacher_checkpoint
from retrain.train import RetrainTrainer
from tests.reliability.helpers import cli, error_line

torch.set_num_threads(1)
TINY_MB = {"stem": "cifar", "depths": [1], "kernels": [3], "expands": [3], "width_mult": 0.25, "dropout": 0.0}
CHAIN = [CONFIG_DIR / "refinery" / f"demo-{n}.yaml" for n in (1, 2, 3, 4)]


def _step(tmp_path, n: int, **kw) -> list[str]:
    """Step n of the preset chain at toy size: its arch and recipe, 1 epoch on 32 images, in tmp_path."""
    argv = ["retrain", "--config", CHAIN[n - 1], "--run-dir", tmp_path / f"step{n}", "--threads", "1", "--quiet",
            "--epochs", "1", "--batch-size", "16", "--train-images", "32", "--test-images", "32",
            "--space-opts", "width_mult=0.1"]  # fmt: skip
    if n > 1:
        argv += ["--teacher", tmp_path / f"step{n - 1}"]
    return argv + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]


def _report(run) -> dict:
    (report,) = run.glob("retrain/*/report.json")
    return json.loads(report.read_text())


def test_a_two_step_chain_runs_and_records_its_teacher(tmp_path, capsys):
    assert cli(_step(tmp_path, 1), capsys)[0] == 0
    first = _report(tmp_path / "step1")
    assert first["teacher"] is None and first["model"]["name"] == "mbconv"
    code, err = cli(_step(tmp_path, 2), capsys)
    assert code == 0, err
    second = _report(tmp_path / "step2")
    teacher = second["teacher"]
    assert teacher["ref"] == str(tmp_path / "step1") and teacher["arch_id"] == first["arch_id"] == "b3"
    assert teacher["checkpoint"] == str(tmp_path / "step1" / "retrain" / "b3" / "last.pt")
    assert teacher["test_top1"] == first["final"]["test_top1"] and teacher["finished"] is True
    assert teacher["its_teacher"] is None and second["config"]["kd_weight"] == 1.0
    assert all("train_kd" in r for r in second["curve"])  # it learned from the soft labels
    # a third step names the whole chain: its teacher was itself taught by step 1
    assert cli(_step(tmp_path, 3), capsys)[0] == 0
    assert _report(tmp_path / "step3")["teacher"]["its_teacher"] == str(tmp_path / "step1")


def test_teacher_run_directory_is_resolved_or_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="holds no retrained model"):
        find_teacher_checkpoint(str(tmp_path))
    for name in ("a", "b"):
        (tmp_path / "retrain" / name).mkdir(parents=True)
        (tmp_path / "retrain" / name / "last.pt").write_bytes(b"")
    assert find_teacher_checkpoint(str(tmp_path / "retrain" / "a")) == tmp_path / "retrain" / "a" / "last.pt"
    code, err = cli([*_step(tmp_path / "s", 2)[:-2], "--teacher", tmp_path], capsys)
    assert code == 2 and "holds 2 retrained models (a, b)" in error_line(err)
    code, err = cli([*_step(tmp_path / "s", 2)[:-2], "--teacher", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in error_line(err)


def test_soft_labels_come_from_the_students_own_augmented_crop(tmp_path):
    """The teacher sees exactly the tensor the student sees (crop, flip, Cutout, Mixup all included)."""
    teacher = tmp_path / "teacher"
    arch = yaml.safe_load(CHAIN[3].read_text())["arch"]
    base = dict(space="mbconv", space_opts=TINY_MB, arch=arch, epochs=1, batch_size=8, train_images=16,
                test_images=8, search_size=100, quiet=True, checkpoint_minutes=0)  # fmt: skip
    RetrainTrainer(RetrainConfig(run_dir=str(teacher), **base)).fit()
    cfg = RetrainConfig(run_dir=str(tmp_path / "student"), teacher=str(teacher), cutout=8, mixup=0.2, max_steps=2,
                        **base)  # fmt: skip
    trainer = RetrainTrainer(cfg)
    seen: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    trainer.net.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0].clone()) if m.training else None)
    trainer.teacher.register_forward_pre_hook(lambda _m, a: seen["teacher"].append(a[0].clone()))
    trainer.fit()
    assert len(seen["student"]) == len(seen["teacher"]) == 2
    for s, t in zip(seen["student"], seen["teacher"]):
        assert torch.equal(s, t)
    assert not torch.equal(seen["student"][0], seen["student"][1])  # the batches differ: the check can fail
