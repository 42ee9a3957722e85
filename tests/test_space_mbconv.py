"""MBConv space: round trips, validation, supernet == extract, cost == thop, EfficientNet-B0 pin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from core.errors import ArchError
from supernet.flops import count_thop
from supernet.spaces.base import make_space
from supernet.spaces.mbconv import MBConvArch

torch.set_num_threads(1)
TINY = dict(stem="cifar", width_mult=0.25, depths=[1, 2], widths=[0.5, 1.0], resolutions=[24, 32])
VARIANTS = [TINY, dict(TINY, kernel_transform=True, expands=[1, 3, 6]), dict(stem="imagenet", resolutions=[160, 224])]


@pytest.mark.parametrize("opts", VARIANTS)
def test_round_trips(opts):
    space = make_space("mbconv", **opts)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(100):
        arch = space.sample(rng)
        space.validate(arch)
        seen.add(arch)
        vec = space.encode(arch)
        assert vec.shape == (space.encoding_dim,)
        assert space.decode(vec) == arch
        assert space.from_json(json.loads(json.dumps(space.to_json(arch)))) == arch
        assert space.from_str(space.to_str(arch)) == arch
        mutant = space.mutate(arch, rng)
        space.validate(mutant)
        assert mutant != arch
    assert len(seen) > 90
    for arch in (space.largest(), space.smallest()):
        assert space.decode(space.encode(arch)) == arch
    assert space.cost(space.largest()).mflops > space.cost(space.smallest()).mflops
    assert make_space("mbconv", **space.options()).encoding_dim == space.encoding_dim


def _stage0(a: MBConvArch, ks: tuple, es: tuple) -> MBConvArch:
    return MBConvArch(a.resolution, (ks,) + a.kernels[1:], (es,) + a.expands[1:], a.widths)


@pytest.mark.parametrize(
    "mangle, part",
    [
        (lambda a: MBConvArch(99, a.kernels, a.expands, a.widths), "resolution"),
        (lambda a: MBConvArch(a.resolution, a.kernels[:-1], a.expands, a.widths), "kernels"),
        (lambda a: _stage0(a, (4,), (3,)), "stage 0 block 0 kernel"),
        (lambda a: _stage0(a, a.kernels[0], (5,) * len(a.kernels[0])), "stage 0 block 0 expand"),
        (lambda a: _stage0(a, (3,) * 3, (3,) * 3), "stage 0 depth"),
        (lambda a: MBConvArch(a.resolution, a.kernels, a.expands, (0.7,) + a.widths[1:]), "stage 0 width"),
        (lambda a: _stage0(a, (3,), (3, 3)), "stage 0"),
        (lambda a: (a.resolution, a.kernels), "MBConvArch"),
    ],
)  # fmt: skip
def test_validation_names_the_part(mangle, part):
    space = make_space("mbconv", **TINY)
    arch = space.sample(np.random.default_rng(1))
    with pytest.raises(ArchError, match=part):
        space.validate(mangle(arch))
    for bad in ("", "r32|x", "q32|1:k3e3"):
        with pytest.raises(ArchError):
            space.from_str(bad)
    with pytest.raises(ArchError):
        space.from_json({"space": "mbconv", "resolution": 32})


@pytest.mark.parametrize("opts", VARIANTS[:2])
def test_extract_equals_supernet(opts):
    space = make_space("mbconv", **opts)
    sup = space.supernet(10)
    with torch.no_grad():  # a kernel transform away from identity, so that it is exercised
        for name, p in sup.named_parameters():
            if "transforms" in name:
                p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(2)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(18)]
    for arch in archs:
        x = torch.randn(2, 3, arch.resolution, arch.resolution)
        sup.train()
        with torch.no_grad():
            sup(torch.randn(2, 3, arch.resolution, arch.resolution), arch)  # move the sliced running stats
        sup.eval()
        net = space.extract(sup, arch).eval()
        with torch.no_grad():
            ref = sup(x, arch)
            sup.set_active(arch)
            assert torch.equal(sup(x), ref)
            assert (net(x) - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("opts", VARIANTS[:2])
def test_cost_matches_thop(opts):
    space = make_space("mbconv", **opts)
    rng = np.random.default_rng(3)
    for arch in [space.largest()] + [space.sample(rng) for _ in range(4)]:
        cost, ref = space.cost(arch, 10), count_thop(space.build(arch, 10), arch.resolution)
        assert cost.mflops == pytest.approx(ref.mflops, rel=0.01)
        assert cost.params == pytest.approx(ref.params, rel=0.01)


def test_efficientnet_b0_matches_timm():
    space = make_space("mbconv", stem="imagenet")
    arch = space.efficientnet_b0()
    ours = count_thop(space.build(arch, 1000), 224)
    ref = count_thop(timm.create_model("efficientnet_b0", pretrained=False), 224)
    assert ours.params == pytest.approx(ref.params, rel=0.02)
    assert ours.mflops == pytest.approx(ref.mflops, rel=0.02)
    # Pinned: about 5.29M params and 0.39 GMACs, as timm and the EfficientNet paper give.
    assert ours.params == pytest.approx(5.29, rel=0.02) and ours.mflops == pytest.approx(386, rel=0.02)
    assert space.cost(arch, 1000).mflops == pytest.approx(ours.mflops, rel=0.01)


def test_cost_of_10k_samples():
    space = make_space("mbconv", stem="imagenet", resolutions=[192, 224, 256], widths=[0.75, 1.0])
    rng = np.random.default_rng(4)
    archs = [space.sample(rng) for _ in range(10_000)]
    for a in archs[:200]:
        space.cost(a)
    costs = [space.cost(a).mflops for a in archs]  # the speed (10k in < 1 s) is bench-supernet's figure
    assert min(costs) < max(costs) and all(c > 0 for c in costs)


def test_supernet_trains_only_active_slices():
    space = make_space("mbconv", **TINY)
    sup = space.supernet(10)
    arch = space.smallest()
    sup(torch.randn(2, 3, 24, 24), arch).sum().backward()
    deep = sup.stages[0][1]  # second block of stage 0 is inactive at depth 1
    assert all(p.grad is None for p in deep.parameters())
    w = sup.stages[0][0].conv_pw.weight.grad
    assert w.abs().sum() > 0 and w[w.shape[0] // 2 :].abs().sum() == 0  # expand 3 of 6: upper half unused


def test_channels_last_and_autocast():
    space = make_space("mbconv", **TINY)
    arch = space.sample(np.random.default_rng(5))
    sup = space.supernet(10).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, arch.resolution, arch.resolution).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sup(x, arch).shape == (2, 10)
        assert space.build(arch, 10)(x).shape == (2, 10)
