"""A distributed helper that works under `torchrun` (NCCL or gloo) and as a single process."""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: torch.device, timeout_minutes: float = 30.0) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return whether it did.

    NCCL on GPUs, gloo on the CPU. Single-process runs are left alone.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(minutes=timeout_minutes)
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None:
        dist.init_process_group(backend, timeout=timeout)
        return True
    # Under torchrun --max-restarts the store outlives a failed attempt: without a prefix per attempt,
    # restarted gloo ranks read the dead ranks' addresses from it and fail to connect.
    store, rank_, world = next(dist.rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"/lanas/attempt_{restart}", store)
    dist.init_process_group(backend, store=store, rank=rank_, world_size=world, timeout=timeout)
    return True


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def cleanup() -> None:
    """Tear the process group down once every rank got here.

    Without the barrier a rank that finishes first can destroy its end while the other still runs a
    last collective or the store's threads, and gloo aborts the slower rank at exit (SIGABRT,
    "terminate called without an active exception"), failing a run that had finished.
    """
    if is_distributed():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def has_unused_parameters(model: torch.nn.Module, *inputs: torch.Tensor) -> bool:
    """Whether a training forward of `model` on `inputs` leaves a trainable parameter out of the graph.

    DDP needs `find_unused_parameters=True` for such a model (a NASNet cell that never reads one of
    its inputs leaves the cell that feeds it dead) and is slower with it, so the trainers ask once,
    before wrapping. The probe changes nothing: BatchNorm statistics are restored, the RNG streams
    forked, and gradients taken with `autograd.grad` (no `.grad` is written).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return False
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    was_training = model.training
    devices = [inputs[0].device] if inputs and inputs[0].device.type == "cuda" else []
    try:
        model.train()
        with torch.random.fork_rng(devices=devices):
            out = model(*inputs)
            total = sum(t.float().sum() for t in _float_tensors(out))
            if not isinstance(total, torch.Tensor) or not total.requires_grad:
                return True  # nothing reaches the output
            grads = torch.autograd.grad(total, params, allow_unused=True)
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
        model.train(was_training)
    return any(g is None for g in grads)


def _float_tensors(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _float_tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _float_tensors(v)
