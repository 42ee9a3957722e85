"""Load a user's object by import path: `package.module:Name` or `path/to/file.py:Name`.

Importing runs code, so an import path is followed only when the user gave it: on the command line
or in a config file they named. A name read from a file (a checkpoint, a topk.json, an architecture
file, a journal) must be a registered name; `untrusted_import` is the one-line error for the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from core.errors import UserError


def is_import_path(name: str) -> bool:
    """Whether `name` would be imported (`module:attr` or `file.py:attr`) rather than looked up."""
    return ":" in name


def untrusted_import(name: str, what: str, registered: list[str], flag: str) -> UserError:
    """The error for an import path that did not come from the user: names it and how to allow it."""
    return UserError(
        f"{what} {name!r} is not a registered {what} ({', '.join(registered)}) and an import path is only "
        f"followed when you give it yourself: pass {flag} {name} on the command line (or in your --config) "
        "if you trust that code"
    )


def load_object(spec: str, what: str = "object") -> Any:
    """Return the object named by `spec` (`module:attr`); `UserError` saying what to fix if not found.

    Imports (and for a `.py` path executes) code: call it only with a name the user gave.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{what} {spec!r} must look like module:Name or path/to/file.py:Name")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"{what} file {path} does not exist")
            mod_id = f"_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(mod_id, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_id] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {what} module {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"{what} module {module_name!r} has no attribute {attr!r}") from None
