"""bench-data runs end to end on a tiny generated folder and writes `ratio` per comparison."""

from __future__ import annotations

import json

from bench.data import BenchDataConfig, main


def test_bench_data_smoke(tmp_path):
    out = tmp_path / "data.json"
    cfg = BenchDataConfig(workers=[1], sizes=[32], per_class=8, batch_size=8, repeats=1, train_steps=2, json=str(out))
    main(cfg)
    result = json.loads(out.read_text())
    assert [(r["transform"], r["size"], r["workers"]) for r in result["results"]] == [("train", 32, 1), ("eval", 32, 1)]
    assert all(r["ratio"] > 0 and r["ours_img_s"] > 0 for r in result["results"])
    assert 0 <= result["data_wait"]["data_wait"] <= 1
    assert 60 < result["mean_jpeg_kb"] < 200  # real photos at ImageNet's size and quality, not noise or thumbnails
