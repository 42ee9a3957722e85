"""bench/nb201/compare.py: rankings of several bench-nb201 results on their common draw, and their ensemble."""

from __future__ import annotations

import json

import numpy as np

from bench.nb201 import compare
from bench.nb201.bias import conv_depth
from bench.ranking import kendall_tau
from supernet.spaces.base import make_space


def _result(path, archs, truth, score):
    path.write_text(json.dumps({"sample": {"n_uniform": len(archs) - 2, "archs": archs, "truth": truth},
                                "scores": {"s/recal0": list(score)}}))  # fmt: skip
    return f"{path}:s/recal0"


def test_compare_prints_each_ranking_and_the_ensemble(tmp_path, capsys):
    space, rng = make_space("nb201"), np.random.default_rng(0)
    archs = list(dict.fromkeys(space.to_str(space.sample(rng)) for _ in range(40)))
    truth = list(90 + 4 * rng.random(len(archs)))
    a = _result(tmp_path / "a.json", archs, truth, np.array(truth) + rng.normal(size=len(archs)))
    b = _result(tmp_path / "b.json", archs, truth, -np.array(truth))
    assert compare.main([a, b]) == 0
    out = capsys.readouterr().out
    assert "a.json:s/recal0: tau 0." in out and "b.json:s/recal0: tau -1.000" in out and "rank-averaged ensemble" in out
    assert "bias by convs on the longest input-output path" in out
    assert conv_depth(("nor_conv_3x3", "none", "nor_conv_1x1", "skip_connect", "none", "nor_conv_3x3")) == 3
    assert conv_depth(("none", "none", "nor_conv_3x3", "skip_connect", "none", "nor_conv_3x3")) == 0
    assert conv_depth(("none",) * 6) == -1
    other = _result(tmp_path / "c.json", archs[::-1], truth, truth)
    assert compare.main([a, other]) == 2  # another draw of cells cannot be compared
    assert compare.main([f"{tmp_path / 'a.json'}:nokey"]) == 2
    assert compare.main([str(tmp_path / "missing.json")]) == 2
    assert compare.main([a, "params"]) == 0 and "reference params: tau" in capsys.readouterr().out
    assert compare.main([a, "table:c10_valid_12ep", "--table", str(tmp_path / "no.csv")]) == 2


def test_corrected_tau_removes_a_planted_edge_bias():
    space, rng = make_space("nb201"), np.random.default_rng(1)
    cells = list(dict.fromkeys(space.canonical(space.sample(rng)) for _ in range(300)))
    truth = rng.normal(size=len(cells))
    score = truth + np.array([2.0 if c[3] == "nor_conv_3x3" else 0.0 for c in cells])
    raw = kendall_tau(score, truth)
    assert raw < 0.8 and compare.corrected_tau(cells, score, truth) > raw + 0.1
