"""ResNet-20 channel space: round trips, validation, costs against thop and the paper, extraction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import ArchError
from supernet.flops import count_thop
from supernet.spaces.base import make_space
from supernet.spaces.resnet20 import ChannelArch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def space():
    return make_space("resnet20")


def samples(space, n=100, seed=0):
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_round_trips(space):
    for arch in samples(space):
        space.validate(arch)
        assert hash(arch) == hash(ChannelArch(arch.stages, arch.inner))
        vec = space.encode(arch)
        assert vec.shape == (space.encoding_dim,) == (12,)
        assert space.decode(vec) == arch
        assert space.from_json(json.loads(json.dumps(space.to_json(arch)))) == arch
        assert space.from_str(space.to_str(arch)) == arch
        child = space.mutate(arch, np.random.default_rng(1))
        diff = sum(a != b for a, b in zip(space.encode(arch), space.encode(child)))
        assert diff == 1


def test_size_and_extremes(space):
    assert space.size() == 4**12
    assert space.to_str(space.largest()) == "16.32.64-16.16.16.32.32.32.64.64.64"
    assert space.to_str(space.smallest()) == "4.8.16-4.4.4.8.8.8.16.16.16"
    assert space.cost(space.largest()).mflops > space.cost(space.smallest()).mflops


def test_options_and_rebuild():
    sp = make_space("resnet20", ratios=[0.5, 1.0], blocks=2)
    assert sp.size() == 2 ** (3 + 6)
    again = make_space("resnet20", **sp.options())
    assert again.options() == sp.options() and again.choices == sp.choices


@pytest.mark.parametrize(
    "arch, part",
    [
        (ChannelArch((16, 32, 64), (16,) * 8), "9 inner widths"),
        (ChannelArch((16, 30, 64), (16,) * 9), "stage 2 width"),
        (ChannelArch((16, 32, 64), (16, 16, 16, 32, 32, 32, 64, 64, 7)), "stage 3 block 3 inner width"),
        ((16, 32, 64), "ChannelArch"),
    ],
)
def test_validate_names_the_part(space, arch, part):
    with pytest.raises(ArchError, match=part):
        space.validate(arch)


def test_parse_errors(space):
    with pytest.raises(ArchError, match="must look like"):
        space.from_str("16.32.64")
    with pytest.raises(ArchError, match="must look like"):
        space.from_str("a.b.c-1.2")
    with pytest.raises(ArchError, match="stage 1 width"):
        space.from_str("15.32.64-16.16.16.32.32.32.64.64.64")
    with pytest.raises(ArchError, match="'stages' and 'inner'"):
        space.from_json({"space": "resnet20", "stages": [16, 32, 64]})


def test_resnet20_pins(space):
    # He et al. 2016 report 0.27M params for ResNet-20 (option A shortcuts: 269,722); our option-B
    # projections add 16*32+2*32 + 32*64+2*64 = 2,752. About 41 MMACs is the usual figure.
    ref = count_thop(space.build(space.largest(), 10), 32)
    assert ref.params == pytest.approx(0.269722 + 0.002752, abs=1e-6)
    assert ref.mflops == pytest.approx(40.81, abs=0.01)


def test_cost_equals_thop(space):
    for arch in samples(space, n=8, seed=2) + [space.largest(), space.smallest()]:
        fast, ref = space.cost(arch, 100), count_thop(space.build(arch, 100), 32)
        assert fast.mflops == pytest.approx(ref.mflops, rel=1e-9)
        assert fast.params == pytest.approx(ref.params, rel=1e-9)


def test_cost_of_10k_samples(space):
    archs = samples(space, n=10000, seed=5)
    costs = [space.cost(a) for a in archs]  # the speed (10k in < 1 s) is bench-supernet's figure
    assert len({c.params for c in costs}) > 100


def _scramble_bn(net):
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("opts", [{}, {"blocks": 1, "ratios": [0.5, 1.0]}])
def test_extract_equals_supernet(opts):
    space = make_space("resnet20", **opts)
    torch.manual_seed(0)
    sup = space.supernet(10)
    _scramble_bn(sup)
    sup.eval()
    x = torch.randn(2, 3, 32, 32)
    outs = set()
    for arch in samples(space, n=20, seed=1) + [space.largest(), space.smallest()]:
        net = space.extract(sup, arch).eval()
        with torch.no_grad():
            ref = sup(x, arch)
            sup.set_active(arch)
            assert torch.equal(sup(x), ref)
            assert (net(x) - ref).abs().max().item() < 1e-5
        outs.add(round(ref.sum().item(), 4))
    assert len(outs) > 10


def test_training_updates_only_the_slice(space):
    sup = space.supernet(10).train()
    arch = space.smallest()
    bn = sup.blocks[0].bn1
    before = bn.running_mean.clone()
    sup(torch.randn(4, 3, 32, 32), arch).sum().backward()
    assert not torch.equal(bn.running_mean[:4], before[:4])  # statistics of the slice move
    assert torch.equal(bn.running_mean[4:], before[4:])  # the rest stays
    grad = sup.blocks[0].conv1.weight.grad
    assert grad[:4, :4].abs().sum() > 0 and grad[4:].abs().sum() == 0


def test_channels_last_and_autocast(space):
    sup = space.supernet(10).eval().to(memory_format=torch.channels_last)
    arch = space.sample(np.random.default_rng(0))
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = sup(x, arch)
        out2 = space.extract(sup, arch)(x)
    assert out.shape == out2.shape == (2, 10) and torch.isfinite(out).all()
