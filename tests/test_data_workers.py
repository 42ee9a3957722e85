"""The worker path (`core.data.folder`): DataLoader workers with timm transforms, on generated real-photo JPEGs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bench.photos import make_photo_folder
from core.data import load_data
from core.data.folder import FolderLoader, MultiRes, TransformOptions, decode_split
from core.errors import UserError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=6, classes=2, val_per_class=2)


def _data(root, **kw):
    return load_data("imagefolder", str(root), search_size=2, loader="workers", **kw)


def _loader(data, **kw):
    base = {"mean": MEAN, "std": STD, "seed": 3, "workers": 2, "timeout": 60}
    return FolderLoader(data, 4, **{**base, **kw})


def test_auto_picks_workers_for_photos_and_memory_for_the_embedded_set(photos, caplog):
    with caplog.at_level("INFO"):
        auto = load_data("imagefolder", str(photos), search_size=2, loader="auto")
    assert auto.train.on_workers and "DataLoader workers" in caplog.text
    assert auto.image_size == 224 and len(auto.train) == 10 and len(auto.test) == 4
    mini = load_data("cifar10-mini", search_size=500, loader="auto")
    assert not mini.train.on_workers and mini.train.images.dtype == torch.uint8


def test_train_and_eval_transform_shapes_and_dtypes(photos):
    data = _data(photos, image_size=64)
    train = _loader(data.train, train=True, transform=TransformOptions(policy="randaugment"), shuffle=True)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -3 < float(x.mean()) < 3  # normalised on the device, not 0-255
    raw = decode_split(data.test, 48, TransformOptions(crop_pct=0.875), workers=0)
    assert raw.images.shape == (4, 3, 48, 48) and raw.images.dtype == torch.uint8
    assert torch.equal(raw.labels, data.test.labels)


def test_same_first_batch_for_the_same_seed_with_two_workers_and_resume_mid_epoch(photos):
    data = _data(photos, image_size=32)
    kw = {"train": True, "shuffle": True, "drop_last": True}
    a = [x for x, _ in _loader(data.train, **kw)]
    b = [x for x, _ in _loader(data.train, **kw)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    one = _loader(data.train, workers=1, **kw)  # another worker count, started at batch 1: the same batch
    assert torch.equal(next(one.iter_from(1))[0], a[1])
    other = [x for x, _ in _loader(data.train, seed=4, **kw)]
    assert not torch.equal(a[0], other[0])  # the comparison can fail


def test_two_ranks_cover_an_epoch_exactly_once(photos):
    data = _data(photos, image_size=16)
    rows = data.train.subset(torch.arange(8))
    rows.labels = torch.arange(8)  # tag each image with its row, so the labels tell them apart
    seen = []
    for rank in (0, 1):
        loader = _loader(rows, shuffle=True, drop_last=True, shard=(rank, 2), workers=1)
        loader.set_epoch(1)
        seen += [int(v) for _, y in loader for v in y]
        loader.close()
    assert sorted(seen) == list(range(8))  # 4 each, none twice, none left out


def test_per_batch_resolution_reaches_the_crops(photos):
    data = _data(photos, image_size=32)
    loader = _loader(data.train, train=True, shuffle=True, drop_last=True)
    loader.resolution_of = lambda step: 24 if step % 2 else 40
    sizes = [x.shape[-1] for x, _ in loader]
    assert sizes == [40, 24]
    loader.set_epoch(1)
    assert [x.shape[-1] for x, _ in loader] == [40, 24]  # step = epoch * batches + batch


def test_a_step_at_several_resolutions_gets_one_view_cropped_at_each(photos):
    """A sandwich step whose subnets name 40 and 24 px: the workers crop each image's one random view
    at both sizes (no interpolation of a batch); each size is what a step at that size alone gets."""
    data = _data(photos, image_size=32)
    kw = {"train": True, "shuffle": True, "drop_last": True, "transform": TransformOptions(draft=False)}
    both = _loader(data.train, **kw)
    both.resolution_of = lambda step: (24, 40, 24)
    x, _ = next(iter(both))
    assert isinstance(x, MultiRes) and sorted(x) == [24, 40] and len(x) == 4
    assert x[40].shape == (4, 3, 40, 40) and x[24].shape == (4, 3, 24, 24)
    for size in (40, 24):
        alone = _loader(data.train, **kw)
        alone.resolution_of = lambda step, size=size: size
        assert torch.equal(next(iter(alone))[0], x[size]), size  # same crop box, flip and draws
    # the two sizes show the same view: the 40-px crops, downsized, are close to the 24-px ones
    small = torch.nn.functional.interpolate(x[40], size=(24, 24), mode="bilinear", antialias=True)
    other = _loader(data.train, **{**kw, "seed": 4})
    other.resolution_of = lambda step: 24
    assert (small - x[24]).abs().mean() < 0.5 * (small - next(iter(other))[0]).abs().mean()


def test_corrupt_truncated_and_empty_files_are_skipped_and_counted(photos, tmp_path, caplog):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(photos, root)
    files = sorted((root / "train").rglob("*.JPEG"))
    files[0].write_bytes(b"")
    files[1].write_bytes(files[1].read_bytes()[:300])  # truncated
    files[2].write_bytes(b"not a jpeg at all" * 10)
    data = load_data("imagefolder", str(root), search_size=1, loader="workers", image_size=16)
    loader = _loader(data.train.subset(torch.arange(len(data.train))), drop_last=False)
    with caplog.at_level("WARNING"):
        got = sum(len(y) for _, y in loader)
    assert loader.skipped == 3 and got == len(data.train) - 3
    assert "skipped" in caplog.text
    strict = _loader(data.train, strict=True)
    with pytest.raises(UserError, match="cannot decode image .*replace or delete"):
        list(strict)


def test_a_whole_batch_of_bad_files_on_one_rank_of_several_is_a_clear_error(photos, tmp_path):
    """Alone, a rank skips a batch of only bad files; one of several ranks cannot (the others would step
    and all-reduce without it), so it stops with a one-line error instead of desynchronising."""
    import shutil

    root = tmp_path / "allbad"
    shutil.copytree(photos, root)
    for f in (root / "train").rglob("*.JPEG"):
        f.write_bytes(b"")
    data = load_data("imagefolder", str(root), search_size=1, loader="workers", image_size=16)
    alone = _loader(data.train, train=True, shuffle=True, workers=0)
    assert sum(len(y) for _, y in alone) == 0 and alone.skipped == len(data.train)
    ranked = _loader(data.train, train=True, shuffle=True, workers=0, shard=(1, 2))
    with pytest.raises(UserError, match="every image of batch 0 on rank 1 of 2 was undecodable") as err:
        list(ranked)
    assert "\n" not in str(err.value)
    evaluation = _loader(data.train, workers=0, shard=(1, 2))  # no step, no collective: still skipped
    assert sum(len(y) for _, y in evaluation) == 0


def test_the_loader_leaves_the_global_torch_generator_alone(photos):
    """The DataLoader's base seed for its workers comes from its own generator: a run resumed mid-epoch
    (a fresh loader at another point of the global stream) draws its dropout masks as the uninterrupted one."""
    loader = _loader(_data(photos).train, train=True, shuffle=True, workers=1)
    state = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(state, torch.get_rng_state())


def test_empty_class_folder_is_a_one_line_error(photos, tmp_path):
    import shutil

    root = tmp_path / "empty"
    shutil.copytree(photos, root)
    (root / "train" / "zzz").mkdir()
    (root / "val" / "zzz").mkdir()
    with pytest.raises(UserError, match="holds no images") as err:
        _data(root)
    assert "\n" not in str(err.value)


def test_a_dead_worker_is_a_clear_error_not_a_hang(photos):
    import os
    import signal

    data = _data(photos, image_size=16)
    loader = _loader(data.train, workers=1, timeout=5)
    it = loader.iter_from(0)
    next(it)
    for w in loader.loader._iterator._workers:  # the worker process this test started
        os.kill(w.pid, signal.SIGKILL)
    with pytest.raises(UserError, match="data-loader worker"):
        for _ in it:
            pass


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("train", [True, False])
def test_reduced_size_jpeg_decoding_stays_close_to_the_full_decode(photos, train, monkeypatch):
    """`draft` decodes at 1/2-1/8 scale where the crop allows: same draws and size, pixels within 28 dB PSNR."""
    from core.data import folder

    scales = []
    real = folder._draft
    monkeypatch.setattr(folder, "_draft", lambda img, factor: scales.append(real(img, factor)) or scales[-1])
    opt = TransformOptions(crop_scale=(0.5, 1.0), draft_train=True) if train else TransformOptions()
    data = _data(photos)
    full = folder._Images(data.train.images, data.train.labels, train, dataclasses.replace(opt, draft=False), seed=0)
    fast = folder._Images(data.train.images, data.train.labels, train, opt, seed=0)
    psnr = []
    for i in range(len(data.train)):
        a, _ = full[i, 0, 96]
        b, _ = fast[i, 0, 96]
        assert a.shape == b.shape == (3, 96, 96) and a.dtype == b.dtype == torch.uint8
        psnr.append(_psnr(a, b))
    assert len(scales) == len(psnr)  # only the draft path asks
    assert sum(s > 1 for s in scales) >= len(psnr) // 2, f"reduced-size decoding should apply to most images: {scales}"
    assert min(psnr) >= 28.0 and sorted(psnr)[len(psnr) // 2] >= 32.0, psnr
    assert max(psnr) < 99.0  # the two paths did differ: the comparison can fail


def test_reduced_size_decoding_is_for_evaluation_unless_asked_for_training_too(photos, monkeypatch):
    """`--jpeg-draft eval` (default): evaluation resizes ask libjpeg for a reduced decode, training crops
    do not; `all`: both; `off`: neither."""
    from types import SimpleNamespace

    from core.data import folder

    data = _data(photos)
    asked = []
    real = folder._draft
    monkeypatch.setattr(folder, "_draft", lambda img, factor: asked.append(factor) or real(img, factor))
    for mode, expect in (("eval", (False, True)), ("all", (True, True)), ("off", (False, False))):
        opt = TransformOptions.from_config(SimpleNamespace(jpeg_draft=mode, crop_scale=(0.5, 1.0)))
        for train, want in zip((True, False), expect):
            asked.clear()
            images = folder._Images(data.train.images, data.train.labels, train, opt, seed=0)
            x, _ = images[0, 0, 96]
            assert x.shape == (3, 96, 96) and bool(asked) == want, (mode, train, asked)


def test_jpeg_draft_reads_its_former_boolean_spellings():
    """`jpeg_draft` was a boolean (true: the training crops too): old configs and YAML's bare off load."""
    import yaml

    from core.config import build_config
    from supernet.config import SupernetConfig

    for value, want in ((True, "all"), (False, "off"), ("eval", "eval"), ("all", "all")):
        assert build_config(SupernetConfig, {"jpeg_draft": value}).jpeg_draft == want, value
    assert build_config(SupernetConfig, yaml.safe_load("jpeg_draft: off")).jpeg_draft == "off"  # YAML: False
    assert SupernetConfig(jpeg_draft=False).jpeg_draft == "off"  # built in code
    with pytest.raises(UserError, match="eval, all"):
        build_config(SupernetConfig, {"jpeg_draft": "maybe"})
    with pytest.raises(UserError, match="eval, all"):
        SupernetConfig(jpeg_draft="maybe")


def test_on_a_cpu_device_the_workers_normalise_and_the_batches_are_the_same(photos):
    """CPU device: the workers normalise (the training process does not); the batches are identical to
    those normalised after the workers, and a split decoded for the search stays uint8."""
    data = _data(photos, image_size=32)
    kw = {"train": True, "shuffle": True, "drop_last": True}
    ours = _loader(data.train, **kw)
    assert ours.in_workers
    after = _loader(data.train, **kw)
    after.in_workers, after.loader.collate_fn = False, type(after.loader.collate_fn)()
    for (a, ya), (b, yb) in zip(ours, after):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b) and torch.equal(ya, yb)
    assert decode_split(data.test, 24, TransformOptions(), workers=1).images.dtype == torch.uint8
