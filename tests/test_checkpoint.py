"""Checkpoint I/O: round trip, torn files detected, fallback to the previous generation, unsafe refused."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
import torch

from core.checkpoint import load_checkpoint, load_latest, previous_path, rng_state, save_checkpoint, set_rng_state
from core.errors import CheckpointError, UserError
from core.jsonl import append_jsonl, read_jsonl, truncate_torn_tail


def _state(v: float) -> dict:
    return {"model": {"w": torch.full((4, 4), v)}, "epoch": int(v), "config": {"lr": 0.1}}


def test_round_trip_and_previous_generation(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1), p)
    save_checkpoint(_state(2), p)
    assert load_checkpoint(p)["epoch"] == 2 and torch.equal(load_checkpoint(p)["model"]["w"], torch.full((4, 4), 2.0))
    assert load_checkpoint(previous_path(p))["epoch"] == 1
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


@pytest.mark.parametrize("cut", [0, 1, 100, 0.5, -10])
def test_truncated_checkpoint_detected_and_previous_used(tmp_path, cut):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1), p)
    save_checkpoint(_state(2), p)
    data = p.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut % len(data))
    p.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a checkpoint"):
        load_checkpoint(p)
    state, used = load_latest(p)
    assert state["epoch"] == 1 and used == previous_path(p)


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "_format": 1}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(p)
    assert not marker.exists()
    with open(tmp_path / "raw.pt", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "raw.pt")
    assert not marker.exists()


def test_disk_full_leaves_previous_intact(tmp_path, monkeypatch):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1), p)

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(UserError, match="disk is full"):
        save_checkpoint(_state(2), p)
    monkeypatch.undo()
    assert load_checkpoint(p)["epoch"] == 1
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint({"rng": state}, tmp_path / "r.pt")
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_jsonl_torn_line(tmp_path):
    p = tmp_path / "j.jsonl"
    for i in range(3):
        append_jsonl(p, {"i": i})
    with open(p, "ab") as fh:
        fh.write(b'{"i": 3, "tor')
    assert [r["i"] for r in read_jsonl(p)] == [0, 1, 2]
    append_jsonl(p, {"i": 4})  # a later append starts on a fresh line
    assert [r["i"] for r in read_jsonl(p)] == [0, 1, 2, 4]
    with open(p, "ab") as fh:
        fh.write(b'{"i": 5')
    truncate_torn_tail(p)
    assert p.read_bytes().endswith(b"\n") and len(read_jsonl(p)) == 4


class _DeviceTensor(torch.Tensor):
    """Stands in for a tensor that `map_location="cuda"` put on the GPU: no `.numpy()` until `.cpu()`."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def cpu(self, *args, **kwargs):
        return torch.Tensor(self).as_subclass(torch.Tensor).clone()


def test_rng_state_restores_from_tensors_loaded_onto_a_device():
    import random

    import numpy as np

    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    moved = {**state, "numpy": [v.as_subclass(_DeviceTensor) if torch.is_tensor(v) else v for v in state["numpy"]]}
    moved["torch"] = state["torch"].as_subclass(_DeviceTensor)
    set_rng_state(moved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
