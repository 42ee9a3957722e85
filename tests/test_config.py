"""Configuration: defaults < preset < file < flags; unknown keys and bad values are user errors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from core.config import CommonConfig, add_arguments, build_config, opt, parse_key_values, resolve
from core.errors import UserError


@dataclass
class Toy(CommonConfig):
    epochs: int = opt(3, "epochs")
    lr: float = opt(0.1, "learning rate")
    blocks: list[int] = opt([2, 2], "cells per stage")
    space_opts: dict = opt({}, "space options")


def _parse(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p, Toy)
    return p.parse_args(list(argv))


def test_precedence_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\nlr: 0.5\nsupernet:\n  epochs: 9\n")
    cfg = resolve(
        Toy, _parse("--config", str(f), "--lr", "0.25", "--blocks", "1,3"), stage="supernet", stages=("supernet",)
    )
    assert cfg.epochs == 9 and cfg.lr == 0.25 and cfg.blocks == [1, 3]
    cfg = resolve(Toy, _parse("--space-opts", "nodes=4", "--space-opts", "blocks=2,2"), stage="x")
    assert cfg.space_opts == {"nodes": 4, "blocks": [2, 2]}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"nope": 1}, "unknown option 'nope'"),
        ({"epochs": "many"}, "cannot read"),
        ({"device": "tpu"}, "not one of"),
        ({"search_size": -1}, "search-size"),
        ({"resume": "/no/such.pt"}, "no such file"),
    ],
)
def test_bad_values(values, message):
    with pytest.raises(UserError, match=message):
        build_config(Toy, values)


def test_bad_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve(Toy, _parse("--config", str(f)), stage="x")
    f.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        resolve(Toy, _parse("--config", str(f)), stage="x")


def test_key_values():
    assert parse_key_values(["a=1", "b=x", "c=0.5,1"], "--o") == {"a": 1, "b": "x", "c": [0.5, 1]}
    with pytest.raises(UserError):
        parse_key_values(["novalue"], "--o")
