"""How well does the `--final-k` stage of `run.py bench-nb201` tell good cells apart? Train given cells alone.

    python -m bench.nb201.fidelity --data-dir ../shared/data/cifar10-jpeg.zip --run-dir checkpoints/fid-n5 \
        --space-opts channels=8 --space-opts cells=5 --epochs 1 --workers 2 \
        '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|' ...

Each cell is trained alone exactly as the final stage trains it (`bench.nb201.final.FinalStage`,
results cached under `<run_dir>/final/`, so a bench run with the same settings reuses them), and
its search-split accuracy is printed next to the table's `c10_test_200ep`, with Kendall's tau
between the two when three or more cells are given. The table is read only to print it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bench.nb201.config import BenchNB201Config
from bench.nb201.final import FinalStage
from bench.ranking import kendall_tau
from core.errors import UserError
from core.runtime import set_threads
from search.evaluators.table import load_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cells", nargs="+", help="NAS-Bench-201 cell strings")
    p.add_argument("--data-dir", required=True, help="CIFAR-10 (the JPEG zip or folder)")
    p.add_argument("--table", default="../shared/benchmarks/nb201.csv", help="NAS-Bench-201 table (CSV)")
    p.add_argument("--run-dir", required=True, help="where the cells' runs and fidelity.json go")
    p.add_argument("--space-opts", action="append", default=[], metavar="KEY=VALUE", help="macro network")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs per cell (as --final-epochs)")
    p.add_argument("--workers", type=int, default=1, help="cells trained at once, one thread each")
    p.add_argument("--max-steps", type=int, default=0, help="stop each cell after this many steps (smoke tests)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        opts = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.space_opts)} or {"channels": 8, "cells": 1}
        cfg = BenchNB201Config(data_dir=args.data_dir, table=args.table, final_epochs=args.epochs, threads=1,
                               final_space_opts=opts, final_workers=args.workers, max_steps=args.max_steps)  # fmt: skip
        rows = load_table(args.table, "arch", ("c10_test_200ep",))
        stage = FinalStage(cfg, Path(args.run_dir))
        archs = [stage.space.from_str(c) for c in args.cells]
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    set_threads(1)
    stage.prepare(archs)
    result = []
    for cell, arch in zip(args.cells, archs, strict=True):
        acc = stage.accuracy(arch)["val_acc"]
        truth = rows.get(cell, (float("nan"),))[0]
        result.append({"arch": cell, "val_acc": acc, "c10_test_200ep": truth})
        print(f"{truth:6.2f}  {acc:6.2f}  {cell}")
    if len(result) >= 3:
        tau = kendall_tau([r["val_acc"] for r in result], [r["c10_test_200ep"] for r in result])
        print(f"Kendall tau (trained alone vs table): {tau:.3f}")
    Path(args.run_dir, "fidelity.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
