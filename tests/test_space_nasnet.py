"""NASNet / DARTS cell space: round trips, validation, supernet == extract, cost == thop, LaNet."""

from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest
import torch

from core.errors import ArchError
from supernet.flops import count_thop
from supernet.spaces.base import make_space
from supernet.spaces.cell_text import read_lanet
from supernet.spaces.nasnet import LANET, CellArch

torch.set_num_threads(1)
TINY = dict(channels=8, blocks=[1, 1])
VARIANTS = [
    TINY,
    dict(TINY, per_stage=True, concat="loose"),
    dict(TINY, nodes=7, ops="lanas", concat="loose"),
    dict(TINY, ops="none,skip_connect,avg_pool_3x3,dil_conv_3x3", nodes=3, auxiliary=True),
]

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)  # fmt: skip


@pytest.mark.parametrize("opts", VARIANTS)
def test_round_trips(opts):
    space = make_space("nasnet", **opts)
    rng = np.random.default_rng(0)
    for _ in range(100):
        arch = space.sample(rng)
        space.validate(arch)
        vec = space.encode(arch)
        assert vec.shape == (space.encoding_dim,)
        assert space.decode(vec) == arch
        assert space.from_json(json.loads(json.dumps(space.to_json(arch)))) == arch
        assert space.from_str(space.to_str(arch)) == arch
        mutant = space.mutate(arch, rng)
        space.validate(mutant)
        assert space.canonical(mutant) != space.canonical(arch)
        assert hash(arch) == hash(space.decode(vec))
    assert make_space("nasnet", **space.options()).encoding_dim == space.encoding_dim


def test_canonical_sorts_node_inputs():
    space = make_space("nasnet", **TINY)
    arch = space.sample(np.random.default_rng(1))
    n = list(arch.normal)
    n[0], n[1] = (1, "sep_conv_3x3"), (0, "skip_connect")
    a = CellArch(tuple(n), arch.reduce)
    n[0], n[1] = n[1], n[0]
    b = CellArch(tuple(n), arch.reduce)
    assert a != b and space.canonical(a) == space.canonical(b)
    assert space.canonical(a).normal[:2] == ((0, "skip_connect"), (1, "sep_conv_3x3"))
    assert space.canonical(space.canonical(a)) == space.canonical(a)


@pytest.mark.parametrize(
    "mangle, part",
    [
        (lambda a: CellArch(a.normal[:-1], a.reduce), "normal"),
        (lambda a: CellArch(a.normal, ((3, "sep_conv_3x3"),) + a.reduce[1:]), "reduce cell 0 node 0 edge 0 input"),
        (lambda a: CellArch(((0, "conv_9x9"),) + a.normal[1:], a.reduce), "normal cell 0 node 0 edge 0 op"),
        (lambda a: CellArch(a.normal, (("x", 1),) + a.reduce[1:]), "reduce cell 0 node 0 edge 0"),
        (lambda a: (a.normal, a.reduce), "CellArch"),
    ],
)
def test_validation_names_the_part(mangle, part):
    space = make_space("nasnet", **TINY)
    arch = space.sample(np.random.default_rng(2))
    with pytest.raises(ArchError, match=part):
        space.validate(mangle(arch))


def test_bad_strings_and_json():
    space = make_space("nasnet", **TINY)
    for text in ("", "normal=foo", "normal=sep_conv_3x3~0 reduce=x"):
        with pytest.raises(ArchError):
            space.from_str(text)
    with pytest.raises(ArchError):
        space.from_json({"space": "nasnet", "normal": [[0, "sep_conv_3x3"]], "reduce": []})


@pytest.mark.parametrize("opts", VARIANTS[:3])
def test_extract_equals_supernet(opts):
    space = make_space("nasnet", **opts)
    sup = space.supernet(10)
    rng = np.random.default_rng(3)
    x = torch.randn(2, 3, 32, 32)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(18)]:
        sup.train()
        with torch.no_grad():
            sup(torch.randn(2, 3, 32, 32), arch)  # move the running stats away from their init
        sup.eval()
        net = space.extract(sup, arch).eval()
        with torch.no_grad():
            ref = sup(x, arch)
            sup.set_active(arch)
            assert torch.equal(sup(x), ref)
            assert (net(x) - ref).abs().max().item() < 1e-5


def test_supernet_runs_only_chosen_ops():
    space = make_space("nasnet", **TINY)
    sup = space.supernet(10)
    arch = space.sample(np.random.default_rng(4))
    sup(torch.randn(2, 3, 32, 32), arch).sum().backward()
    with_grad = sum(p.numel() for p in sup.parameters() if p.grad is not None)
    net = space.build(arch, 10)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    expected = sum(p.numel() for p in net.parameters() if p.grad is not None)
    for cell in net.cells:  # two equal edges of one node share one supernet module
        for k in range(0, len(cell.ops), 2):
            if cell.inputs[k] == cell.inputs[k + 1] and str(cell.ops[k]) == str(cell.ops[k + 1]):
                expected -= sum(p.numel() for p in cell.ops[k].parameters() if p.grad is not None)
    assert with_grad == expected < sum(p.numel() for p in sup.parameters()) / 3


@pytest.mark.parametrize("opts", VARIANTS)
def test_cost_matches_thop(opts):
    space = make_space("nasnet", **opts)
    rng = np.random.default_rng(5)
    for _ in range(4):
        arch = space.sample(rng)
        cost = space.cost(arch, 10)
        ref = count_thop(space.build(arch, 10), 32)
        assert cost.mflops == pytest.approx(ref.mflops, rel=0.01)
        assert cost.params == pytest.approx(ref.params, rel=0.01)


def test_cost_of_10k_samples():
    space = make_space("nasnet")
    rng = np.random.default_rng(6)
    archs = [space.sample(rng) for _ in range(10_000)]
    space.cost(archs[0])
    costs = [space.cost(a).mflops for a in archs]  # the speed (10k in < 1 s) is bench-supernet's figure
    assert min(costs) < max(costs) and all(c > 0 for c in costs)


def test_lanet_builds_and_runs():
    space = make_space("nasnet", nodes=7, ops="lanas", concat="loose", channels=8, blocks=[1, 1, 1], auxiliary=True)
    arch = space.from_lanet(LANET, nodes=7)
    assert arch.normal == arch.reduce
    # First node: ops (2, 2) -> skip_connect twice, inputs (0, 1), per the ops-then-inputs layout.
    assert arch.normal[:2] == ((0, "skip_connect"), (1, "skip_connect"))
    assert arch.normal[8:10] == ((3, "skip_connect"), (4, "sep_conv_5x5"))
    net = space.build(arch, 10)
    net.drop_path_prob = 0.2
    logits, aux = net.train()(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # Loose ends of the LaNet cell: nodes 3..6 (states 5..8) feed nothing.
    assert net.cells[0].concat == (5, 6, 7, 8)
    with pytest.raises(ArchError):
        space.from_lanet(LANET[:-1])
    with pytest.raises(ArchError):
        make_space("nasnet", nodes=5, ops="lanas").from_lanet(LANET)


def test_lanet_text_is_read_by_the_space_as_retrain_read_it():
    text = ",".join(map(str, LANET))
    lists, opts = read_lanet(text, {"channels": 8})
    assert lists == [list(LANET)] and opts == {"nodes": 7, "ops": "lanas", "concat": "loose", "channels": 8}
    space = make_space("nasnet", **opts)
    assert space.from_lanet_lists(lists) == space.from_lanet(LANET, nodes=7)
    # One list per stage: stage s runs list s, and the reduction entering stage s + 1 runs list s + 1
    # (what retrain/inputs.py built itself from single-cell spaces before the space owned it).
    codes = [list(LANET), [0] * 14 + list(LANET[14:]), list(LANET[:14]) + [0, 1] * 7]
    lists, opts = read_lanet(" ; ".join(f"[{', '.join(map(str, c))}]" for c in codes), {"blocks": [1, 1, 1]})
    assert opts["per_stage"] and opts["nodes"] == 7
    single = make_space("nasnet", **{**opts, "per_stage": False})
    cells = [single.from_lanet(c, nodes=7).normal for c in codes]
    arch = make_space("nasnet", **opts).from_lanet_lists(lists)
    assert arch == CellArch(normal=cells[0] + cells[1] + cells[2], reduce=cells[1] + cells[2])
    assert {op for _, op in arch.normal[14:28]} == {"sep_conv_3x3"}
    with pytest.raises(ArchError, match="multiple of 4"):
        read_lanet("1,2,3", {})
    with pytest.raises(ArchError, match="comma-separated integers"):
        read_lanet("1,2,x,4", {})
    with pytest.raises(ArchError, match="2 per-stage lists but the space has 3 stages"):
        make_space("nasnet", **opts).from_lanet_lists(lists[:2])
    with pytest.raises(ArchError, match="normal cell 1 node 0 edge 1 input"):  # the stage's own cell is named
        make_space("nasnet", nodes=1, ops="lanas", per_stage=True, blocks=[1, 1]).from_lanet_lists(
            [[0, 0, 0, 0], [0, 0, 0, 5]]
        )


def test_from_genotype_forms():
    space = make_space("nasnet", nodes=4, channels=8, blocks=[1, 1])
    arch = space.from_genotype(DARTS_V2)
    assert arch.normal[:2] == ((0, "sep_conv_3x3"), (1, "sep_conv_3x3"))
    assert space.from_genotype(repr(DARTS_V2).replace("[2, 3, 4, 5]", "range(2, 6)")) == arch
    assert space.from_genotype(list(DARTS_V2)) == arch
    assert space.build(arch, 10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ArchError, match="concat"):
        make_space("nasnet", nodes=4, concat="loose").from_genotype(DARTS_V2)
    with pytest.raises(ArchError, match="nodes=4"):
        make_space("nasnet").from_genotype(DARTS_V2)
    with pytest.raises(ArchError):
        space.from_genotype("Genotype(normal=__import__('os'))")


def test_channels_last_and_autocast():
    space = make_space("nasnet", **TINY)
    arch = space.sample(np.random.default_rng(7))
    sup = space.supernet(10).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sup(x, arch).shape == (2, 10)
        assert space.build(arch, 10)(x).shape == (2, 10)


def test_fair_archs_use_every_op_of_every_slot_once():
    space = make_space("nasnet", nodes=3, ops="lanas", channels=4, blocks=[1, 1])
    archs = space.fair_archs(np.random.default_rng(0))
    assert len(archs) == len(space.ops)
    for a in archs:
        space.validate(a)
    for cell in ("normal", "reduce"):
        slots = list(zip(*(getattr(a, cell) for a in archs)))
        assert all(sorted(op for _, op in slot) == sorted(space.ops) for slot in slots)
        assert all(len({inp for inp, _ in slot}) == 1 for slot in slots)  # one input per slot per step


def _one_edge_changes(space, arch):
    """Every arch that differs from `arch` in one edge (its input or its op)."""
    cells = [list(c) for c in space._cells(arch)]
    for c, cell in enumerate(cells):
        for k, (inp, op) in enumerate(cell):
            for new in [(i, o) for i in range(k // 2 + 2) for o in space.ops if (i, o) != (inp, op)]:
                changed = [list(x) for x in cells]
                changed[c][k] = new
                yield space._join([tuple(x) for x in changed])


@pytest.mark.parametrize("opts", VARIANTS + [dict(channels=16, blocks=[0, 2, 2], ops="sep_conv_3x3,skip_connect")])
def test_largest_and_smallest_bound_every_arch_by_mflops(opts):
    """Sandwich sampling's extremes (by MFLOPs, then params): no sample and no one-edge change beats them."""
    space = make_space("nasnet", **opts)
    big, small = space.largest(), space.smallest()
    space.validate(big)
    space.validate(small)
    key = lambda a: (space.cost(a).mflops, space.cost(a).params)  # noqa: E731
    rng = np.random.default_rng(8)
    samples = [key(space.sample(rng)) for _ in range(500)]
    assert key(small) < min(samples) and max(samples) < key(big)
    assert all(key(a) <= key(big) for a in _one_edge_changes(space, big))
    assert all(key(a) >= key(small) for a in _one_edge_changes(space, small))
    assert space.cost(big).params > space.cost(small).params
    ref = count_thop(space.build(big, 10), 32)
    assert space.cost(big).mflops == pytest.approx(ref.mflops, rel=0.01)
