#!/usr/bin/env python
"""Command line of the toolkit: parse, set up logging, seeds and threads, then dispatch.

    python run.py supernet --preset demo      train a weight-sharing supernet
    python run.py search   --preset demo      LaNAS (or evolution, random) over the supernet
    python run.py retrain  --preset demo      retrain the best architectures from scratch
    python run.py pipeline --preset demo      all three in one run directory
    python run.py export   --run-dir ...      torch.export (.pt2) and ONNX of a retrained model
    python run.py latency-table --space mbconv  per-unit latency table of a space on this machine
    python run.py info [PATH]                 environment, or what a checkpoint/run holds

Every stage takes `--config FILE`, `--preset NAME` and per-option flags (`--help` lists them).
Errors a user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

STAGES = ("supernet", "search", "retrain", "pipeline")  # sections of a YAML config
# name: (config class, entry function, one-line description)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "supernet": ("supernet.config:SupernetConfig", "supernet.train:main", "train a weight-sharing supernet"),
    "search": ("search.config:SearchConfig", "search.loop:run_search", "search architectures (LaNAS and baselines)"),
    "retrain": ("retrain.config:RetrainConfig", "retrain.train:main", "retrain architectures from scratch"),
    "pipeline": ("pipeline.config:PipelineConfig", "pipeline.run:main", "supernet, search and retrain in one run"),
    "export": ("retrain.config:ExportConfig", "retrain.export:main", "export a retrained model (torch.export, ONNX)"),
    "latency-table": ("supernet.latency:LatencyTableConfig", "supernet.latency:table_main", "measure a latency table"),
    "latency": ("supernet.latency:LatencyConfig", "supernet.latency:latency_main", "predicted and measured latency"),
}
try:  # the benchmarks (bench-*) register their own commands; an installed toolkit comes without them
    from bench import COMMANDS as BENCH_COMMANDS
except ModuleNotFoundError as exc:
    if exc.name != "bench":
        raise
    BENCH_COMMANDS = {}
COMMANDS.update(BENCH_COMMANDS)


def _load(spec: str) -> Any:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (what is wrong, where to look) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


MISSING: dict[str, str] = {}  # command -> the installed-nowhere package its import needs


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    from core.config import add_arguments

    MISSING.clear()
    parser = OneLineParser(prog="run.py", description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    available: dict[str, Any] = {}
    for name, (cfg_spec, _, text) in COMMANDS.items():
        try:
            cfg_cls = _load(cfg_spec)
        except (ImportError, AttributeError) as exc:
            top = (getattr(exc, "name", None) or "").split(".")[0]
            if top and not (Path(__file__).parent / top).exists():  # a third-party package is missing
                MISSING[name] = top
            sub.add_parser(name, help=f"{text} (not built yet)", description=f"{text}: not built yet")
            continue
        p = sub.add_parser(name, help=text, description=f"{text}. {cfg_cls.__doc__ or ''}".strip())
        add_arguments(p, cfg_cls)
        available[name] = cfg_cls
    info = sub.add_parser("info", help="environment, or what a checkpoint or run directory holds")
    info.add_argument("path", nargs="?", help="a checkpoint file or a run directory")
    return parser, available


def run_info(path: str | None) -> dict[str, Any]:
    from core.inspect import describe_path
    from core.runtime import environment

    return describe_path(path) if path else environment()


def main(argv: list[str] | None = None) -> int:
    from core.errors import UserError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub
    parser, available = build_parser()
    command = next(iter(sys.argv[1:] if argv is None else argv), "")
    if command in MISSING:  # before parsing: its options could not be registered
        print(f"error: '{command}' needs the package '{MISSING[command]}', which is not installed in this "
              f"Python ({sys.executable}); install as README says, or activate the environment that has it",
              file=sys.stderr)  # fmt: skip
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "info":
            print(json.dumps(run_info(args.path), indent=2, default=str))
            return 0
        if args.command not in available:
            raise UserError(f"'{args.command}' is not built yet in this version; see the open issues")
        return dispatch(args, available[args.command])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command with --resume auto to continue", file=sys.stderr)
        return 130


def dispatch(args: argparse.Namespace, cfg_cls: type) -> int:
    import contextlib

    from core import distributed, runtime
    from core.config import resolve
    from core.rundir import RunDir, deferred_run_config, resolve_run_dir, run_dir_lock

    cfg = resolve(cfg_cls, args, stage=args.command, stages=STAGES)
    quiet = bool(getattr(cfg, "quiet", False))
    log_file = None
    run_dir = None
    if hasattr(cfg, "run_dir"):
        run_dir = resolve_run_dir(cfg, args.command, args.preset)
        log_file = RunDir(run_dir).log
    runtime.setup_logging(quiet=quiet, log_file=log_file)
    runtime.set_threads(getattr(cfg, "threads", 0))
    if hasattr(cfg, "seed"):
        runtime.seed_everything(cfg.seed)
    with contextlib.ExitStack() as stack:
        if run_dir is not None:
            # one writer per run directory (rank 0 holds it for all ranks of a torchrun job); the config is
            # recorded only once the command's inputs were accepted, so a refused one leaves the old record
            main_rank = int(os.environ.get("RANK", "0")) == 0
            if main_rank:
                stack.enter_context(run_dir_lock(run_dir, args.command))
            record = RunDir(run_dir).config(args.command).name
            stack.enter_context(deferred_run_config(cfg, run_dir, record, enabled=main_rank))
        try:
            result = _load(COMMANDS[args.command][1])(cfg)
        finally:
            distributed.cleanup()
    if result and distributed.is_main() and not quiet:
        logging.getLogger("run").info("done: %s", json.dumps(result, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
