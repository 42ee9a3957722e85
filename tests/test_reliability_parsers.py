"""Property-based tests: every parser of user input accepts it or raises the project's own error.

Hypothesis feeds random and malformed input (random JSON values, mutated valid architectures,
random text, random YAML and CSV files, random integer lists) to each space's `from_json`,
`from_str` and `validate`, to `core.config.load_yaml` / `build_config`, to the search table
loader and to the LaNet list parser of retrain. Each call must either succeed (and then the result
must round-trip) or raise a `core.errors.UserError` subclass; any other exception (`KeyError`,
`TypeError`, `IndexError`, ...) is a failure, because `run.py` would print a traceback for it.
"""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import UserError

# Modest example counts keep the file at seconds; no example database is written into the tree.
SETTINGS = settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Small instances of every built-in space plus the toy space (cheap to construct).
SPACES = {
    "nb201": {},
    "nasnet": {"nodes": 2, "channels": 4, "blocks": [1, 1], "ops": "lanas"},
    "mbconv": {},
    "resnet20": {},
    "tests.toy_space:ToySpace": {"decisions": 4, "choices": 4, "seed": 5},
}

json_scalars = st.none() | st.booleans() | st.integers(-5, 20) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


def _space(name: str):
    from supernet.spaces.base import make_user_space

    return make_user_space(name, **SPACES[name])


def _accepts_or_user_error(fn, *args):
    """Call fn; return its result, or None when it raised a UserError. Anything else propagates."""
    try:
        return fn(*args)
    except UserError:
        return None


def _mutate_json(value, rng: np.random.Generator, replacement):
    """Replace one randomly chosen leaf or container of a JSON value with `replacement`."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = list(value)[rng.integers(len(value))]
        return {**value, key: _mutate_json(value[key], rng, replacement)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = int(rng.integers(len(value)))
        return [*value[:i], _mutate_json(value[i], rng, replacement), *value[i + 1 :]]
    return replacement


@pytest.mark.parametrize("name", list(SPACES))
@SETTINGS
@given(data=json_values)
def test_from_json_random_values(name, data):
    space = _space(name)
    arch = _accepts_or_user_error(space.from_json, data)
    if arch is not None:
        assert space.from_json(space.to_json(arch)) == arch


@pytest.mark.parametrize("name", list(SPACES))
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), replacement=json_values, drop=st.booleans())
def test_from_json_mutated_valid_arch(name, seed, replacement, drop):
    """A valid arch JSON with one part replaced by random JSON (or one key dropped)."""
    space = _space(name)
    rng = np.random.default_rng(seed)
    good = space.to_json(space.sample(rng))
    if drop and good:
        bad = dict(good)
        bad.pop(list(bad)[rng.integers(len(bad))])
    else:
        bad = _mutate_json(good, rng, replacement)
    arch = _accepts_or_user_error(space.from_json, bad)
    if arch is not None:
        space.validate(arch)
        assert space.from_json(space.to_json(arch)) == arch


@pytest.mark.parametrize("name", list(SPACES))
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 400), junk=st.text(max_size=6))
def test_from_str_mutated_and_random_text(name, seed, cut, junk):
    space = _space(name)
    good = space.to_str(space.sample(np.random.default_rng(seed)))
    for text in (good[:cut] + junk + good[cut:], good[:cut], junk, good.replace("~", junk, 1)):
        arch = _accepts_or_user_error(space.from_str, text)
        if arch is not None:
            assert space.from_str(space.to_str(arch)) == arch


@pytest.mark.parametrize("name", list(SPACES))
@SETTINGS
@given(value=json_values, seed=st.integers(0, 2**32 - 1))
def test_validate_rejects_foreign_values_with_arch_error(name, value, seed):
    """`validate` of anything that is not an arch of this space (other spaces' archs included)."""
    space = _space(name)
    others = [n for n in SPACES if n != name]
    foreign = _space(others[seed % len(others)]).sample(np.random.default_rng(seed))
    for candidate in (value, foreign):
        _accepts_or_user_error(space.validate, candidate)
    with pytest.raises(UserError):
        space.validate(foreign)  # an arch of another space is never accepted


# ---- YAML configs --------------------------------------------------------------------------------

yaml_text = st.text(alphabet=string.printable, max_size=120)


@SETTINGS
@given(text=yaml_text)
def test_load_yaml_random_text(tmp_path, text):
    from core.config import load_yaml

    path = tmp_path / "c.yaml"
    path.write_text(text)
    data = _accepts_or_user_error(load_yaml, path)
    assert data is None or isinstance(data, dict)


@SETTINGS
@given(raw=st.binary(max_size=80))
def test_load_yaml_random_bytes_and_unsafe_tags(tmp_path, raw):
    from core.config import load_yaml

    path = tmp_path / "c.yaml"
    for payload in (raw, b"!!python/object/apply:os.system ['touch " + str(tmp_path / "pwned").encode() + b"']"):
        path.write_bytes(payload)
        _accepts_or_user_error(load_yaml, path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("cls_path", ["supernet.config:SupernetConfig", "search.config:SearchConfig",
                                      "retrain.config:RetrainConfig", "pipeline.config:PipelineConfig"])  # fmt: skip
@SETTINGS
@given(values=st.dictionaries(st.sampled_from(["epochs", "lr", "seed", "batch_size", "space_opts", "resume",
                                               "amp", "dataset", "threads", "budget", "quiet", "bogus-key",
                                               "search_size", "num_classes", "supernet", "rank"]),
                              json_values, max_size=4))  # fmt: skip
def test_build_config_random_values(cls_path, values):
    from core.config import build_config
    from run import _load

    cls = _load(cls_path)
    cfg = _accepts_or_user_error(build_config, cls, values)
    if cfg is not None:
        cfg.validate()


# ---- CSV tables ----------------------------------------------------------------------------------

cells = st.text(alphabet=string.ascii_letters + string.digits + ".-+e,\"' \n", max_size=8)


@SETTINGS
@given(header=st.lists(cells, max_size=4), rows=st.lists(st.lists(cells, max_size=4), max_size=5),
       raw=st.binary(max_size=60))  # fmt: skip
def test_load_table_malformed_csv(tmp_path, header, rows, raw):
    import csv

    from search.evaluators.table import load_table

    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    for variant in ("csv", "bytes"):
        if variant == "bytes":
            path.write_bytes(raw)
        load_table.cache_clear()
        table = _accepts_or_user_error(load_table, str(path), "arch", ("metric",))
        if table is not None:
            assert all(isinstance(v[0], float) for v in table.values())


# ---- LaNet integer lists (retrain inputs) --------------------------------------------------------

lanet_items = st.one_of(st.integers(-3, 12).map(str), st.text(alphabet="0123456789,;[] -x", max_size=4))


@SETTINGS
@given(
    parts=st.lists(st.lists(lanet_items, max_size=12), min_size=1, max_size=3),
    space=st.sampled_from(["nasnet", "nb201", "", "nope"]),
)
def test_lanet_lists(parts, space):
    from retrain.inputs import _from_cells

    text = ";".join(",".join(p) for p in parts)
    result = _accepts_or_user_error(_from_cells, "--lanet", text, space or "nasnet", {"channels": 4, "blocks": [1, 1]})
    if result is not None:
        name, opts, arch_json = result
        assert name == "nasnet" and json.loads(json.dumps(arch_json)) == arch_json
