"""Lazily decoded image folders: the same labels, splits, pixels and batches as the eager path."""

from __future__ import annotations

import logging
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import TRAIN_AUGMENT, TensorLoader, load_data
from core.data.lazy import LazyImages
from core.errors import UserError

CLASSES = ("ants", "bees", "wasps")


def _write_tree(root, *, mixed=True, train=12, val=4):
    """3 classes of random PNG/JPEG images, of different (non-square) sizes when `mixed`."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(20, 48, 2) if mixed else (20, 20)
                img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
                img.save(d / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("LANAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LANAS_EAGER_MAX_GB", raising=False)
    return _write_tree(tmp_path / "ds")


def _both(root, monkeypatch, **kw):
    """(eager, lazy) `load_data` of the same tree: the limit large, then tiny."""
    monkeypatch.setenv("LANAS_EAGER_MAX_GB", "1000")
    eager = load_data("imagefolder", str(root), **kw)
    monkeypatch.setenv("LANAS_EAGER_MAX_GB", "1e-9")
    lazy = load_data("imagefolder", str(root), **kw)
    return eager, lazy


def _assert_same(eager, lazy):
    assert isinstance(lazy.train.images, LazyImages) and isinstance(lazy.test.images, LazyImages)
    assert isinstance(eager.train.images, torch.Tensor)
    assert lazy.classes == eager.classes and (lazy.mean, lazy.std) == (eager.mean, eager.std)
    assert lazy.image_size == eager.image_size
    for part in ("train", "search", "test"):
        a, b = getattr(eager, part), getattr(lazy, part)
        assert torch.equal(a.labels, b.labels) and len(a) == len(b)
        assert tuple(a.images.shape) == tuple(b.images.shape)
        idx = torch.tensor([0, len(a) - 1, 3, 1, 3]) % len(a)
        assert torch.equal(a.images[idx], b.images[idx])
        assert b.images[idx].dtype == torch.uint8
    assert torch.equal(eager.train.images[2:9], lazy.train.images[2:9])
    assert torch.equal(eager.train.images[5], lazy.train.images[5])
    assert torch.equal(eager.test.images, lazy.test.images[:])


def test_small_tree_stays_eager(tree):
    d = load_data("imagefolder", str(tree), image_size=32, search_size=6)
    assert isinstance(d.train.images, torch.Tensor) and d.train.images.shape == (30, 3, 32, 32)


def test_lazy_matches_eager(tree, monkeypatch, caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="core.data.datasets"):
        eager, lazy = _both(tree, monkeypatch, image_size=32, search_size=6)
    _assert_same(eager, lazy)
    assert len(lazy.train) == 30 and len(lazy.search) == 6 and len(lazy.test) == 12
    lines = [r.getMessage() for r in caplog.records if "decoded per batch" in r.getMessage()]
    assert len(lines) == 1 and "LANAS_EAGER_MAX_GB" in lines[0]
    # the lazy path writes no cache: only the eager run's file is there
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_lazy_zip_threads_and_views(tree, monkeypatch, tmp_path):
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(tree.rglob("*.*")):
            z.write(f, "imgs/" + str(f.relative_to(tree)))
    eager, lazy = _both(archive, monkeypatch, image_size=24, search_size=5)
    _assert_same(eager, lazy)
    store = lazy.train.images
    store.source.threads = 4  # several threads, each with its own zip handle
    assert torch.equal(store[torch.arange(len(store))], eager.train.images)
    # what retrain does with the search split, and a subset of a subset
    cat = torch.cat([lazy.train.images, lazy.search.images])
    assert isinstance(cat, LazyImages) and len(cat) == 36
    assert torch.equal(cat[torch.arange(36)], torch.cat([eager.train.images, eager.search.images]))
    sub = lazy.train.subset(torch.tensor([4, 1, 7])).subset(torch.tensor([2, 0]))
    assert torch.equal(sub.images[torch.arange(2)], eager.train.images[torch.tensor([7, 4])])
    assert torch.equal(sub.labels, eager.train.labels[torch.tensor([7, 4])])
    assert store.to("cpu").device == torch.device("cpu") and len(store.to("cpu")) == len(store)
    with pytest.raises(TypeError, match="lazily decoded"):
        torch.stack([store, store])
    again = pickle.loads(pickle.dumps(store))
    assert torch.equal(again[torch.tensor([0, 9])], eager.train.images[torch.tensor([0, 9])])


def test_loader_batches_identical(tree, monkeypatch):
    eager, lazy = _both(tree, monkeypatch, image_size=32, search_size=6)
    kw = dict(mean=eager.mean, std=eager.std, shuffle=True, augment=TRAIN_AUGMENT, seed=7, drop_last=True)
    a, b = TensorLoader(eager.train, 8, **kw), TensorLoader(lazy.train, 8, **kw)
    a.set_epoch(1)
    b.set_epoch(1)
    batches = list(b)
    assert len(batches) == len(a) == 3
    for (xa, ya), (xb, yb) in zip(a, batches):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(
        TensorLoader(eager.search, 4, **kw).iter_from(1), TensorLoader(lazy.search, 4, **kw).iter_from(1)
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_lazy_batches_are_decoded_one_ahead_in_a_thread(tree, monkeypatch):
    import threading

    from retrain.augment import AugmentLoader, AugmentOptions

    eager, lazy = _both(tree, monkeypatch, image_size=32, search_size=6)
    threads = []
    decode = LazyImages.__getitem__

    def spy(self, key):
        threads.append(threading.current_thread().name)
        return decode(self, key)

    monkeypatch.setattr(LazyImages, "__getitem__", spy)
    kw = dict(mean=eager.mean, std=eager.std, shuffle=True, augment=TRAIN_AUGMENT, seed=3)
    b = TensorLoader(lazy.train, 8, **kw)
    first = next(iter(b))  # a generator closed early shuts its prefetch thread down cleanly
    assert threads and all(name.startswith("prefetch") for name in threads)
    again = list(b.iter_from(0))
    assert torch.equal(first[0], again[0][0])
    for (xa, ya), (xb, yb) in zip(TensorLoader(eager.train, 8, **kw), again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    opts = AugmentOptions(crop_padding=4, flip=True, cutout=8, policy="randaugment")
    aug = dict(mean=eager.mean, std=eager.std, shuffle=True, seed=3, options=opts, num_classes=3)
    for (xa, ya), (xb, yb) in zip(AugmentLoader(eager.train, 8, **aug), AugmentLoader(lazy.train, 8, **aug)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_size_zero_from_first_image(tmp_path, monkeypatch):
    monkeypatch.setenv("LANAS_CACHE", str(tmp_path / "cache"))
    same = _write_tree(tmp_path / "same", mixed=False, train=4, val=2)
    eager, lazy = _both(same, monkeypatch, search_size=2)
    _assert_same(eager, lazy)
    assert lazy.image_size == 20
    mixed = _write_tree(tmp_path / "mixed", train=4, val=2)
    d = load_data("imagefolder", str(mixed), search_size=2)  # still tiny limit: lazy, nothing decoded yet
    with pytest.raises(UserError, match=r"train/\w+/\d+\.\w+ .* like the first training image.*--image-size"):
        d.train.images[torch.arange(len(d.train))]


def test_corrupt_image_is_a_user_error(tree, monkeypatch):
    bad = tree / "train" / "bees" / "05b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    monkeypatch.setenv("LANAS_EAGER_MAX_GB", "1e-9")
    d = load_data("imagefolder", str(tree), image_size=16, search_size=3)  # listing only: loads fine
    d.train.images.source.threads = 3
    with pytest.raises(UserError, match=r"cannot decode image train/bees/05b\.png .*replace or delete") as err:
        d.train.images[torch.arange(len(d.train))]
    assert "\n" not in str(err.value)
    bad.unlink()
    with pytest.raises(UserError, match=r"cannot read image train/bees/05b\.png"):
        d.train.images[torch.arange(len(d.train))]
    monkeypatch.setenv("LANAS_EAGER_MAX_GB", "lots")
    with pytest.raises(UserError, match="LANAS_EAGER_MAX_GB"):
        load_data("imagefolder", str(tree), image_size=16, search_size=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_on_gpu_gets_gpu_batches(tree, monkeypatch):
    eager, lazy = _both(tree, monkeypatch, image_size=32, search_size=6)
    kw = dict(mean=eager.mean, std=eager.std, shuffle=True, augment=TRAIN_AUGMENT, seed=7, device="cuda")
    for (xa, ya), (xb, yb) in zip(TensorLoader(eager.train, 8, **kw), TensorLoader(lazy.train, 8, **kw)):
        assert xb.is_cuda and torch.equal(xa, xb) and torch.equal(ya, yb)
