"""`--genotype`: published DARTS-form cells from the command line, parsed as literals and checked.

Parameter counts are pinned at DARTS's CIFAR-10 evaluation network: 36 initial channels, 20 cells
(blocks=[6, 6, 6]: 18 normal cells and 2 reduction cells), 10 classes, auxiliary head built. The
count without the auxiliary head is the one papers report (DARTS's `count_parameters_in_MB` skips it).
"""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import ArchError, UserError
from retrain.config import RetrainConfig
from retrain.inputs import param_count, resolve_spec
from supernet.spaces.base import make_space
from supernet.spaces.cell_text import read_genotype
from supernet.spaces.nasnet import LANET
from tests.reliability.helpers import cli, error_line

torch.set_num_threads(1)

# DARTS-V2 (Liu et al. 2019, second-order), as printed by DARTS's genotypes.py.
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=range(2, 6))"
)
# LaNet's cell (the public one-shot LaNAS list `LANET`) written in the DARTS form: 7 nodes, the same
# cell as normal and reduction cell, loose ends (states 5..8) concatenated.
LANET_CELL = (
    "[('skip_connect', 0), ('skip_connect', 1), ('sep_conv_3x3', 1), ('skip_connect', 1), ('max_pool_3x3', 2), "
    "('skip_connect', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 3), ('sep_conv_5x5', 4), "
    "('skip_connect', 3), ('max_pool_3x3', 0), ('skip_connect', 3), ('sep_conv_3x3', 1)]"
)
LANET_GENOTYPE = (
    f"Genotype(normal={LANET_CELL}, normal_concat=[5, 6, 7, 8], reduce={LANET_CELL}, reduce_concat=[5, 6, 7, 8])"
)
DARTS_NET = {"channels": 36, "blocks": [6, 6, 6], "auxiliary": True}


def _params(text: str) -> tuple[int, int]:
    genotype, opts = read_genotype(text, dict(DARTS_NET))
    space = make_space("nasnet", **opts)
    net = space.build(space.from_genotype(genotype), 10)
    total = sum(p.numel() for p in net.parameters())
    assert space.cost(space.from_genotype(genotype)).params * 1e6 == pytest.approx(total)  # analytic == built
    return param_count(net), total


def test_darts_v2_parameter_count_at_c36_20_cells():
    genotype, opts = read_genotype(DARTS_V2, {})
    assert opts == {"nodes": 4, "ops": "darts", "concat": "all"}  # all implied by the genotype itself
    without_aux, total = _params(DARTS_V2)
    # DARTS reports 3.3M; its own code counts 3,349,342, and this network adds a 1,152-parameter BN before the pool
    assert without_aux == 3_350_494 and total == 3_826_920


def test_lanet_cell_parameter_count_and_same_as_lanet_list():
    genotype, opts = read_genotype(LANET_GENOTYPE, {})
    assert opts == {"nodes": 7, "ops": "darts", "concat": "loose"}
    listed = make_space("nasnet", nodes=7, ops="lanas", concat="loose", channels=8, blocks=[1, 1])
    assert make_space("nasnet", **{**opts, "channels": 8, "blocks": [1, 1]}).from_genotype(genotype) == (
        listed.from_lanet(LANET)
    )
    without_aux, total = _params(LANET_GENOTYPE)
    assert without_aux == 3_224_134 and total == 3_700_560  # LaNAS reports about 3.2M for its CIFAR-10 LaNet


def test_genotype_file_and_assignment_form(tmp_path):
    file = tmp_path / "genotypes.txt"
    file.write_text(f"DARTS_V2 = {DARTS_V2}\n")
    cfg = RetrainConfig(run_dir=str(tmp_path), genotype=str(file), space_opts={"channels": 8, "blocks": [1, 1]})
    spec, arch_id = resolve_spec(cfg)
    inline, _ = resolve_spec(RetrainConfig(run_dir=str(tmp_path), genotype=DARTS_V2,
                                           space_opts={"channels": 8, "blocks": [1, 1]}))  # fmt: skip
    assert spec == inline and arch_id.startswith("nasnet-") and spec["options"]["nodes"] == 4
    assert spec["arch"]["normal"][7] == [2, "dil_conv_3x3"]
    with pytest.raises(UserError, match="only one of"):
        RetrainConfig(run_dir=str(tmp_path), genotype=DARTS_V2, lanet=",".join(map(str, LANET)))


@pytest.mark.parametrize(
    "text, message",
    [
        ("Genotype(normal=__import__('os').system('true'))", "cannot parse"),
        (DARTS_V2.replace("Genotype(", "exec("), "not Genotype"),
        (DARTS_V2.replace("range(2, 6)", "range(1000000000000)", 1), "range() of a genotype"),
        (DARTS_V2.replace("range(2, 6)", "range(2, 3 ** 99)", 1), "only literals and range(a, b) are read"),
        (DARTS_V2.replace("'dil_conv_3x3', 2", "'conv_9x9', 2"), "op 'conv_9x9' is not in the space's ops"),
        (DARTS_V2.replace("('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ", "", 1), "normal has 3 nodes but reduce has 4"),
        (DARTS_V2.replace("'skip_connect', 0), ('dil", "'skip_connect', 7), ('dil"), "input"),
        (DARTS_V2.replace("normal_concat=range(2, 6)", "normal_concat=[2, 3]"), "normal_concat=[2, 3]"),
        ("no/such/genotype.txt", "no such file"),
    ],
)
def test_bad_genotypes_exit_2_with_one_line(tmp_path, capsys, text, message):
    argv = ["retrain", "--run-dir", tmp_path, "--threads", "1", "--quiet", "--epochs", "1", "--genotype", text]
    code, err = cli(argv, capsys)
    assert code == 2 and message in error_line(err), err
    assert not (tmp_path / "retrain").exists()  # refused before anything was written


def test_ops_outside_the_given_op_set_say_how_to_fix(tmp_path):
    with pytest.raises(ArchError, match="drop ops from --space-opts"):
        read_genotype(DARTS_V2, {"ops": "lanas"})
    genotype, opts = read_genotype(DARTS_V2, {"ops": "darts", "channels": 8, "blocks": [1, 1]})
    assert make_space("nasnet", **opts).from_genotype(genotype).reduce[0] == (0, "max_pool_3x3")


def test_genotype_trains_from_the_command(tmp_path, capsys):
    argv = ["retrain", "--run-dir", tmp_path, "--threads", "1", "--quiet", "--genotype", DARTS_V2,
            "--space-opts", "channels=4", "--space-opts", "blocks=1,1", "--epochs", "1", "--batch-size", "8",
            "--train-images", "8", "--test-images", "8", "--search-size", "100"]  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 0, err
    (out,) = (tmp_path / "retrain").iterdir()
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["options"]["nodes"] == 4 and report["model"]["arch"]["reduce"][0] == [0, "max_pool_3x3"]


def _fields(draw_pairs):
    import hypothesis.strategies as st

    op = st.sampled_from(["sep_conv_3x3", "max_pool_3x3", "skip_connect", "conv_9x9", "", "none"])
    inp = st.one_of(st.integers(-2, 9), st.booleans(), st.text(max_size=2))
    return st.lists(st.tuples(op, inp), max_size=draw_pairs)


def test_random_genotypes_parse_or_fail_with_the_projects_error():
    """Random genotype texts (ops, inputs, concat, mangled syntax) are accepted, and then build, or refused
    with a UserError; never another exception, which would print a traceback."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    concat = st.one_of(st.none(), st.just("range(2, 6)"), st.lists(st.integers(-1, 9), max_size=5).map(str),
                       st.just("range(2, 6, 1)"), st.just("7"))  # fmt: skip
    mangle = st.sampled_from(["", ")", "(", "Genotype", "__import__('os')", ",,", "]"])

    @settings(max_examples=60, deadline=None, database=None)
    @given(_fields(10), concat, _fields(10), concat, mangle, st.integers(0, 400))
    def check(normal, nc, reduce, rc, junk, cut):
        parts = [f"normal={normal!r}", f"reduce={reduce!r}"]
        parts += [f"normal_concat={nc}"] if nc else []
        parts += [f"reduce_concat={rc}"] if rc else []
        text = f"Genotype({', '.join(parts)})"
        text = text[:cut] + junk + text[cut:] if junk else text
        try:
            genotype, opts = read_genotype(text, {"channels": 4, "blocks": [1, 1]})
            make_space("nasnet", **opts).from_genotype(genotype)
        except UserError:
            pass

    check()
