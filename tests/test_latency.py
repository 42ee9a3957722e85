"""Latency lookup tables: building and resuming, the predictor, search constraints, refusals."""

from __future__ import annotations

import json
import logging
import zlib

import numpy as np
import pytest

import supernet.latency as lat
from core.errors import UserError
from search.config import SearchConfig
from search.loop import make_constraint, run_search
from search.outputs import pareto_front
from supernet.latency import LatencyTable, build_table, unit_name
from supernet.spaces.base import make_space
from tests.conftest import run_cli

TINY_NB = {"channels": 4, "cells": 1, "resolution": 16}
TINY_MB = {"stem": "cifar", "depths": [1, 2], "kernels": [3, 5], "expands": [3, 6]}
TINY_NAS = {"channels": 4, "blocks": [1, 1], "nodes": 3, "resolution": 8}
# every kind of cell input: after the stem, after a normal cell, after a reduction (FactorizedReduce),
# a reduction after a reduction, loose-end widths, and a network ending in a reduction cell
NAS_VARIANTS = [
    TINY_NAS,
    {**TINY_NAS, "blocks": [0, 1, 0], "per_stage": True, "concat": "loose", "head_bn": False},
    {**TINY_NAS, "ops": "none,skip_connect,avg_pool_3x3,dil_conv_3x3", "nodes": 1, "blocks": [1, 0, 1]},
]


def _build(path, space, **kw):
    args = dict(device=lat.torch.device("cpu"), dtype="fp32", batch=1, num_classes=10, repeats=2, overhead_archs=2,
                seed=0, quiet=True)  # fmt: skip
    return build_table(space, path, **{**args, **kw})


def _synthetic(space, num_classes=10, overhead=0.5) -> LatencyTable:
    """Unit i costs i + 1 ms: every sum is exact in binary floating point."""
    units = {unit_name(k): float(i + 1) for i, k in enumerate(space.latency_unit_choices(num_classes))}
    meta = {"space": space.name, "space_opts": json.loads(json.dumps(space.options())), "num_classes": num_classes}
    meta.update(lat.environment(lat.torch.device("cpu"), lat.torch.get_num_threads(), "fp32", 1))
    return LatencyTable(meta, units, overhead)


def test_table_is_built_and_resumed_after_an_interruption(tmp_path, monkeypatch):
    space = make_space("nb201", **TINY_NB)
    out = tmp_path / "t.json"
    calls = []
    real = lat.time_module

    def interrupted(*args, **kwargs):
        if len(calls) == 3 * 2 + 5:  # the two overhead archs in three rounds, then five units
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lat, "time_module", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(out, space)
    partial = json.loads(out.read_text())
    assert len(partial["units"]) == 5 and partial["overhead_ms"] is None and len(partial["archs_ms"]) == 2

    counted = []
    monkeypatch.setattr(lat, "time_module", lambda *a, **k: counted.append(1) or real(*a, **k))
    table = _build(out, space)
    n_units = len(space.latency_unit_choices(10))
    assert len(table.units) == n_units == 12
    # three rounds over the units (five were timed before the interruption); the overhead archs are kept
    assert len(counted) == 3 * n_units - 5
    assert set(table.rounds.values()) == {3} and LatencyTable.load(out).rounds == table.rounds
    assert all(table.units[k] <= v for k, v in partial["units"].items())  # a round keeps the fastest so far
    assert table.meta["threads"] == lat.torch.get_num_threads() and table.meta["cpu"]
    assert LatencyTable.load(out).overhead_ms == table.overhead_ms


def test_a_rerun_with_another_seed_measures_its_own_overhead_archs(tmp_path, monkeypatch):
    space = make_space("nb201", **TINY_NB)
    out = tmp_path / "t.json"
    first = _build(out, space, rounds=1)
    measured = []
    real = lat.measure_archs

    def counted(sp, archs, *a, **k):
        measured.append(archs)
        return real(sp, archs, *a, **k)

    monkeypatch.setattr(lat, "measure_archs", counted)
    again = _build(out, space, rounds=1)  # same seed: the finished table's archs are kept
    assert not measured and again.archs_ms == first.archs_ms
    other = _build(out, space, rounds=1, seed=7)
    assert len(measured) == 1 and other.meta["overhead_seed"] == 7
    rng = np.random.default_rng(7)
    assert [space.to_str(a) for a in measured[0]] == [space.to_str(space.sample(rng)) for _ in range(2)]


def test_a_unit_is_timed_cold_over_copies_with_their_own_weights():
    space = make_space("nb201", **TINY_NB)
    key = next(k for k in space.latency_unit_choices(10) if "conv" in unit_name(k))
    one, shape = lat.unit_copies(space, key, 0)
    size = sum(p.numel() * p.element_size() for p in one[0].parameters())
    copies, shape2 = lat.unit_copies(space, key, 5 * size)
    assert len(one) == 1 and len(copies) == 5 and shape == shape2
    weights = [next(m.parameters()) for m in copies]
    assert len({w.data_ptr() for w in weights}) == 5 and not lat.torch.equal(weights[0], weights[1])
    assert len(lat.unit_copies(space, key, 10**12)[0]) == 32  # capped
    calls = []
    for m in copies:
        m.register_forward_hook(lambda *a: calls.append(1))
    ms = lat.time_module(copies, shape, lat.torch.device("cpu"), "fp32", 1, repeats=2, warmup=1)
    assert ms > 0 and len(calls) == 5 * 3  # each timed call runs every copy once


@pytest.mark.parametrize(
    "name,opts", [("nb201", TINY_NB), ("mbconv", TINY_MB), ("resnet20", {}), *(("nasnet", o) for o in NAS_VARIANTS)]
)
def test_predictor_is_overhead_plus_the_units(name, opts):
    space = make_space(name, **opts)
    table = _synthetic(space)
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        keys = space.latency_units(arch, 10)
        assert set(map(unit_name, keys)) <= set(table.units)  # every unit an arch runs is declared
        if name == "nb201":  # counted independently: every cell runs each op that is not `none`
            shapes = [(4, 16), (8, 8), (16, 4)]
            expected = sum(table.units[f"nb/{op}/{c}/{h}"] for c, h in shapes for op in arch if op != "none")
        elif name == "nasnet":  # stem, head; per cell a join, one op per edge, a projection per input read
            cells = space._slot_edges(arch)
            reads = sum(len({inp for inp, _ in edges if inp < 2}) for edges in cells)
            assert len(keys) == 2 + len(cells) * (1 + 2 * space.nodes) + reads
            ops = [k[1] for k in keys if k[0] == "op"]
            assert ops == [op for edges in cells for _, op in edges]
            expected = sum(table.units[unit_name(k)] for k in keys)
        else:  # stem, one unit per block, head
            assert len(keys) == 2 + (sum(arch.depths) if name == "mbconv" else len(arch.inner))
            expected = sum(table.units[unit_name(k)] for k in keys)
        assert table.predict(space, arch) == expected + 0.5


@pytest.mark.parametrize("name,opts", [("mbconv", TINY_MB), ("resnet20", {})])
def test_units_chain_into_the_network_they_describe(name, opts):
    import torch

    space = make_space(name, **opts)
    arch = space.sample(np.random.default_rng(3))
    net = space.build(arch, 10).eval()
    keys = space.latency_units(arch, 10)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for key in keys:  # the unit modules chain to the network's output shape
            module, shape = space.latency_unit_module(key)
            assert tuple(x.shape[1:]) == shape, key
            x = module.eval()(x)
        assert x.shape == net(torch.randn(1, 3, 32, 32)).shape


@pytest.mark.parametrize("opts", NAS_VARIANTS)
def test_nasnet_units_are_the_modules_the_network_runs(opts):
    """Each unit's module is the network's module (type, parameters) on the input shape the network
    feeds it; a join gives the cell's output shape and the head the logits."""
    import torch

    space = make_space("nasnet", **opts)
    choices = set(space.latency_unit_choices(10))
    rng = np.random.default_rng(4)
    for _ in range(4):
        arch = space.sample(rng)
        net = space.build(arch, 10).eval()
        seen: list = []  # (module, input shape, output shape), in call order

        def hook(module, args, out, seen=seen):
            seen.append((module, tuple(args[0].shape[1:]), tuple(out.shape[1:])))

        for cell in net.cells:  # the cell's hook fires after its projections and ops
            for m in (cell.preprocess0, cell.preprocess1, *cell.ops):
                if m is not None:
                    m.register_forward_hook(hook)
            cell.register_forward_hook(hook)
        net.stem.register_forward_hook(hook)
        with torch.no_grad():
            logits = net(torch.randn(1, 3, space.resolution, space.resolution))
        keys = space.latency_units(arch, 10)
        assert set(keys) <= choices
        assert len(keys) == len(seen) + 1  # every hooked module, then the head
        params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        for key, (real, shape_in, shape_out) in zip(keys, seen):
            module, shape = space.latency_unit_module(key)
            with torch.no_grad():
                out = module.eval()(torch.randn(1, *shape))
            if key[0] == "join":  # stands for the cell: its output shape
                assert tuple(out.shape[1:]) == shape_out, key
            else:
                assert (type(module), params(module), shape) == (type(real), params(real), shape_in), key
                assert tuple(out.shape[1:]) == shape_out, key
        module, shape = space.latency_unit_module(keys[-1])
        assert keys[-1][0] == "head" and shape == seen[-1][2]
        assert params(module) == params(net) - sum(
            params(m) for m, _, _ in seen if not isinstance(m, type(net.cells[0]))
        )
        assert module.eval()(torch.randn(1, *shape)).shape == logits.shape
    with pytest.raises(UserError, match="unknown latency unit"):
        space.latency_unit_module(("op", "sep_conv_9x9", 4, 8, 1))


def test_a_tiny_nasnet_table_builds_and_predicts(tmp_path):
    space = make_space("nasnet", **NAS_VARIANTS[1])
    table = _build(tmp_path / "nas.json", space)
    assert set(table.units) == set(map(unit_name, space.latency_unit_choices(10)))
    assert all(v > 0 for v in table.units.values()) and table.overhead_ms is not None
    arch = space.sample(np.random.default_rng(0))
    units = sum(table.units[unit_name(k)] for k in space.latency_units(arch, 10))
    assert lat.LatencyTable.load(tmp_path / "nas.json").predict(space, arch) == units + table.overhead_ms


def test_latency_constraint_filters_every_proposal():
    from search.searchers import make_searcher

    space = make_space("nb201", **TINY_NB)
    table = _synthetic(space)
    rng = np.random.default_rng(0)
    values = sorted(table.predict(space, space.sample(rng)) for _ in range(200))
    bound = values[len(values) // 3]
    cfg = SearchConfig(space="nb201", space_opts=TINY_NB, latency_table="x", max_latency_ms=bound, quiet=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LatencyTable, "load", classmethod(lambda cls, path: table))
        feasible = make_constraint(space, cfg)
    searcher = make_searcher("lanas", space, 0, feasible)
    archs = searcher.propose(20)
    assert archs and all(table.predict(space, a) <= bound for a in archs)
    assert not all(feasible(space.sample(rng)) for _ in range(50))  # the bound does bind


def test_a_space_without_units_says_so_in_one_line():
    from tests.toy_space import ToySpace

    with pytest.raises(UserError, match="declares no latency units") as info:
        ToySpace().latency_unit_choices()
    assert "\n" not in str(info.value)


def test_mismatched_tables_are_refused_and_other_machines_warned(caplog):
    space = make_space("nb201", **TINY_NB)
    table = _synthetic(space)
    with pytest.raises(UserError, match="space_opts"):
        table.check(make_space("nb201", **{**TINY_NB, "channels": 8}), 10)
    with pytest.raises(UserError, match="space="):
        table.check(make_space("mbconv", **TINY_MB), 10)
    with pytest.raises(UserError, match="num_classes"):
        table.check(space, 100)
    with caplog.at_level(logging.WARNING):
        table.check(space, 10, {"device": "cuda", "threads": 99})
    assert "threads=" in caplog.text and "99" in caplog.text and "device=" in caplog.text
    del table.units[unit_name(space.latency_units(("nor_conv_3x3",) * 6, 10)[0])]
    with pytest.raises(UserError, match="no unit nb/nor_conv_3x3/4/16"):
        table.predict(space, ("nor_conv_3x3",) * 6)


@pytest.mark.parametrize("content", ["{", '{"meta": 1, "units": {}}', '{"meta": {}, "units": {"a": "x"}}', "[" * 5000])
def test_malformed_table_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(UserError, match="malformed") as info:
        LatencyTable.load(path)
    assert "\n" not in str(info.value)


def test_cli_latency_bounds_need_a_table_and_a_matching_one(tmp_path):
    proc = run_cli("search", "--preset", "test-tiny", "--max-latency-ms", "5", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "--latency-table" in proc.stderr and "Traceback" not in proc.stderr
    table = tmp_path / "t.json"
    _synthetic(make_space("nb201", **TINY_NB)).save(table)
    proc = run_cli("latency", "--table", str(table), "--arch", "nonsense")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    arch = make_space("nb201").to_str(("nor_conv_3x3",) * 6)
    proc = run_cli("latency", "--table", str(table), "--arch", arch, "--no-measure")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[0])["predicted_ms"] > 0


def fake_accuracy(archs, space):
    """A user evaluator for the front test: convolutions help, plus a fixed per-arch jitter."""
    return [
        {
            "metric": 2.0 * a.count("nor_conv_3x3")
            + a.count("nor_conv_1x1")
            + zlib.crc32(space.to_str(a).encode()) % 97 / 97
        }
        for a in archs
    ]


def _brute_front(points):
    """(cost, metric) points that no other point beats: cost <= and metric >=, one of them strictly."""
    return {
        p for p in points if not any(q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1]) for q in points)
    }


def test_pareto_front_by_latency_is_the_non_dominated_set():
    rng = np.random.default_rng(0)
    for trial in range(200):  # small integers: many ties in latency, in metric and in both
        n = int(rng.integers(1, 30))
        records = [
            {"arch": {}, "str": str(i), "metric": float(rng.integers(5)), "latency_ms": float(rng.integers(5))}
            for i in range(n)
        ]
        records.append({"arch": {}, "str": "x", "metric": float("nan"), "latency_ms": 0.0})  # never on a front
        front = pareto_front(records, "latency_ms")
        points = [(e["latency_ms"], e["metric"]) for e in front]
        assert set(points) == _brute_front({(r["latency_ms"], r["metric"]) for r in records[:-1]}), trial
        assert len(points) == len(set(points)) and points == sorted(points)  # one entry per point, by latency
        assert [e["rank"] for e in front] == list(range(len(front)))


def test_a_search_with_a_latency_table_reports_the_accuracy_latency_front(tmp_path):
    from core.jsonl import read_jsonl
    from pipeline.report import _html, latency_section

    space = make_space("nb201", **TINY_NB)
    table = _synthetic(space)
    table.save(tmp_path / "t.json")
    cfg = SearchConfig(
        run_dir=str(tmp_path / "run"), space="nb201", space_opts=TINY_NB, evaluator="tests.test_latency:fake_accuracy",
        latency_table=str(tmp_path / "t.json"), searcher="random", budget=60, batch=10, quiet=True, seed=1,
    )  # fmt: skip
    run_search(cfg)
    out = tmp_path / "run" / "search"
    records = read_jsonl(out / "journal.jsonl")
    predicted = {r["str"]: table.predict(space, space.from_str(r["str"])) for r in records}
    front = json.loads((out / "pareto_latency.json").read_text())
    points = [(e["latency_ms"], e["metric"]) for e in front]
    assert set(points) == _brute_front({(predicted[r["str"]], r["metric"]) for r in records})
    assert len(front) >= 3 and points == sorted(points) and len(set(points)) == len(points)
    assert all(e["latency_ms"] == table.predict(space, space.from_json(e["arch"])) for e in front)
    assert all(e["space"] == "nb201" and e["space_opts"] == TINY_NB for e in front)  # retrain --arch-file reads it
    assert (out / "pareto_latency.png").stat().st_size > 1000
    topk = json.loads((out / "topk.json").read_text())
    assert all(t["latency_ms"] == predicted[t["str"]] for t in topk)

    figs = tmp_path / "run" / "report"
    figs.mkdir()
    lines = latency_section(tmp_path / "run", figs)  # the pipeline's report.md section
    assert (figs / "latency.png").is_file() and "![latency front](report/latency.png)" in lines
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [float(r.split("|")[1]) for r in rows] == pytest.approx([p[0] for p in points], rel=1e-3)
    assert "data:image/png;base64" in _html("\n".join(lines), figs)

    cfg.run_dir, cfg.latency_table = str(tmp_path / "plain"), ""
    run_search(cfg)  # without a table: no latency front, no latency in the report
    assert not (tmp_path / "plain/search/pareto_latency.json").exists()
    assert latency_section(tmp_path / "plain", figs) == []
