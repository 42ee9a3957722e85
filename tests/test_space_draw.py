"""Each space draws its own architectures for the report (`Space.draw`): a PNG of the right kind."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from supernet.spaces.base import make_space
from supernet.spaces.nasnet import LANET

# (space, options, figure width x height in pixels at the report's 110 dpi): the cell spaces draw
# their cells (NASNet two side by side, NB201 one), the others a strip of blocks.
SPACES = [
    ("nasnet", {"channels": 8, "blocks": [1, 1]}, (1430, 495)),
    ("nasnet", {"channels": 8, "blocks": [1, 1, 1], "per_stage": True, "nodes": 3}, (1430, 495)),
    ("nb201", {}, (770, 440)),
    ("mbconv", {"stem": "cifar", "width_mult": 0.25, "depths": [1, 2]}, (1320, 308)),
    ("resnet20", {}, (1320, 308)),
]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name,opts,size", SPACES, ids=[f"{s[0]}-{i}" for i, s in enumerate(SPACES)])
def test_each_space_draws_its_own_architecture(tmp_path, name, opts, size):
    space = make_space(name, **opts)
    arch = space.sample(np.random.default_rng(0))
    path = tmp_path / "arch.png"
    space.draw(arch, path)
    assert _png_size(path) == size


def test_an_imported_lanet_cell_draws_as_a_nasnet_cell(tmp_path):
    space = make_space("nasnet", nodes=7, ops="lanas", concat="loose", channels=8, blocks=[1, 1])
    space.draw(space.from_lanet(LANET), str(tmp_path / "lanet.png"))  # a str path works too
    assert _png_size(tmp_path / "lanet.png") == (1430, 495)
