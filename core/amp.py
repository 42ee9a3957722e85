"""Mixed precision with `torch.amp` (NVIDIA apex's amp is deprecated in its favour)."""

from __future__ import annotations

import contextlib

import torch

from core.errors import UserError

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_amp(amp: str, device: torch.device) -> None:
    """fp16 needs CUDA (its grad scaler guards against underflow); bf16 runs on CPU and CUDA."""
    if amp == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU (or --amp off)")


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for `--amp off|fp16|bf16`."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[amp])


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A grad scaler, active only for fp16 on CUDA (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))
