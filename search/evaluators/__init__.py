"""Evaluators: table lookup, a user's `module:function`, and (hooks for) the supernet and training evaluators.

`make_evaluator(cfg, space)` picks one from `SearchConfig.evaluator`. The supernet and training
evaluators need the supernet trainer; they plug in through `register_evaluator(name, factory)`,
where `factory(cfg, space) -> Evaluator` (for example from `search/evaluators/supernet.py`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from core.errors import UserError
from supernet.spaces.base import Space

from .base import Evaluator, FunctionEvaluator, normalise
from .table import TableEvaluator, load_table

EvaluatorFactory = Callable[[Any, Space], Evaluator]
_FACTORIES: dict[str, EvaluatorFactory] = {}
# Modules expected to call `register_evaluator` for these names when imported.
_HOOK_MODULES = {"supernet": "search.evaluators.supernet", "train": "search.evaluators.train"}


def register_evaluator(name: str, factory: EvaluatorFactory) -> None:
    """Make `--evaluator NAME` build `factory(cfg, space)`."""
    _FACTORIES[name] = factory


def _table(cfg: Any, space: Space) -> Evaluator:
    return TableEvaluator(space, cfg.table, cfg.arch_column, cfg.metric, cfg.report_metric)


register_evaluator("table", _table)


def make_evaluator(cfg: Any, space: Space, *, trusted: bool = False) -> Evaluator:
    """The evaluator that `cfg.evaluator` names; `UserError` with the fix when unavailable.

    A `module:function` is imported only when `trusted`: `cfg` is the user's command line or config.
    """
    from core.imports import is_import_path, load_object, untrusted_import

    name = cfg.evaluator
    if is_import_path(name) and not trusted:
        raise untrusted_import(name, "evaluator", sorted({*_FACTORIES, *_HOOK_MODULES}), "--evaluator")
    if is_import_path(name):
        fn = load_object(name, what="evaluator")
        if not callable(fn):
            raise UserError(f"evaluator {name!r} is not callable; give module:function(archs, space)")
        return FunctionEvaluator(fn, space, name)
    if name not in _FACTORIES and name in _HOOK_MODULES:
        try:
            importlib.import_module(_HOOK_MODULES[name])
        except ModuleNotFoundError as exc:
            if exc.name != _HOOK_MODULES[name]:
                raise
    if name not in _FACTORIES:
        raise UserError(f"evaluator {name!r} is not available in this version; use table or module:function")
    return _FACTORIES[name](cfg, space)


__all__ = [
    "Evaluator",
    "FunctionEvaluator",
    "TableEvaluator",
    "load_table",
    "make_evaluator",
    "normalise",
    "register_evaluator",
]
