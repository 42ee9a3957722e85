"""Run under torchrun with 2 gloo ranks: train a tiny supernet, dump each rank's weights and archs."""

from __future__ import annotations

import json
import sys

import torch

from core.runtime import set_threads
from supernet.config import SupernetConfig
from supernet.train import SupernetTrainer

set_threads(0)
out = sys.argv[1]
cfg = SupernetConfig(
    run_dir=out,
    space="nb201",
    space_opts={"channels": 8, "cells": 1},
    epochs=1,
    max_steps=4,
    batch_size=32,
    search_size=4800,
    recal_images=32,
    panel_random=0,
    quiet=True,
    seed=5,
    device="cpu",
    checkpoint_minutes=0,
)
trainer = SupernetTrainer(cfg)
seen: list = []
original = trainer.sampler.archs
trainer.sampler.archs = lambda step: seen.append([trainer.space.to_str(a) for a in original(step)]) or original(step)
trainer.fit()
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
# BN running statistics are per rank (DDP broadcasts rank 0's at each forward); compare the weights
torch.save({k: v.detach().clone() for k, v in trainer.net.named_parameters()}, f"{out}/weights.{rank}.pt")
with open(f"{out}/archs.{rank}.json", "w") as fh:
    json.dump(seen, fh)
