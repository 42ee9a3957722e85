"""`run.py export`: torch.export (.pt2), ONNX and, on request, TorchScript of a retrained model."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch

from core.errors import UserError
from retrain.config import ExportConfig
from retrain.export import main as export_main
from retrain.inputs import model_from_checkpoint
from retrain.train import RetrainTrainer
from tests.test_retrain import TINY_MB, make_cfg, tiny_mbconv_arch


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """A retrained MBConv network with a cosine head and EMA weights."""
    run = tmp_path_factory.mktemp("export")
    cfg = make_cfg(run, arch=tiny_mbconv_arch(), space_opts=TINY_MB, head="cosine", ema_decay=0.5, epochs=2)
    RetrainTrainer(cfg).fit()
    return run


def test_export_round_trips_through_onnxruntime(retrained):
    import onnxruntime as ort

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_main(ExportConfig(run_dir=str(retrained), quiet=True))
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))], caught
    assert result["weights"] == "ema" and "torchscript" not in result
    for fmt in ("pt2", "onnx"):
        assert result[fmt]["max_abs_diff"] < 1e-4
    info = json.loads(open(f"{result['out_dir']}/arch.json").read())
    assert info["weights"] == "ema" and info["model_spec"]["head"]["kind"] == "cosine"
    assert info["latency_ms"]["measured_cpu"] > 0 and info["latency_ms"]["batch"] == 1
    net, _ = model_from_checkpoint(result["checkpoint"], prefer_ema=True)
    net.eval()
    x = torch.randn(3, 3, 32, 32)  # another batch size: the batch axis is dynamic
    session = ort.InferenceSession(result["onnx"]["file"], providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = net(x)
        exported = torch.export.load(result["pt2"]["file"]).module()(x)
    assert np.abs(onnx_out - ref.numpy()).max() < 1e-4
    assert torch.allclose(exported, ref, atol=1e-5)
    # the raw weights are not the EMA ones: the exported file follows --weights
    net_raw, _ = model_from_checkpoint(result["checkpoint"], prefer_ema=False)
    with torch.no_grad():
        assert not torch.allclose(net_raw.eval()(x), ref)


def test_export_raw_weights_and_arch_json(retrained, tmp_path):
    result = export_main(
        ExportConfig(run_dir=str(retrained), weights="raw", formats=["torchscript"], out_dir=str(tmp_path), quiet=True)
    )
    assert result["torchscript"]["max_abs_diff"] < 1e-4  # still available when asked for
    info = json.loads((tmp_path / "arch.json").read_text())
    assert info["weights"] == "raw" and info["model_spec"]["source"] == "space" and info["num_classes"] == 10
    assert info["input"]["shape"] == ["batch", 3, 32, 32] and "onnx" not in result


def test_export_without_onnxruntime_is_one_line_error(retrained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(UserError, match="pip install onnx onnxscript onnxruntime") as info:
        export_main(ExportConfig(run_dir=str(retrained), formats=["onnx"], out_dir=str(tmp_path), quiet=True))
    assert "\n" not in str(info.value)


def test_export_needs_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="none: pass --checkpoint"):
        export_main(ExportConfig(run_dir=str(tmp_path), quiet=True))


class _DataDependent(torch.nn.Module):
    """A branch on a tensor's value: tracing fixes it, torch.export refuses to guess."""

    def forward(self, x):
        return x * 2 if x.sum() > 0 else x - 1


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_export_refuses_an_uncapturable_network_in_one_line(tmp_path, fmt):
    from retrain.export import ExportCaptureError, export_onnx, export_pt2

    args = (18,) if fmt == "onnx" else ()
    with pytest.raises(ExportCaptureError, match="cannot capture this network") as info:
        (export_onnx if fmt == "onnx" else export_pt2)(_DataDependent(), torch.randn(2, 3), tmp_path / "m", *args)
    assert "\n" not in str(info.value) and not (tmp_path / "m").exists()


def test_export_writes_the_other_formats_when_pt2_capture_fails(retrained, tmp_path, monkeypatch):
    import retrain.export as export_mod

    def refuse(net, example, path):
        raise export_mod.ExportCaptureError("torch.export cannot capture this network: aten.nonzero")

    monkeypatch.setattr(export_mod, "export_pt2", refuse)
    with pytest.raises(UserError, match="aten.nonzero"):
        export_main(ExportConfig(run_dir=str(retrained), out_dir=str(tmp_path), quiet=True))
    written = json.loads((tmp_path / "export.json").read_text())
    assert (tmp_path / "model.onnx").is_file() and "onnx" in written and "pt2" not in written


def test_export_puts_the_tables_prediction_beside_the_measured_latency(retrained, tmp_path):
    from supernet.latency import build_table
    from supernet.spaces.base import make_space
    from tests.test_retrain import TINY_MB

    table = tmp_path / "t.json"
    space = make_space("mbconv", **TINY_MB)
    cpu = torch.device("cpu")
    build_table(space, table, device=cpu, dtype="fp32", batch=1, num_classes=10, repeats=2, overhead_archs=1, seed=0)
    out = tmp_path / "exp"
    export_main(ExportConfig(run_dir=str(retrained), formats=["pt2"], out_dir=str(out), latency_table=str(table)))
    latency = json.loads((out / "arch.json").read_text())["latency_ms"]
    assert latency["predicted"] > 0 and latency["measured_cpu"] > 0
    other = tmp_path / "other.json"
    build_table(make_space("nb201", channels=4, cells=1), other, device=cpu, dtype="fp32", batch=1, num_classes=10,
                repeats=1, overhead_archs=0, seed=0)  # fmt: skip
    with pytest.raises(UserError, match="measured for space="):
        export_main(ExportConfig(run_dir=str(retrained), formats=["pt2"], out_dir=str(out), latency_table=str(other)))
