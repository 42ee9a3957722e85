"""Datasets: every kind loads real images; the search split is disjoint and reproducible."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import TRAIN_AUGMENT, Augment, TensorLoader, carve_search_split, load_data
from core.data.loader import augment_batch
from core.errors import UserError
from tests.conftest import CIFAR_ZIP


def test_mini_is_balanced_real_cifar(mini_data):
    assert mini_data.classes[0] == "airplane" and mini_data.num_classes == 10
    assert len(mini_data.train) + len(mini_data.search) == 5000 and len(mini_data.test) == 1000
    counts = torch.bincount(mini_data.test.labels, minlength=10)
    assert (counts == 100).all()
    assert mini_data.train.images.dtype == torch.uint8 and mini_data.image_size == 32
    # real photos: per-channel means near the CIFAR-10 statistics, not noise or constants
    mean = mini_data.train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.49, 0.48, 0.45]), atol=0.03)


def test_search_split_disjoint_and_reproducible(mini_data):
    from core.data import ImageSet

    n = 300
    tagged = ImageSet(torch.arange(n).view(n, 1, 1, 1).expand(n, 3, 1, 1).to(torch.int64), torch.arange(n))
    train_a, search_a = carve_search_split(tagged, 50, seed=3)
    train_b, search_b = carve_search_split(tagged, 50, seed=3)
    _, search_c = carve_search_split(tagged, 50, seed=4)
    assert torch.equal(search_a.labels, search_b.labels) and torch.equal(train_a.labels, train_b.labels)
    assert not torch.equal(search_a.labels, search_c.labels)
    assert set(search_a.labels.tolist()).isdisjoint(train_a.labels.tolist())
    assert len(search_a) + len(train_a) == n
    # the real split too: no search image equals a training image index-wise
    assert len(mini_data.search) == 1000


def _write_folder(root, size=8, per_class=3, classes=("cats", "dogs")):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_imagefolder_written_by_test(tmp_path, monkeypatch):
    monkeypatch.setenv("LANAS_CACHE", str(tmp_path / "cache"))
    _write_folder(tmp_path / "ds")
    d = load_data("imagefolder", str(tmp_path / "ds"), search_size=2, num_classes=2)
    assert d.classes == ["cats", "dogs"] and len(d.train) == 4 and len(d.search) == 2 and len(d.test) == 6
    resized = load_data("imagefolder", str(tmp_path / "ds"), search_size=2, image_size=4)
    assert resized.train.images.shape[-2:] == (4, 4)
    with pytest.raises(UserError, match="does not match the 2 classes"):
        load_data("imagefolder", str(tmp_path / "ds"), search_size=2, num_classes=10)


def test_imagefolder_missing_and_malformed(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_data("imagefolder", str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="train/<class>"):
        load_data("imagefolder", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="not found at"):
        load_data("cifar10", str(tmp_path))
    with pytest.raises(UserError, match="unknown dataset"):
        load_data("mnist")


@pytest.mark.skipif(not CIFAR_ZIP.exists(), reason="../shared/data/cifar10-jpeg.zip not present")
def test_shared_zip_loads_as_imagefolder():
    d = load_data("imagefolder", str(CIFAR_ZIP), search_size=5000)
    assert d.num_classes == 10 and len(d.train) == 45000 and len(d.test) == 10000


def test_loader_deterministic_and_resumable(mini_data):
    kw = dict(mean=mini_data.mean, std=mini_data.std, shuffle=True, augment=TRAIN_AUGMENT, seed=7)
    a = TensorLoader(mini_data.train, 64, **kw)
    b = TensorLoader(mini_data.train, 64, **kw)
    a.set_epoch(2)
    b.set_epoch(2)
    batches = list(a)
    resumed = list(b.iter_from(5))
    assert len(batches) == len(a) and len(resumed) == len(a) - 5
    for (xa, ya), (xb, yb) in zip(batches[5:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(3)
    assert not torch.equal(next(iter(b))[1], batches[0][1])


def test_augment_batch_geometry():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, Augment(cutout=2), g)
    assert ((out == 0).sum(dim=(2, 3)) <= 4).all() and (out == 0).any()
    out = augment_batch(x, Augment(crop_padding=2), torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    # every output pixel is either padding (0) or a value of the same image and channel
    for i in range(2):
        for c in range(3):
            assert set(out[i, c].unique().tolist()) <= set(x[i, c].unique().tolist()) | {0.0}
    flipped = augment_batch(x, Augment(flip=True), torch.Generator().manual_seed(2))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))


def test_corrupt_image_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LANAS_CACHE", str(tmp_path / "cache"))
    _write_folder(tmp_path / "ds", per_class=1)
    (tmp_path / "ds" / "train" / "cats" / "bad.png").write_bytes(b"not an image" + io.BytesIO(b"x").read())
    with pytest.raises(UserError, match="cannot decode"):
        load_data("imagefolder", str(tmp_path / "ds"), search_size=1)
