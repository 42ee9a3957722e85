"""scripts/demo_spread.py: the random architectures match the cost, and the variance split is right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from supernet.spaces.base import make_space

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("demo_spread", ROOT / "scripts" / "demo_spread.py")
demo_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_spread)


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
