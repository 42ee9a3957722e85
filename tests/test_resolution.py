"""Resolution is real end to end: an MBConv architecture at R px sees R-px inputs in every stage.

The data is loaded at 24 px (`--image-size 24`); the architecture names 32 px. The supernet step
(per-batch crops from the workers), search scoring (split decoded at 32 px), retraining, test
evaluation and export must all feed it 32x32 inputs. A stage that fed the data's 24 px would fail.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench.photos import make_photo_folder
from core.errors import UserError
from retrain.config import ExportConfig, RetrainConfig
from retrain.export import main as export_main
from retrain.train import RetrainTrainer
from search.evaluators.supernet import SupernetEvaluator
from supernet.config import SupernetConfig
from supernet.spaces.base import make_space
from supernet.train import SupernetTrainer

SPACE = {"stem": "cifar", "resolutions": [24, 32], "depths": [1], "kernels": [3], "expands": [3], "width_mult": 0.25}
DATA = dict(dataset="imagefolder", loader="workers", workers=1, image_size=24, search_size=4, quiet=True, seed=0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return str(make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=8, classes=2, val_per_class=2))


class Sizes:
    """Records (the resolution the arch names, the input size its stem gets) for every forward."""

    def __init__(self, net: torch.nn.Module, fixed: int = 0) -> None:
        self.seen: list[tuple[int, int]] = []
        self.arch_res = fixed
        if not fixed:
            net.register_forward_pre_hook(self._arch, with_kwargs=True)
        net.stem.register_forward_pre_hook(lambda _, args: self.seen.append((self.arch_res, args[0].shape[-1])))

    def _arch(self, _: object, args: tuple, kwargs: dict) -> None:
        arch = args[1] if len(args) > 1 else kwargs.get("arch")
        self.arch_res = arch.resolution


def test_an_architecture_sees_its_own_resolution_everywhere(photos, tmp_path):
    space = make_space("mbconv", **SPACE)
    # supernet: largest (32 px) and smallest (24 px) every step (sandwich), per-batch crops in the workers
    cfg = SupernetConfig(run_dir=str(tmp_path), data_dir=photos, space="mbconv", space_opts=SPACE, epochs=1,
                         batch_size=4, strategy="sandwich", sandwich_k=0, recal_images=4, panel_random=0,
                         checkpoint_minutes=0, **DATA)  # fmt: skip
    trainer = SupernetTrainer(cfg)
    sizes = Sizes(trainer.net)
    given = []  # (resolution the arch names, size of the batch the supernet is called with)
    trainer.net.register_forward_pre_hook(lambda _, args: given.append((args[1].resolution, args[0].shape[-1])))
    assert [trainer.step_resolution(s) for s in range(2)] == [(32, 24), (32, 24)]
    trainer.fit()
    assert {r for r, _ in sizes.seen} == {24, 32}
    assert all(r == got for r, got in sizes.seen), sizes.seen
    assert {r for r, _ in given} == {24, 32} and all(r == got for r, got in given), given  # crops, no interpolation

    # search scoring: each candidate on the search split decoded at its resolution
    evaluator = SupernetEvaluator(space, tmp_path / "supernet" / "last.pt", device="cpu", recal_images=4,
                                  loader="workers", workers=1)  # fmt: skip
    sizes = Sizes(evaluator.net)
    for arch in (space.largest(), space.smallest()):
        evaluator.score(arch)
    assert {r for r, _ in sizes.seen} == {24, 32} and all(r == got for r, got in sizes.seen), sizes.seen

    # retrain and test evaluation at 32 px, and the export's input is 32 px
    arch = json.dumps(space.to_json(space.largest()))
    rcfg = RetrainConfig(run_dir=str(tmp_path), data_dir=photos, arch=arch, space="mbconv", space_opts=SPACE,
                         epochs=1, batch_size=4, eval_batch_size=4, checkpoint_minutes=0, **DATA)  # fmt: skip
    retrain = RetrainTrainer(rcfg)
    sizes = Sizes(retrain.net, fixed=32)
    out = retrain.fit()
    assert sizes.seen and all(got == 32 for _, got in sizes.seen), sizes.seen
    exported = export_main(ExportConfig(run_dir=str(tmp_path), formats=["torchscript"], quiet=True))
    info = json.loads((tmp_path / "retrain" / retrain.arch_id / "export" / "arch.json").read_text())
    assert info["input"]["shape"][2:] == [32, 32], (out, exported)


def test_in_memory_data_is_resized_to_the_architecture(tmp_path):
    """The embedded 32-px set: a 40-px MBConv subnet gets 40-px inputs in the supernet and the retrain."""
    opts = {**SPACE, "resolutions": [32, 40]}
    space = make_space("mbconv", **opts)
    net = space.supernet(10)
    sizes = Sizes(net)
    net(torch.zeros(2, 3, 32, 32), space.largest())
    assert sizes.seen == [(40, 40)]
    arch = json.dumps(space.to_json(space.largest()))
    rcfg = RetrainConfig(run_dir=str(tmp_path), arch=arch, space="mbconv", space_opts=opts, epochs=1, batch_size=8,
                         train_images=16, test_images=8, eval_batch_size=8, search_size=100, quiet=True,
                         checkpoint_minutes=0)  # fmt: skip
    retrain = RetrainTrainer(rcfg)
    sizes = Sizes(retrain.net, fixed=40)
    retrain.fit()
    assert sizes.seen and all(got == 40 for _, got in sizes.seen), sizes.seen


def test_the_train_evaluator_trains_and_scores_each_architecture_at_its_resolution(photos, tmp_path, monkeypatch):
    """Train-from-scratch search on an image folder: worker crops at the arch's resolution, search split
    decoded once per resolution."""
    import search.evaluators.train as train_eval
    from search.config import SearchConfig

    space = make_space("mbconv", **SPACE)
    cfg = SearchConfig(run_dir=str(tmp_path), data_dir=photos, space="mbconv", space_opts=SPACE, evaluator="train",
                       train_epochs=1, train_batch_size=4, device="cpu", **DATA)  # fmt: skip
    evaluator = train_eval.TrainingEvaluator(space, cfg)
    assert evaluator.data.train.on_workers
    built, decoded = [], []
    real_build, real_decode = space.build, train_eval.decode_split

    def build(arch, num_classes):
        net = real_build(arch, num_classes)
        built.append(Sizes(net, fixed=arch.resolution))
        return net

    monkeypatch.setattr(space, "build", build)
    monkeypatch.setattr(train_eval, "decode_split", lambda *a, **k: decoded.append(a[1]) or real_decode(*a, **k))
    big, small = space.largest(), space.smallest()
    results = evaluator.evaluate([big, small])
    assert [b.seen[0][0] for b in built] == [32, 24]
    assert all(r == got for b in built for r, got in b.seen), [b.seen for b in built]
    assert sorted(decoded) == [24, 32]  # once per resolution
    assert all(r["train_images_per_s"] > 0 and 0 <= r["data_wait"] <= 1 for r in results), results


def test_worker_path_supernet_killed_mid_epoch_resumes_to_identical_weights(photos, tmp_path):
    """Image folder, DataLoader worker, per-batch resolution: killed after step 2 of 3 in the first epoch,
    resumed, it ends where an uninterrupted run ends; another seed ends elsewhere (the check can fail)."""
    from core.checkpoint import load_checkpoint

    def cfg(run, **kw):
        base = dict(run_dir=str(tmp_path / run), data_dir=photos, space="mbconv", space_opts=SPACE, epochs=2,
                    batch_size=4, strategy="sandwich", sandwich_k=1, recal_images=4, panel_random=0,
                    checkpoint_minutes=0, **DATA)  # fmt: skip
        return SupernetConfig(**{**base, **kw})

    full = SupernetTrainer(cfg("a")).fit()
    killed = SupernetTrainer(cfg("b", max_steps=2)).fit()
    resumed = SupernetTrainer(cfg("b", resume="auto")).fit()
    assert killed["step"] == 2 and full["step"] == resumed["step"] > 3  # killed mid-epoch (3 batches an epoch)
    SupernetTrainer(cfg("c", seed=1)).fit()
    a, b, c = (load_checkpoint(tmp_path / r / "supernet" / "last.pt")["model"] for r in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_gradnorm_reads_an_image_folder_and_feeds_each_architecture_its_resolution(photos, tmp_path):
    from search.config import SearchConfig
    from search.evaluators.gradnorm import GradNorm

    space = make_space("mbconv", **SPACE)
    cfg = SearchConfig(run_dir=str(tmp_path), data_dir=photos, space="mbconv", space_opts=SPACE, device="cpu", **DATA)
    proxy = GradNorm(space, cfg, reps=2, batch_size=4)
    assert len(proxy.batches) == 2 and proxy.batches[0][0].shape == (4, 3, 24, 24)
    seen = []
    real_build = space.build

    def build(arch, num_classes):
        net = real_build(arch, num_classes)
        seen.append(Sizes(net, fixed=arch.resolution))
        return net

    space.build = build
    scores = [proxy(space.largest()), proxy(space.smallest())]
    assert all(math.isfinite(v) for v in scores) and scores[0] != scores[1]
    assert {r for s in seen for r, _ in s.seen} == {24, 32} and all(r == got for s in seen for r, got in s.seen)

    with pytest.raises(UserError, match="gradnorm needs a batch of 64"):  # 12 training images
        GradNorm(space, cfg, reps=2, batch_size=64)


def test_a_batch_of_only_bad_files_keeps_the_steps_and_their_resolutions_aligned(photos, tmp_path, monkeypatch):
    """Every file of the second batch undecodable: that step is skipped, not shifted, so each later
    step still gets the crops at its own subnets' resolutions, and the run ends at its step count."""
    from core.data import folder

    real, calls = folder._collate, [0]

    def second_all_bad(items):
        calls[0] += 1
        if calls[0] == 2:
            items = [("cannot decode image x: a test", y) for _, y in items]
        return real(items)

    monkeypatch.setattr(folder, "_collate", second_all_bad)
    cfg = SupernetConfig(run_dir=str(tmp_path), data_dir=photos, space="mbconv", space_opts=SPACE, epochs=1,
                         batch_size=4, strategy="sandwich", sandwich_k=1, recal_images=4, panel_random=0,
                         checkpoint_minutes=0, **DATA)  # fmt: skip
    trainer = SupernetTrainer(cfg)
    given = []
    trainer.net.register_forward_pre_hook(lambda _, args: given.append((args[1].resolution, args[0].shape[-1])))
    trainer.fit()
    assert trainer.step == trainer.total_steps == 3  # 12 training images, batch 4: 3 steps, one skipped
    assert given and all(r == got for r, got in given), given
    metrics = [json.loads(line) for line in (tmp_path / "supernet" / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_images"] for m in metrics if "skipped_images" in m] == [4]


def test_a_batch_of_only_bad_files_is_its_step_on_a_space_without_resolutions(photos, tmp_path, monkeypatch):
    """The same on the cell space (no per-batch resolution): the bad batch is counted as its step, so
    the epoch is not gone over again (its tail trained twice, or forever where every batch is bad)."""
    from core.data import folder

    real, calls = folder._collate, [0]

    def second_all_bad(items):
        calls[0] += 1
        if calls[0] == 2:
            items = [("cannot decode image x: a test", y) for _, y in items]
        return real(items)

    monkeypatch.setattr(folder, "_collate", second_all_bad)
    opts = {"ops": "lanas", "nodes": 2, "channels": 4, "blocks": [1, 1]}
    cfg = SupernetConfig(run_dir=str(tmp_path), data_dir=photos, space="nasnet", space_opts=opts, epochs=1,
                         batch_size=4, recal_images=4, panel_random=0, checkpoint_minutes=0, **DATA)  # fmt: skip
    trainer = SupernetTrainer(cfg)
    forwards = []
    trainer.net.register_forward_pre_hook(lambda _, args: forwards.append(args[0].shape[0]))
    trainer.fit()
    assert trainer.step == trainer.total_steps == 3
    assert forwards[:2] == [4, 4] and len([n for n in forwards if n == 4]) == 2, forwards  # two good batches, once
