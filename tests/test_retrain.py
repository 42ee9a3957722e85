"""Retraining: every augmentation on LaNet and MBConv archs, EMA, exact resume, distillation, margin head."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from core.checkpoint import load_checkpoint
from core.errors import ArchError, UserError
from retrain.config import RetrainConfig
from retrain.heads import Head
from retrain.inputs import resolve_spec
from retrain.losses import RetrainLoss, kd_loss
from retrain.train import RetrainTrainer
from supernet.spaces.base import make_space
from supernet.spaces.nasnet import LANET

LANET_STR = ",".join(map(str, LANET))
TINY_NAS = {"channels": 8, "blocks": [1, 1, 1]}
TINY_MB = {"stem": "cifar", "depths": [1], "kernels": [3], "expands": [3], "width_mult": 0.25}
EVERY_AUG = dict(cutout=8, mixup=0.2, cutmix=1.0, random_erasing=0.5, drop_path=0.2, label_smoothing=0.1)


def make_cfg(tmp_path, **kw) -> RetrainConfig:
    base = dict(
        run_dir=str(tmp_path), epochs=1, batch_size=16, train_images=32, test_images=32, eval_batch_size=64,
        search_size=100, quiet=True, checkpoint_minutes=0, seed=0, lr=0.05,
    )  # fmt: skip
    if not any(k in kw for k in ("arch", "model", "arch_file")):
        base.update(lanet=LANET_STR, space_opts=TINY_NAS)
    base.update(kw)
    return RetrainConfig(**base)


def tiny_mbconv_arch() -> str:
    space = make_space("mbconv", **TINY_MB)
    return json.dumps(space.to_json(space.smallest()))


def _check_outputs(result: dict) -> dict:
    assert result["finished"]
    out = result["out_dir"]
    report = json.loads(open(f"{out}/report.json").read())
    assert report["test_split"] == "test" and report["curve"]
    for key in ("params_m", "mflops", "madds_m", "mops_mult_one", "mops_mult_half", "micronet_score"):
        assert report["complexity"][key] > 0, key
    assert report["complexity"]["mops_mult_half"] < report["complexity"]["mops_mult_one"]
    assert 0 <= report["final"]["test_top1"] <= report["final"]["test_top5"] <= 100
    assert open(f"{out}/curve.png", "rb").read(4) == b"\x89PNG"
    assert open(f"{out}/metrics.jsonl").read().count("\n") == len(report["curve"])
    return report


def test_lanet_trains_with_every_augmentation(tmp_path):
    cfg = make_cfg(
        tmp_path, space_opts={**TINY_NAS, "auxiliary": True}, policy="randaugment", head="cosine", ema_decay=0.9,
        **EVERY_AUG,
    )  # fmt: skip
    trainer = RetrainTrainer(cfg)
    assert trainer.spec["options"]["nodes"] == 7 and trainer.spec["options"]["concat"] == "loose"
    report = _check_outputs(trainer.fit())
    record = report["curve"][-1]
    assert record["train_aux"] > 0 and record["drop_path"] == pytest.approx(0.2)  # aux head and drop-path ramp ran
    assert "ema_test_top1" in record
    state = load_checkpoint(tmp_path / "retrain" / trainer.arch_id / "last.pt")
    floats = [k for k, v in state["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(state["model"][k], state["ema"][k]) for k in floats)  # EMA is not the raw model


def test_mbconv_trains_with_every_augmentation(tmp_path):
    cfg = make_cfg(
        tmp_path, arch=tiny_mbconv_arch(), space_opts=TINY_MB, policy="autoaugment", dropout=0.2, **EVERY_AUG
    )
    trainer = RetrainTrainer(cfg)
    x, y = next(iter(trainer.loader))
    assert y.shape == (8 * 2, 10) and torch.allclose(y.sum(1), torch.ones(16))  # Mixup/CutMix: soft targets
    _check_outputs(trainer.fit())


def test_resume_is_exact_with_ema(tmp_path):
    kw = dict(epochs=2, ema_decay=0.8, dropout=0.1, drop_path=0.2, cutout=8, mixup=0.5, random_erasing=0.5)
    full = RetrainTrainer(make_cfg(tmp_path / "a", max_steps=3, **kw)).fit()
    RetrainTrainer(make_cfg(tmp_path / "b", max_steps=1, **kw)).fit()  # "killed" after 1 step
    resumed = RetrainTrainer(make_cfg(tmp_path / "b", max_steps=3, resume="auto", **kw)).fit()
    assert full["step"] == resumed["step"] == 3
    a = load_checkpoint(f"{full['out_dir']}/last.pt")
    b = load_checkpoint(f"{resumed['out_dir']}/last.pt")
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    timing = ("img_per_s", "data_wait")
    assert a["history"] == [{**r, **{k: a["history"][i][k] for k in timing}} for i, r in enumerate(b["history"])]
    # the comparison can fail: another seed gives other weights
    other = RetrainTrainer(make_cfg(tmp_path / "c", max_steps=3, seed=1, **kw)).fit()
    c = load_checkpoint(f"{other['out_dir']}/last.pt")
    assert any(not torch.equal(a["ema"][k], c["ema"][k]) for k in a["ema"] if a["ema"][k].is_floating_point())


def test_existing_run_needs_resume_flag(tmp_path):
    RetrainTrainer(make_cfg(tmp_path, max_steps=1)).fit()
    with pytest.raises(UserError, match="--resume auto"):
        RetrainTrainer(make_cfg(tmp_path, max_steps=2)).fit()


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A small MBConv teacher fitted to 32 images (confident outputs), saved by the retrain command itself."""
    cfg = make_cfg(
        tmp_path_factory.mktemp("teacher"), arch=tiny_mbconv_arch(), space_opts=TINY_MB, epochs=6, crop_flip=False,
        optimizer="adamw", lr=0.01, weight_decay=0.0, ema_decay=0.5,
    )  # fmt: skip
    result = RetrainTrainer(cfg).fit()
    return result["checkpoint"]


def _kd_on(trainer: RetrainTrainer, x: torch.Tensor) -> float:
    with torch.no_grad():  # train-mode BN (batch statistics) on copies: no side effects on the run
        student = copy.deepcopy(trainer.net).train()(x)
        teacher = trainer.teacher(trainer._teacher_input(x))
    return float(kd_loss(student, teacher, trainer.cfg.kd_temperature))


def test_distillation_from_saved_teacher_lowers_kd_loss(tmp_path, teacher_ckpt):
    cfg = make_cfg(
        tmp_path, arch=tiny_mbconv_arch(), space_opts=TINY_MB, teacher=teacher_ckpt, kd_weight=1.0,
        kd_temperature=2.0, crop_flip=False, epochs=4, lr=0.01, optimizer="adamw", weight_decay=0.0, seed=5,
    )  # fmt: skip
    trainer = RetrainTrainer(cfg)
    assert trainer.teacher_spec["name"] == "mbconv" and not trainer.teacher.training
    x = next(iter(trainer.loader))[0]
    before = _kd_on(trainer, x)
    result = trainer.fit()
    after = _kd_on(trainer, x)
    assert after < 0.7 * before, (before, after)
    assert all("train_kd" in r for r in load_checkpoint(result["checkpoint"])["history"])


def test_teacher_at_larger_resolution(tmp_path, teacher_ckpt):
    trainer = RetrainTrainer(make_cfg(tmp_path, teacher=teacher_ckpt, teacher_size=48, max_steps=1))
    seen = []
    trainer.teacher.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape[-2:])))
    result = trainer.fit()
    assert result["step"] == 1 and seen == [(48, 48)]


def test_online_distillation_trains_teacher(tmp_path):
    trainer = RetrainTrainer(make_cfg(tmp_path, teacher="timm:test_resnet", kd_online=True, max_steps=2))
    before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    trainer.fit()
    after = trainer.teacher.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert load_checkpoint(tmp_path / "retrain" / trainer.arch_id / "last.pt")["teacher"] is not None


def test_margin_softmax_m0_s1_is_cosine_ce():
    torch.manual_seed(0)
    head = Head(12, 5, cosine=True, scale=1.0)
    f, y = torch.randn(7, 12), torch.randint(0, 5, (7,))
    plain = F.cross_entropy(F.normalize(f, dim=1) @ F.normalize(head.fc.weight, dim=1).T, y)
    loss, _ = RetrainLoss(am_scale=1.0, am_margin=0.0)(head(f), y)
    assert torch.allclose(loss, plain, atol=1e-6)
    # a margin makes the target harder, a scale sharpens: both change the loss
    harder, _ = RetrainLoss(am_scale=1.0, am_margin=0.3)(head(f), y)
    assert harder > loss
    head5 = Head(12, 5, cosine=True, scale=5.0)
    head5.load_state_dict(head.state_dict())
    assert torch.allclose(head5(f), 5 * head(f), atol=1e-6)


def test_lanet_per_stage_lists_and_bad_inputs(tmp_path):
    codes = [list(LANET), list(LANET), [0] * 14 + list(LANET[14:])]
    per_stage = ";".join(",".join(map(str, c)) for c in codes)
    spec, arch_id = resolve_spec(make_cfg(tmp_path, lanet=per_stage))
    assert spec["options"]["per_stage"] and len(spec["arch"]["normal"]) == 3 * 14
    assert {op for _, op in spec["arch"]["normal"][28:]} == {"sep_conv_3x3"}  # stage 3's cell is its own list
    with pytest.raises(ArchError, match="multiple of 4"):
        resolve_spec(make_cfg(tmp_path, lanet="1,2,3"))
    with pytest.raises(ArchError, match="not valid JSON"):
        resolve_spec(make_cfg(tmp_path, arch="{normal: oops"))
    with pytest.raises(UserError, match="only one of"):
        make_cfg(tmp_path, arch="{}", model="timm:resnet18")
    topk = tmp_path / "topk.json"
    topk.write_text(json.dumps([{"rank": 0, "arch": json.loads(tiny_mbconv_arch())}]))
    spec, arch_id = resolve_spec(make_cfg(tmp_path, arch_file=str(topk), space_opts=TINY_MB))
    assert arch_id.startswith("r0-mbconv-") and spec["source"] == "space"
    with pytest.raises(UserError, match="--rank 3"):
        resolve_spec(make_cfg(tmp_path, arch_file=str(topk), rank=3))
    # search writes the space and its macro options into each entry; --rank R picks entry R
    other = dict(json.loads(tiny_mbconv_arch()))
    entries = [{"rank": 0, "arch": json.loads(tiny_mbconv_arch())}, {"rank": 1, "arch": other}]
    for e in entries:
        e.update(space="mbconv", space_opts=TINY_MB)
    topk.write_text(json.dumps(entries))
    spec, arch_id = resolve_spec(make_cfg(tmp_path, arch_file=str(topk), rank=1))
    assert arch_id.startswith("r1-mbconv-")
    assert spec["options"]["stem"] == "cifar" and spec["options"]["width_mult"] == 0.25  # from the file, not defaults


def test_bf16_and_nan_guard(tmp_path, monkeypatch):
    cfg = dict(arch=tiny_mbconv_arch(), space_opts=TINY_MB, amp="bf16", max_steps=1)
    assert RetrainTrainer(make_cfg(tmp_path / "ok", **cfg)).fit()["step"] == 1  # bf16 autocast runs on the CPU

    def nan_loss(*args, **kw):
        return torch.tensor(float("nan"), requires_grad=True), {}

    trainer = RetrainTrainer(make_cfg(tmp_path / "stop", **cfg))
    monkeypatch.setattr(trainer, "criterion", nan_loss)
    with pytest.raises(UserError, match="non-finite loss"):
        trainer.fit()
    trainer = RetrainTrainer(make_cfg(tmp_path / "skip", nan_policy="skip", **cfg))
    before = {k: v.clone() for k, v in trainer.net.named_parameters()}
    monkeypatch.setattr(trainer, "criterion", nan_loss)
    assert trainer.fit()["step"] == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.net.named_parameters())  # the update was skipped


def test_drop_path_ramps_in_project_and_timm_nets():
    import timm

    from retrain.heads import DropPathSchedule

    space = make_space("mbconv", **TINY_MB, drop_path=0.3)
    net = space.build(space.smallest(), 10)
    ramp = DropPathSchedule(net)  # the space's drop_path is the final value
    ramp.set(0.5)
    assert net.drop_path_prob == pytest.approx(0.15)
    resnet = timm.create_model("test_resnet", num_classes=10, drop_path_rate=0.2)
    ramp = DropPathSchedule(resnet)
    ramp.set(0.0)
    assert ramp.active and all(m.drop_prob == 0 for m, _ in ramp.timm_paths)
    ramp.set(1.0)
    assert max(m.drop_prob for m, _ in ramp.timm_paths) == pytest.approx(0.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_on_cuda_counts_the_batch_on_the_device():
    from contextlib import nullcontext

    from retrain.evaluate import evaluate

    model = torch.nn.Linear(8, 10).cuda()
    x, y = torch.randn(32, 8, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    out = evaluate(model, [(x, y)], nullcontext)
    with torch.no_grad():
        top1 = (model(x).argmax(1) == y).float().mean().item() * 100
    assert out["top1"] == pytest.approx(top1)
