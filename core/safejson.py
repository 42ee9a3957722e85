"""Reading JSON (and JSON-like YAML data) from files a user or another program wrote: fail closed.

`json.loads` alone lets hostile or careless input through as a traceback or as values the rest of
the tool cannot handle: `1e999` becomes `inf`, `NaN` is accepted, an integer of thousands of digits
raises a `ValueError` that is not a `JSONDecodeError` (and even `repr` of it fails), and a deeply
nested list raises `RecursionError`, either while parsing or later in whatever walks it. `parse_json`
turns each of these into a `UserError` naming the source and the problem; `check_plain` applies the
same limits to data that was already parsed (YAML, checkpoint metadata); `brief` shows any value in
an error message without failing on it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from core.errors import UserError

MAX_DEPTH = 32  # nesting of lists and dicts; architectures, journals and configs need a handful
MAX_INT_DIGITS = 30  # beyond any count, index or seed the tool uses (seeds end at 2**32 - 1)


class _Bad(ValueError):
    """A value `json.loads` would accept but this tool refuses (raised from the parse hooks)."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Bad(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Bad(f"the number {text[:20]} is out of range")
    return value


def _parse_constant(name: str) -> float:
    raise _Bad(f"{name} is not a number this tool accepts")


def parse_json(text: str | bytes, where: str, hint: str = "", error: type[UserError] = UserError) -> Any:
    """`json.loads(text)` with finite floats, short integers and bounded nesting; `UserError` otherwise.

    `where` names the source (`--arch`, a file path) and `hint` says how to fix it; both go into the
    one-line message; `error` is the `UserError` subclass raised (`ArchError` for architectures).
    """
    fix = f"; {hint}" if hint else ""
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except _Bad as exc:
        raise error(f"{where}: {exc}{fix}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON ({exc.msg} at char {exc.pos}){fix}") from None
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels){fix}") from None
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise error(f"{where} is not valid JSON ({first_line(exc)}){fix}") from None
    try:
        check_plain(data, where, hint)
    except UserError as exc:
        raise error(str(exc)) from None
    return data


def check_plain(data: Any, where: str, hint: str = "") -> None:
    """Refuse nesting deeper than `MAX_DEPTH`, non-finite floats and huge integers, without recursing.

    The message names the offending entry by its keys and indices (`space_opts.blocks[1]`).
    """
    fix = f"; {hint}" if hint else ""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, at = stack.pop()
        name = f"{where}: {at}" if at else where
        if isinstance(value, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                raise UserError(f"{where}: nested too deeply (more than {MAX_DEPTH} levels){fix}")
            if isinstance(value, dict):
                for k, v in value.items():
                    key = k if isinstance(k, str) else brief(k, 20)
                    stack.append((v, depth + 1, f"{at}.{key}" if at else key))
                    if not isinstance(k, str):
                        stack.append((k, depth + 1, f"{at} key" if at else "key"))
            else:
                stack.extend((v, depth + 1, f"{at}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name} = {value} is not a finite number{fix}")
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3.33 * MAX_INT_DIGITS:
            raise UserError(f"{name}: an integer of more than {MAX_INT_DIGITS} digits{fix}")


def depth_ok(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `data` nests lists and dicts at most `limit` levels deep (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return True


def brief(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, or a type name when even `repr` fails (deep nesting, huge ints)."""
    if not depth_ok(value, 8):
        return f"<a {type(value).__name__} nested too deeply>"
    try:
        text = repr(value)
    except (ValueError, RecursionError, TypeError):
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
