"""The search loop end to end: journal, top-k, Pareto files, budgets, constraints, and exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import UserError
from core.jsonl import read_jsonl
from search.config import SearchConfig
from search.loop import run_search
from tests.toy_space import ToySpace

from .test_search_evaluators import REAL, toy_table

OPTS = {"decisions": 4, "choices": 4, "seed": 5}


def config(tmp_path, run, table, **kw):
    base = dict(run_dir=str(tmp_path / run), space="tests.toy_space:ToySpace", space_opts=OPTS, evaluator="table",
                table=str(table), arch_column="name", metric="score", report_metric="other", budget=40, batch=4,
                quiet=True, seed=3)  # fmt: skip
    base.update(kw)
    return SearchConfig(**base)


def lines(cfg):
    """Journal lines without the wall-clock field."""
    return [
        {k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(Path(cfg.run_dir) / "search/journal.jsonl")
    ]


def test_end_to_end_with_the_table_evaluator(tmp_path):
    space = ToySpace(**OPTS)
    table = toy_table(tmp_path, space)
    cfg = config(tmp_path, "run", table, max_mflops=20, budget=30)
    summary = run_search(cfg)
    out = Path(cfg.run_dir) / "search"
    for name in ("journal.jsonl", "topk.json", "pareto.json", "pareto.png", "best_so_far.png", "state.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir())
    records = read_jsonl(out / "journal.jsonl")
    assert summary["evaluated"] == len(records) == 30
    assert [r["index"] for r in records] == list(range(30))
    assert all(r["mflops"] <= 20 for r in records)
    for r in records:
        arch = space.from_json(r["arch"])
        assert r["metric"] == pytest.approx(space.score(arch)) and r["report_metric"] == pytest.approx(-r["metric"])
        assert r["encoding"] == [float(v) for v in space.encode(arch)]
    topk = json.loads((out / "topk.json").read_text())
    assert [t["rank"] for t in topk] == [0, 1, 2, 3, 4]  # `run.py retrain --rank R` reads entry R
    assert all(t["space"] == cfg.space and t["space_opts"] == cfg.space_opts for t in topk)
    assert topk[0]["metric"] == max(r["metric"] for r in records)
    assert space.from_json(topk[0]["arch"]) == space.from_str(topk[0]["str"])
    front = json.loads((out / "pareto.json").read_text())
    assert [p["mflops"] for p in front] == sorted(p["mflops"] for p in front)
    assert all(b["metric"] > a["metric"] for a, b in zip(front, front[1:]))
    with pytest.raises(UserError, match="resume"):
        run_search(cfg)  # an existing journal is never overwritten silently


@pytest.mark.parametrize("searcher", ["lanas", "evolution"])
def test_killed_and_resumed_search_writes_the_same_journal(tmp_path, searcher):
    space = ToySpace(**OPTS)
    table = toy_table(tmp_path, space)
    ref = config(tmp_path, "ref", table, searcher=searcher)
    run_search(ref)
    # A run stopped after 20 evaluations, then killed while writing the journal lines of the next
    # batch: two whole lines and a torn third.
    part = config(tmp_path, "part", table, searcher=searcher, budget=20)
    run_search(part)
    journal = Path(part.run_dir) / "search/journal.jsonl"
    ref_text = (Path(ref.run_dir) / "search/journal.jsonl").read_text().splitlines(keepends=True)
    with open(journal, "a") as fh:
        fh.writelines(ref_text[20:22])
        fh.write(ref_text[22][:15])
    resumed = config(tmp_path, "part", table, searcher=searcher, resume="auto")
    summary = run_search(resumed)
    assert summary["evaluated"] == 40
    assert lines(resumed) == lines(ref)
    # Losing the state file too: the journal alone replays the search from the start.
    lost = tmp_path / "lost"
    shutil.copytree(Path(part.run_dir), lost)
    for f in (lost / "search").glob("state*.pt"):
        f.unlink()
    again = config(tmp_path, "lost", table, searcher=searcher, resume="auto", budget=44)
    run_search(again)
    assert lines(again)[:40] == lines(ref)


def test_nb201_search_on_the_real_table(tmp_path):
    if not REAL.is_file():
        pytest.skip(f"{REAL} is absent")
    pytest.importorskip("supernet.spaces.nb201")
    cfg = SearchConfig(run_dir=str(tmp_path / "nb"), space="nb201", evaluator="table", table=str(REAL), batch=5,
                       metric="c10_valid_12ep", report_metric="c10_test_200ep", budget=30, quiet=True)  # fmt: skip
    summary = run_search(cfg)
    assert summary["evaluated"] == 30 and summary["best"]["metric"] > 80
    assert len({r["canonical"] for r in read_jsonl(Path(summary["journal"]))}) == 30
