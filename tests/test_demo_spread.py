"""bench/demo_spread.py and bench/demo_vs_random.py: cost-matched sampling, variance split, seed statistics."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import demo_spread, demo_vs_random
from core.errors import UserError
from supernet.spaces.base import make_space

ROOT = Path(__file__).resolve().parents[1]


def test_sampled_architectures_are_distinct_and_of_the_target_cost():
    space = make_space("nasnet", ops="lanas", nodes=4, channels=8, blocks=[1, 1, 1])
    archs = demo_spread.sample_same_flops(space, 9.0, 6, seed=0)
    assert len({space.to_str(space.canonical(a)) for a in archs}) == 6
    assert all(abs(space.cost(a).mflops - 9.0) <= 0.9 for a in archs)
    assert [space.to_str(a) for a in demo_spread.sample_same_flops(space, 9.0, 6, seed=0)] == [
        space.to_str(a) for a in archs
    ]
    with pytest.raises(UserError, match="pick another target"):
        demo_spread.sample_same_flops(space, 1000.0, 2, seed=0)


def test_variance_components_recover_the_architecture_and_seed_spread():
    rng = np.random.default_rng(0)
    arch_effect = rng.normal(0, 2.0, size=(400, 1))
    acc = 50 + arch_effect + rng.normal(0, 1.0, size=(400, 3))
    comp = demo_spread.variance_components(acc)
    assert comp["arch_sd"] == pytest.approx(2.0, abs=0.2)
    assert comp["seed_sd"] == pytest.approx(1.0, abs=0.1)
    assert comp["df"] == (399, 800)
    # no architecture effect at all: the estimate stays near zero and F near one
    flat = demo_spread.variance_components(50 + rng.normal(0, 1.0, size=(400, 3)))
    assert flat["arch_sd"] < 0.3 and 0.8 < flat["f"] < 1.25


def test_expected_maximum_of_normals():
    assert demo_spread.expected_max(1) == pytest.approx(0.0, abs=0.01)
    assert demo_spread.expected_max(30) == pytest.approx(2.04, abs=0.02)


def test_paired_summary_of_seeds():
    s = demo_vs_random.paired_summary(np.array([1.0, 2.0, 3.0]))
    assert s["mean"] == 2.0 and s["se"] == pytest.approx(1 / np.sqrt(3)) and s["t"] == pytest.approx(2 * np.sqrt(3))
    assert s["p_one_sided"] == pytest.approx(1 / 8)  # only the all-positive sign pattern is as large
    mixed = demo_vs_random.paired_summary(np.array([2.0, -2.0, 0.0, 1.0]))
    assert (mixed["wins"], mixed["ties"], mixed["losses"]) == (2, 1, 1)
    assert 0.25 < mixed["p_one_sided"] < 0.75


def test_demo_vs_random_reads_run_directories(tmp_path, capsys):
    for seed, (found, rand) in enumerate([(50.0, 47.0), (48.0, 49.0)]):
        for arch_id, acc in (("top1", found), ("baseline-random", rand)):
            out = tmp_path / f"s{seed}" / "retrain" / arch_id
            out.mkdir(parents=True)
            (out / "report.json").write_text(json.dumps({"final": {"test_top1": acc}}))
    runs = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    assert demo_vs_random.main([*runs, "--json", str(tmp_path / "seeds.json")]) == 0
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["summary"]["mean"] == pytest.approx(1.0) and saved["found_mean"] == pytest.approx(49.0)
    assert "ahead in 1, level in 0, behind in 1" in capsys.readouterr().out
    assert demo_vs_random.main([str(tmp_path / "missing")]) == 2
    assert "has the pipeline" in capsys.readouterr().err


def _tree_zip(path, top, train, test):
    """A zip `top/{train,test}/<class>/<name>` from {class: [(name, bytes)]} for each split."""
    with zipfile.ZipFile(path, "w") as z:
        for split, files in (("train", train), ("test", test)):
            for cls, items in files.items():
                for name, data in items:
                    z.writestr(f"{top}/{split}/{cls}/{name}", data)
    return path


def _mini_files(split, per_class):
    from core.data.datasets import MINI_ZIP

    with zipfile.ZipFile(MINI_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg") and f"/{split}/" in n)
        out = {}
        for n in names:
            cls = n.split("/")[2]
            if len(out.setdefault(cls, [])) < per_class:
                out[cls].append((n.rsplit("/", 1)[1], z.read(n)))
    return out


def test_heldout_images_are_the_test_files_the_embedded_set_lacks(tmp_path, capsys):
    from core.data.datasets import test_images_not_in
    from core.data.decode import decode_image

    mini_test, mini_train = _mini_files("test", 2), _mini_files("train", 3)
    # the "full" test split: 2 embedded test images per class (left out) and 3 other ones (kept)
    mixed = {cls: mini_test[cls] + [("x" + n, b) for n, b in mini_train[cls]] for cls in mini_test}
    source = _tree_zip(tmp_path / "full.zip", "cifar10", mini_train, mixed)
    held = test_images_not_in(source)
    assert len(held) == 30 and held.labels.tolist() == [c for c in range(10) for _ in range(3)]
    first = decode_image(mini_train["airplane"][0][1], "a", 0)
    assert torch.equal(held.images[0], torch.tensor(first).permute(2, 0, 1))
    with pytest.raises(UserError, match="nothing held out"):
        test_images_not_in(_tree_zip(tmp_path / "same.zip", "c", mini_train, mini_test))
    fewer = {cls: v for cls, v in mini_train.items() if cls != "truck"}
    with pytest.raises(UserError, match="not the embedded set's"):
        test_images_not_in(_tree_zip(tmp_path / "nine.zip", "c", fewer, fewer))
    for arch_id in ("top1", "baseline-random"):
        (tmp_path / "run" / "retrain" / arch_id).mkdir(parents=True)
        (tmp_path / "run" / "retrain" / arch_id / "report.json").write_text('{"final": {"test_top1": 40.0}}')
    assert demo_vs_random.main([str(tmp_path / "run"), "--heldout", str(tmp_path / "absent.zip")]) == 2
    assert "absent.zip does not exist" in capsys.readouterr().err
