"""Run under `torchrun --standalone --nproc_per_node 2`: exercises core.distributed over gloo."""

from __future__ import annotations

import json
import sys

import torch

from core import distributed as dist
from core.runtime import set_threads

set_threads(0)  # one thread per rank on two cores
assert dist.init_distributed(torch.device("cpu"))
r, w = dist.rank(), dist.world_size()
gathered = dist.all_gather_object({"rank": r, "payload": [r] * (r + 1)})
shared = dist.broadcast_object({"seed": 1234 + r})
total = dist.all_reduce_sum(torch.tensor([float(r + 1)]))
dist.barrier()
with open(f"{sys.argv[1]}.{r}", "w") as fh:
    json.dump(
        {
            "rank": r,
            "world": w,
            "gathered": gathered,
            "shared": shared,
            "total": total.item(),
            "threads": torch.get_num_threads(),
        },
        fh,
    )
dist.cleanup()
