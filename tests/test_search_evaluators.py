"""Evaluators: table lookup (fixture and, where present, the real NAS-Bench-201 table) and user functions."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from search.config import SearchConfig
from search.evaluators import FunctionEvaluator, TableEvaluator, make_evaluator
from tests.toy_space import ToySpace

DATA = Path(__file__).parent / "data" / "nb201_tiny.csv"
REAL = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "nb201.csv"


def toy_table(tmp_path, space):
    path = tmp_path / "toy.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "score", "other"])
        for idx in np.ndindex(*(space.k,) * space.d):
            arch = tuple(int(i) for i in idx)
            w.writerow([space.to_str(arch), space.score(arch), -space.score(arch)])
    return path


def test_table_evaluator_on_a_toy_table(tmp_path):
    space = ToySpace(decisions=3, choices=3)
    path = toy_table(tmp_path, space)
    ev = TableEvaluator(space, str(path), "name", "score", "other")
    archs = [space.sample(np.random.default_rng(i)) for i in range(5)]
    out = ev.evaluate(archs)
    assert [r["metric"] for r in out] == pytest.approx([space.score(a) for a in archs])
    assert [r["report_metric"] for r in out] == pytest.approx([-space.score(a) for a in archs])
    assert ev.best() == pytest.approx(space.optimum()[1])


def test_table_errors_are_one_line_user_errors(tmp_path):
    space = ToySpace(decisions=3, choices=3)
    path = toy_table(tmp_path, space)
    for args in [
        (str(tmp_path / "missing.csv"), "name", "score"),
        (str(path), "name", "nope"),
        (str(path), "x", "score"),
    ]:
        with pytest.raises(UserError) as err:
            TableEvaluator(space, *args)
        assert "\n" not in str(err.value)
    other = ToySpace(decisions=4, choices=3)  # archs that the table does not hold
    with pytest.raises(UserError, match="not in table"):
        TableEvaluator(other, str(path), "name", "score").evaluate([other.sample(np.random.default_rng(0))])


def _nb201_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("path", [DATA, REAL], ids=["fixture", "shared"])
def test_table_evaluator_on_nb201(path):
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    nb201 = pytest.importorskip("supernet.spaces.nb201")
    space = nb201.NB201Space()
    rows = _nb201_rows(path)[:50]
    ev = TableEvaluator(space, str(path), "arch", "c10_valid_12ep", "c10_test_200ep")
    out = ev.evaluate([space.from_str(r["arch"]) for r in rows])
    assert [o["metric"] for o in out] == pytest.approx([float(r["c10_valid_12ep"]) for r in rows])
    assert [o["report_metric"] for o in out] == pytest.approx([float(r["c10_test_200ep"]) for r in rows])
    if path == REAL:
        assert TableEvaluator(space, str(path), "arch", "c10_test_200ep").best() == pytest.approx(94.3733)


def test_user_function_evaluator():
    space = ToySpace()
    ev = make_evaluator(type("C", (), {"evaluator": "tests.toy_space:evaluate"})(), space, trusted=True)
    arch = space.sample(np.random.default_rng(0))
    assert ev.evaluate([arch])[0]["metric"] == pytest.approx(space.score(arch))
    floats = FunctionEvaluator(lambda archs, sp: [1.5 for _ in archs], space)
    assert floats.evaluate([arch, arch]) == [{"metric": 1.5}, {"metric": 1.5}]
    with pytest.raises(UserError):
        FunctionEvaluator(lambda archs, sp: [{"acc": 1.0}], space).evaluate([arch])
    with pytest.raises(UserError):
        FunctionEvaluator(lambda archs, sp: [], space).evaluate([arch])


def test_unavailable_evaluator_says_so():
    space = ToySpace()
    cfg = type("C", (), {"evaluator": "no_such_evaluator"})()
    with pytest.raises(UserError):
        make_evaluator(cfg, space)


def test_a_diverging_training_run_is_a_failed_trial_not_a_crash():
    """The train evaluator reads its loss every few steps (no per-step sync); NaN fails that trial alone."""
    from search.evaluators.train import TrainingEvaluator
    from search.ray_executor import evaluator_key, run_trial
    from supernet.spaces.base import make_user_space

    space = make_user_space("nb201", channels=4, cells=1)
    arch = space.sample(np.random.default_rng(0))
    common = dict(space="nb201", space_opts={"channels": 4, "cells": 1}, evaluator="train", dataset="synthetic",
                  image_size=16, search_size=64, train_epochs=1, seed=1, device="cpu", quiet=True)  # fmt: skip
    bad = SearchConfig(**common, train_lr=1e12)
    result = TrainingEvaluator(space, bad).evaluate([arch])[0]
    assert math.isnan(result["metric"]) and result["error"].startswith("FloatingPointError: training loss is")
    info = run_trial(evaluator_key(bad), bad, space.to_json(arch), 0.0, 1)  # the body of a Ray task
    assert info["error"] == result["error"] and math.isnan(info["result"]["metric"])
    good = TrainingEvaluator(space, SearchConfig(**common)).evaluate([arch])[0]
    assert math.isfinite(good["metric"]) and "error" not in good and good["train_images_per_s"] > 0
