"""Few-shot supernets on every space: split after the warm-up, routing in training and in the search's
evaluator, exact resume across the split, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.checkpoint import load_checkpoint
from core.errors import UserError
from search.evaluators.supernet import SupernetEvaluator
from supernet.config import SupernetConfig
from supernet.fewshot import FewShotSupernet
from supernet.train import SupernetTrainer
from tests.reliability.helpers import cli, error_line

torch.set_num_threads(1)
SPACES = {
    "nb201": ({"channels": 8, "cells": 1}, "edge3"),
    "nasnet": ({"channels": 4, "blocks": [1, 1], "nodes": 2, "ops": "lanas"}, "normal0"),
    "mbconv": ({"stem": "cifar", "depths": [1, 2], "kernels": [3], "expands": [3], "width_mult": 0.25}, "depth2"),
    "resnet20": ({"blocks": 1}, "stage2"),
}


def make_cfg(tmp_path, space: str, **kw) -> SupernetConfig:
    opts, decision = SPACES[space]
    base = dict(run_dir=str(tmp_path), space=space, space_opts=opts, few_shot=f"{decision}:2", epochs=2,
                batch_size=16, train_images=32, search_size=500, recal_images=32, panel_random=1, quiet=True,
                lr=0.05, seed=3, checkpoint_minutes=0)  # fmt: skip
    base.update(kw)
    return SupernetConfig(**base)


def _trainer(cfg: SupernetConfig) -> SupernetTrainer:
    trainer = SupernetTrainer(cfg)
    trainer.data.search = trainer.data.search.subset(torch.arange(32))  # keep the panel cheap
    return trainer


@pytest.mark.parametrize("space", list(SPACES))
def test_split_trains_each_sub_supernet_and_the_evaluator_routes(tmp_path, space):
    trainer = _trainer(make_cfg(tmp_path, space))
    net = trainer.net
    assert isinstance(net, FewShotSupernet) and trainer.split_step == 2 and trainer.total_steps == 4
    result = trainer.fit()
    assert result["step"] == 4 and bool(net.is_split)
    a, b = (dict(s.named_parameters()) for s in net.subs)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # after the split each copy trained on its own archs
    state = load_checkpoint(tmp_path / "supernet" / "last.pt")
    assert state["few_shot"]["decision"] == SPACES[space][1] and state["few_shot"]["k"] == 2
    # the search's evaluator rebuilds the few-shot supernet and scores an arch with its own sub-supernet
    ev = SupernetEvaluator(trainer.space, tmp_path / "supernet" / "last.pt", recal_images=0, device="cpu")
    assert isinstance(ev.net, FewShotSupernet)
    rng = np.random.default_rng(0)
    archs = [trainer.space.sample(rng) for _ in range(12)]
    routes = {ev.net.route(x) for x in archs}
    assert routes == {0, 1}
    arch = next(x for x in archs if ev.net.route(x) == 1)
    x = torch.randn(2, 3, trainer.space.input_size, trainer.space.input_size)
    ev.net.eval()
    with torch.no_grad():
        assert torch.equal(ev.net(x, arch), ev.net.subs[1](x, arch))
        assert not torch.equal(ev.net(x, arch), ev.net.subs[0](x, arch))
    assert np.isfinite(ev.evaluate([arch])[0]["metric"])


def test_sub_supernets_start_from_the_parent_with_its_optimizer_state(tmp_path):
    trainer = _trainer(make_cfg(tmp_path, "nb201", max_steps=2))
    trainer.fit()  # the parent trained 2 steps, not split yet (the split is at the start of step 2)
    net = trainer.net
    assert not bool(net.is_split)
    net.split(trainer.optimizer)
    for p, q in zip(net.subs[0].parameters(), net.subs[1].parameters()):
        assert torch.equal(p, q)
        if p in trainer.optimizer.state:
            assert torch.equal(
                trainer.optimizer.state[p]["momentum_buffer"], trainer.optimizer.state[q]["momentum_buffer"]
            )
            assert trainer.optimizer.state[p]["momentum_buffer"] is not trainer.optimizer.state[q]["momentum_buffer"]
    assert any(p in trainer.optimizer.state for p in net.subs[1].parameters())


@pytest.mark.parametrize("killed_at", [1, 3])
def test_exact_resume_before_and_after_the_split(tmp_path, killed_at):
    _trainer(make_cfg(tmp_path / "a", "nb201")).fit()
    _trainer(make_cfg(tmp_path / "b", "nb201", max_steps=killed_at)).fit()
    _trainer(make_cfg(tmp_path / "b", "nb201", resume="auto")).fit()
    a, b = (load_checkpoint(tmp_path / r / "supernet" / "last.pt")["model"] for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="few-shot split"):  # a resume with another split is refused
        _trainer(make_cfg(tmp_path / "b", "nb201", few_shot="edge1:2", resume="auto")).fit()


def test_bad_few_shot_exits_2_with_one_line(tmp_path, capsys):
    base = ["supernet", "--space", "nb201", "--space-opts", "channels=4", "--space-opts", "cells=1", "--run-dir",
            tmp_path, "--threads", "1", "--quiet", "--epochs", "1"]  # fmt: skip
    code, err = cli([*base, "--few-shot", "edge9"], capsys)
    assert code == 2 and "has no decision 'edge9'; choose one of: edge0, edge1" in error_line(err)
    code, err = cli([*base, "--few-shot", "edge0:9"], capsys)
    assert code == 2 and "K must be between 2 and the 5 choices" in error_line(err)
    code, err = cli([*base, "--few-shot", "edge0:x"], capsys)
    assert code == 2 and "must be an integer" in error_line(err)
