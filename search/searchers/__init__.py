"""Searchers: LaNAS, regularized evolution, random search, or a user's class by import path."""

from __future__ import annotations

from typing import Any

from core.errors import UserError
from supernet.spaces.base import Space

from .base import Constraint, Searcher
from .evolution import RegularizedEvolution
from .lanas import LaNAS
from .random_search import RandomSearch

SEARCHERS: dict[str, type[Searcher]] = {"lanas": LaNAS, "evolution": RegularizedEvolution, "random": RandomSearch}


def make_searcher(
    name: str, space: Space, seed: int, constraint: Constraint | None = None, *, trusted: bool = False, **opts: Any
) -> Searcher:
    """A searcher by name, or by `module:Class` (a `Searcher` subclass taking `(space, rng_seed, constraint, **opts)`)
    when `trusted`: the name and `opts` came from the user's command line or config, never from a file."""
    from core.imports import is_import_path, load_object, untrusted_import

    if is_import_path(name) and not trusted:
        raise untrusted_import(name, "searcher", list(SEARCHERS), "--searcher")
    if is_import_path(name):
        cls = load_object(name, what="searcher")
        needed = ("propose", "observe", "state_dict", "load_state_dict")
        if not (isinstance(cls, type) and all(callable(getattr(cls, m, None)) for m in needed)):
            raise UserError(f"searcher {name!r} must be a class with {', '.join(needed)} (see search.searchers.base)")
    elif name in SEARCHERS:
        cls = SEARCHERS[name]
    else:
        raise UserError(f"unknown searcher {name!r}: choose one of {', '.join(SEARCHERS)} or give module:Class")
    try:
        return cls(space, seed, constraint, **opts)
    except TypeError as exc:  # unknown or misspelt option
        raise UserError(f"bad options for searcher {name!r}: {exc}") from None


__all__ = ["SEARCHERS", "Searcher", "LaNAS", "RegularizedEvolution", "RandomSearch", "make_searcher"]
