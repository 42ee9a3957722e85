"""`run.py export`: `torch.export` (.pt2) and ONNX files of a retrained model, verified against PyTorch.

The network is rebuilt from its self-describing checkpoint (EMA weights by default) and put in eval
mode. `.pt2` is an `ExportedProgram` (`torch.export.export` with a dynamic batch axis, saved with
`torch.export.save`); ONNX goes through the dynamo-based exporter (also `torch.export`); TorchScript, which
torch deprecates, is written only when `--formats` names it. Beside the files go `arch.json` (what
the network is and how to feed it: resolution, mean and std, and its CPU latency) and
`export.json` (what was checked). Each file is loaded back and run on the same random batch as the
PyTorch module (the ONNX file through onnxruntime on the CPU). A largest absolute difference above
`--tolerance` is an error, so a file that would silently compute something else is never left
looking valid. A network that `torch.export` cannot capture is a one-line error naming the
operation, after the other formats are written.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.checkpoint import contents_of
from core.errors import UserError
from core.rundir import RetrainDir, RunDir
from core.safejson import first_line
from retrain.config import ExportConfig
from retrain.inputs import model_from_checkpoint

log = logging.getLogger(__name__)


def find_checkpoint(cfg: ExportConfig) -> Path:
    """`--checkpoint` (a file or a retrain folder), else the retrain folder of `--run-dir` (and `--arch-id`)."""
    if cfg.checkpoint:
        path = Path(cfg.checkpoint)
        path = RetrainDir(path).last if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"--checkpoint {cfg.checkpoint}: no retrain checkpoint there (expected last.pt)")
        return path
    run = RunDir(cfg.run_dir)
    found = [d.arch_id for d in run.retrained()]
    if cfg.arch_id:
        if cfg.arch_id not in found:
            raise UserError(f"no {run.retrain(cfg.arch_id).last}; retrained here: {', '.join(found) or 'none'}")
        return run.retrain(cfg.arch_id).last
    if len(found) != 1:
        which = f"several ({', '.join(found)}): pick one with --arch-id" if found else "none: pass --checkpoint"
        raise UserError(f"{run.retrain_root} holds {which}")
    return run.retrain(found[0]).last


def _max_diff(a: torch.Tensor, b: Any) -> float:
    return float((a - torch.as_tensor(b).to(a)).abs().max())


def export_pt2(net: nn.Module, example: torch.Tensor, path: Path) -> float:
    """`torch.export` with a dynamic batch axis, save, load, compare on `example`; returns the difference."""
    batch = torch.export.Dim.DYNAMIC
    try:
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch raises many types (Unsupported, UserError, TorchRuntimeError, ...)
        raise ExportCaptureError(
            f"torch.export cannot capture this network: {type(exc).__name__}: {first_line(exc, 160)}"
        ) from None
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        return _max_diff(net(example), loaded(example))


class ExportCaptureError(UserError):
    """`torch.export` could not capture the network (the message names the operation)."""


def cpu_latency_ms(net: nn.Module, size: int, repeats: int = 20) -> float:
    """Latency (ms) of one image through `net` on the CPU in eval mode: the fastest call after warm-up."""
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            start = time.perf_counter()
            net(x)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def predicted_latency(table_path: str, spec: dict[str, Any], num_classes: int) -> float:
    """The table's prediction for the exported architecture (its space must be registered and match)."""
    from supernet.latency import LatencyTable
    from supernet.spaces.base import make_space

    if spec.get("source") != "space":
        raise UserError("--latency-table needs a network from a search space, not a timm model")
    table = LatencyTable.load(table_path)
    space = make_space(spec["name"], **spec["options"])
    table.check(space, num_classes)
    return table.predict(space, space.from_json(spec["arch"]))


def export_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> float:
    """Trace, save, reload and compare on `example`; returns the largest absolute difference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow fixed at trace time
        traced = torch.jit.trace(net, example, check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return _max_diff(net(example), loaded(example))


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path, opset: int) -> float:
    """Export through torch.export (the dynamo-based exporter) with a dynamic batch axis, check the graph,
    run it in onnxruntime; returns the largest difference."""
    try:
        import onnx
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (the dynamo-based exporter builds its graph with it)
    except ImportError:
        raise UserError(
            "ONNX export needs the onnx, onnxscript and onnxruntime packages: pip install onnx onnxscript onnxruntime"
        ) from None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates each step
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                net, (example,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), verbose=False,
            )  # fmt: skip
        except Exception as exc:  # as for .pt2: torch raises many types when it cannot capture a network
            raise ExportCaptureError(
                f"ONNX export cannot capture this network: {type(exc).__name__}: {first_line(exc, 160)}"
            ) from None
        program.save(str(path))
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": example.numpy()})
    with torch.no_grad():
        return _max_diff(net(example), out)


def main(cfg: ExportConfig) -> dict[str, Any]:
    """Entry point of `run.py export`; an output folder that cannot be written is a one-line `UserError`."""
    out = Path(cfg.out_dir) if cfg.out_dir else None
    try:
        return _export(cfg)
    except OSError as exc:
        raise _unwritable(exc, out) from None
    except RuntimeError as exc:  # torch's writers wrap a failed write in a RuntimeError
        if isinstance(exc.__context__, OSError) or "cannot be opened" in str(exc) or "open file" in str(exc):
            raise _unwritable(exc.__context__ or exc, out) from None
        raise


def _unwritable(exc: BaseException, out: Path | None) -> UserError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0][:120]
    where = getattr(exc, "filename", None) or out or "the export folder"
    return UserError(f"cannot write the export to {where}: {reason}; pass a writable --out-dir")


def _export(cfg: ExportConfig) -> dict[str, Any]:
    path = find_checkpoint(cfg)
    with contents_of(path, "export a retrain last.pt/ema.pt that this tool wrote"):
        net, state = model_from_checkpoint(path, prefer_ema=cfg.weights == "ema", trusted={cfg.space} - {""})
    if cfg.weights == "ema" and state["weights_used"] != "ema":
        log.warning("%s has no EMA weights (trained with --ema-decay 0): exporting the raw weights", path)
    net = net.float().eval()
    out = Path(cfg.out_dir) if cfg.out_dir else RetrainDir(path.parent).export
    out.mkdir(parents=True, exist_ok=True)
    size = int(state["image_size"])
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(cfg.seed))
    info = {
        "model_spec": state["model_spec"],
        "num_classes": state["num_classes"],
        "classes": state.get("classes"),
        "input": {"shape": ["batch", 3, size, size], "dtype": "float32", "mean": state["mean"], "std": state["std"]},
        "weights": state["weights_used"],
        "checkpoint": str(path),
    }
    info["latency_ms"] = {"measured_cpu": cpu_latency_ms(net, size), "threads": torch.get_num_threads(), "batch": 1}
    if cfg.latency_table:
        info["latency_ms"]["predicted"] = predicted_latency(
            cfg.latency_table, state["model_spec"], state["num_classes"]
        )
    (out / "arch.json").write_text(json.dumps(info, indent=2))
    result: dict[str, Any] = {"out_dir": str(out), "checkpoint": str(path), "weights": state["weights_used"]}
    writers = {
        "pt2": ("model.pt2", export_pt2),
        "torchscript": ("model.ts", export_torchscript),
        "onnx": ("model.onnx", export_onnx),
    }
    failed: ExportCaptureError | None = None
    for fmt in cfg.formats:
        name, writer = writers[fmt]
        args = (cfg.opset,) if fmt == "onnx" else ()
        try:
            diff = writer(net, example, out / name, *args)
        except ExportCaptureError as exc:  # the other formats are still written
            failed = exc
            log.warning("%s", exc)
            continue
        result[fmt] = {"file": str(out / name), "max_abs_diff": diff}
        log.info("wrote %s (max abs difference vs PyTorch: %.3g)", out / name, diff)
        if cfg.verify and not diff <= cfg.tolerance:
            raise UserError(
                f"{fmt} output differs from PyTorch by {diff:.3g} > --tolerance {cfg.tolerance:g}; "
                "try another --opset or report the model"
            )
    (out / "export.json").write_text(json.dumps(result, indent=2))
    if failed is not None:
        raise failed
    return result
