"""NAS-Bench-201 space: string form, round trips, validation, canonical form, costs, extraction.

Published figures pinned below (NAS-Bench-201's cost tables, CIFAR-10 / CIFAR-100, as quoted in
public code that normalises them, e.g. an evoxbench-based NB201 benchmark wrapper with
`'params': [0.073306, 1.531546], 'flops': [7.78305, 220.11969]` and a script listing CIFAR-100
`min_params 0.079156, max_params 1.537396`): the all-`none` cell is the cheapest and the
all-`nor_conv_3x3` cell the most expensive network of the space. Our FLOPs are 10 MACs below the
table's because NAS-Bench-201 counts the classifier bias as one op per class; thop does not.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ArchError
from supernet.flops import count_thop
from supernet.spaces.base import make_space
from supernet.spaces.nb201 import iso_key

TABLE = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "nb201.csv"
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def space():
    return make_space("nb201")


def samples(space, n=100, seed=0):
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_string_form_is_nas_bench_201s(space):
    arch = space.from_str(EXAMPLE)
    assert arch == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert space.to_str(arch) == EXAMPLE


def test_round_trips(space):
    for arch in samples(space):
        space.validate(arch)
        vec = space.encode(arch)
        assert vec.shape == (space.encoding_dim,) and vec.sum() == 6
        assert space.decode(vec) == arch
        assert space.from_json(json.loads(json.dumps(space.to_json(arch)))) == arch
        assert space.from_str(space.to_str(arch)) == arch
        child = space.mutate(arch, np.random.default_rng(1))
        assert sum(a != b for a, b in zip(arch, child)) == 1


@pytest.mark.parametrize(
    "bad, part",
    [
        (("none",) * 5, "tuple of 6"),
        (("none",) * 5 + ("conv",), "edge 3<-2"),
        (["none"] * 6, "tuple of 6"),
    ],
)
def test_validate_names_the_part(space, bad, part):
    with pytest.raises(ArchError, match=part):
        space.validate(bad)


@pytest.mark.parametrize(
    "text, part",
    [
        ("|none~0|+|none~0|none~1|", "3 node groups"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "node 2 input 1"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|max_pool~2|", "edge 3<-2"),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 group"),
    ],
)
def test_from_str_errors(space, text, part):
    with pytest.raises(ArchError, match=part):
        space.from_str(text)


def test_from_json_errors(space):
    with pytest.raises(ArchError, match="space='nb201'"):
        space.from_json({"space": "resnet20", "ops": ["none"] * 6})
    with pytest.raises(ArchError, match="edge 1<-0"):
        space.from_json({"space": "nb201", "ops": ["conv"] + ["none"] * 5})


def test_size_and_extremes(space):
    assert space.size() == 15625
    assert space.cost(space.largest()).mflops > space.cost(space.smallest()).mflops


@pytest.mark.parametrize(
    "arch_str, classes, params, mflops",
    [
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
            10,
            1.531546,
            220.11969,
        ),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 10, 0.073306, 7.78305),
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
            100,
            1.537396,
            None,
        ),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 100, 0.079156, None),
    ],
)
def test_published_params_and_flops(space, arch_str, classes, params, mflops):
    arch = space.from_str(arch_str)
    counted = count_thop(space.build(arch, classes), 32)
    assert counted.params == pytest.approx(params, abs=1e-6)
    assert space.cost(arch, classes).params == pytest.approx(params, abs=1e-6)
    if mflops is not None:
        assert counted.mflops == pytest.approx(mflops - classes / 1e6, abs=1e-6)  # see module docstring


def test_cost_equals_thop(space):
    for arch in samples(space, n=8, seed=3) + [space.from_str(EXAMPLE)]:
        fast, ref = space.cost(arch, 10), count_thop(space.build(arch, 10), 32)
        assert fast.mflops == pytest.approx(ref.mflops, rel=1e-9)
        assert fast.params == pytest.approx(ref.params, rel=1e-9)


def test_cost_of_10k_samples(space):

    archs = samples(space, n=10000, seed=5)
    costs = [space.cost(a) for a in archs]  # the speed (10k in < 1 s) is bench-supernet's figure
    assert len({c.mflops for c in costs}) > 10


def test_canonical_basic(space):
    arch = space.from_str(EXAMPLE)
    assert space.canonical(arch) == space.canonical(space.canonical(arch))
    # Node 1 is a copy of node 0, so which of edges 3<-0 and 3<-1 carries which conv does not matter.
    a = space.from_str("|skip_connect~0|+|none~0|none~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|")
    b = space.from_str("|skip_connect~0|+|none~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|none~2|")
    assert a != b and space.canonical(a) == space.canonical(b)
    assert space.canonical(a) != space.canonical(space.from_str(EXAMPLE))
    # A cell with no path to node 3 collapses to the all-none representative.
    dead = space.from_str("|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|none~1|none~2|")
    assert space.canonical(dead) == space.canonical(space.smallest())


def test_canonical_groups_like_iso_key():
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} not present")
    space = make_space("nb201")
    with TABLE.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15625
    groups: dict[str, set] = defaultdict(set)
    reps = set()
    for row in rows:
        arch = space.from_str(row["arch"])
        assert space.to_str(arch) == row["arch"]
        assert iso_key(arch) == row["iso_key"]
        rep = space.canonical(arch)
        groups[row["iso_key"]].add(rep)
        reps.add(rep)
    assert len(groups) == 6466
    assert all(len(r) == 1 for r in groups.values())  # each key class maps to one representative
    assert len(reps) == 6466  # and distinct classes map to distinct representatives


@pytest.mark.parametrize("cells", [1, 5])
def test_extract_equals_supernet(space, cells):
    space = make_space("nb201", cells=cells)
    torch.manual_seed(0)
    sup = space.supernet(10)
    # Non-trivial BN statistics and affine params so that a wrong copy shows.
    for m in sup.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    sup.eval()
    x = torch.randn(2, 3, 32, 32)
    n = 20 if cells == 1 else 6
    outs = set()
    for arch in samples(space, n=n, seed=cells) + [space.largest(), space.smallest()]:
        net = space.extract(sup, arch).eval()
        with torch.no_grad():
            ref = sup(x, arch)
            sup.set_active(arch)
            assert torch.equal(sup(x), ref)
            assert (net(x) - ref).abs().max().item() < 1e-5
        outs.add(round(ref.sum().item(), 4))
    assert len(outs) > n // 2  # the archs really ran different networks


def test_supernet_trains_only_chosen_ops(space):
    space = make_space("nb201", cells=1)
    sup = space.supernet(10)
    arch = ("nor_conv_1x1", "none", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "none")
    sup(torch.randn(2, 3, 32, 32), arch).sum().backward()
    cell = sup.cells[0]
    assert cell.edges[0]["nor_conv_1x1"][1].weight.grad is not None
    assert cell.edges[0]["nor_conv_3x3"][1].weight.grad is None
    assert cell.edges[4]["nor_conv_3x3"][1].weight.grad is not None
    assert cell.edges[1]["nor_conv_3x3"][1].weight.grad is None


def test_channels_last_and_autocast():
    space = make_space("nb201", cells=1)
    sup = space.supernet(10).eval().to(memory_format=torch.channels_last)
    arch = space.from_str(EXAMPLE)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = sup(x, arch)
        out2 = space.extract(sup, arch)(x)
    assert out.shape == out2.shape == (2, 10) and torch.isfinite(out).all()


def test_bad_options():
    from core.errors import UserError

    with pytest.raises(UserError, match="nb201 options"):
        make_space("nb201", cells=0)


def test_fair_archs_cover_every_op_once(space):
    archs = space.fair_archs(np.random.default_rng(0))
    assert len(archs) == 5
    for e in range(6):
        assert sorted(a[e] for a in archs) == sorted(
            ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
        )
