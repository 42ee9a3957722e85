"""Layer primitives: cell ops shapes, sliced MBConv == static MBConv, views not copies, drop path."""

from __future__ import annotations

import pytest
import torch

from core.errors import UserError
from ops.cell_ops import OP_SETS, OPS, make_op, resolve_ops
from ops.drop_path import drop_path
from ops.mbconv import DynamicMBConv, MBConv, make_divisible

torch.set_num_threads(1)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_cell_op_shapes(name, stride):
    x = torch.randn(2, 8, 16, 16)
    assert make_op(name, 8, stride)(x).shape == (2, 8, 16 // stride, 16 // stride)


def test_resolve_ops():
    assert resolve_ops("lanas") == ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5")
    assert resolve_ops(None) == OP_SETS["darts"] and len(OP_SETS["darts"]) == 7
    assert resolve_ops("skip_connect, none") == ("skip_connect", "none")
    for bad in ("conv_9x9", ["skip_connect", "skip_connect"], []):
        with pytest.raises(UserError):
            resolve_ops(bad)


def test_make_divisible():
    assert [make_divisible(v) for v in (4, 16, 20, 10, 1280 * 0.25)] == [8, 16, 24, 16, 320]


@pytest.mark.parametrize("transform", [False, True])
@pytest.mark.parametrize("cfg", [(8, 3, 3, 8, 1), (8, 5, 6, 16, 2), (16, 7, 4, 8, 1), (8, 3, 1, 8, 1)])
def test_dynamic_mbconv_equals_static(cfg, transform):
    in_ch, k, e, out_ch, stride = cfg
    dyn = DynamicMBConv(16, 16, (3, 5, 7), 6, stride, kernel_transform=transform)
    with torch.no_grad():
        for p in dyn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, in_ch, 9, 9)
    dyn.train()(torch.randn(3, in_ch, 9, 9), k, e, out_ch)  # running stats of the slice move
    static = dyn.export_into(MBConv(in_ch, out_ch, k, stride, e), in_ch, k, e, out_ch)
    dyn.eval(), static.eval()
    with torch.no_grad():
        assert (dyn(x, k, e, out_ch) - static(x)).abs().max() < 1e-5
    assert static.has_skip == (stride == 1 and in_ch == out_ch)


def test_kernel_crop_is_a_view():
    dyn = DynamicMBConv(8, 8, (3, 5, 7), 6, 1)
    w = dyn.kernel(24, 3)
    assert w.shape == (24, 1, 3, 3) and w.data_ptr() != 0
    assert w.untyped_storage().data_ptr() == dyn.conv_dw.weight.untyped_storage().data_ptr()
    assert torch.equal(w, dyn.conv_dw.weight[:24, :, 2:5, 2:5])


def test_drop_path():
    x = torch.ones(1000, 4)
    assert drop_path(x, 0.3, training=False) is x
    y = drop_path(x, 0.3, training=True)
    kept = (y[:, 0] > 0).float().mean().item()
    assert 0.6 < kept < 0.8 and torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / 0.7))
