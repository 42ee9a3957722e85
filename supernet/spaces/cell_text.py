"""Published NASNet/DARTS cells as text: LaNet's integer lists and DARTS `Genotype(...)` literals.

Parsing only: what a text says and which NASNet space options it implies. The NASNet space
(`supernet/spaces/nasnet.py`) builds the architecture. A genotype is read as literals (and
`range(a, b)`) with `ast`, never evaluated.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from core.errors import ArchError, UserError
from core.safejson import first_line
from ops.cell_ops import resolve_ops
from supernet.nets.nasnet import Edge, concat_nodes


def read_lanet(text: str, options: dict[str, Any], where: str = "--lanet") -> tuple[list[list[int]], dict[str, Any]]:
    """LaNet integer lists from text (one list, or one per stage separated by ';') and the space options
    they imply on top of `options`: nodes from the lists' length, LaNet's ops and loose-end concat
    (unless `options` names others), and per_stage for several lists. `where` names the text's source."""
    try:
        lists = [[int(v) for v in part.replace(" ", "").strip("[]").split(",") if v] for part in text.split(";")]
    except ValueError:
        raise ArchError(f"{where} {text[:60]!r}: expected comma-separated integers, lists separated by ';'") from None
    lengths = {len(c) for c in lists}
    if len(lengths) != 1 or min(lengths) % 4 or not min(lengths):
        raise ArchError(
            f"{where}: every list needs the same length, a multiple of 4 (LaNet: 28); got {sorted(lengths)}"
        )
    implied = {"nodes": lengths.pop() // 4, "ops": "lanas", "concat": "loose", **options}
    if len(lists) > 1:
        implied["per_stage"] = True
    return lists, implied


GENOTYPE_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")
MAX_GENOTYPE_CHARS = 100_000  # a genotype is a few hundred characters; a bigger file is not one


def read_genotype(text: str, options: dict[str, Any], where: str = "--genotype") -> tuple[dict, dict[str, Any]]:
    """A DARTS genotype from the command line: the `Genotype(normal=[...], ...)` text itself, or a file
    holding it (optionally as `NAME = Genotype(...)`). Parsed as literals, never evaluated.

    Returns its fields and the space options it implies on top of `options`: nodes from its length,
    DARTS's op set, and concat "all" when the concat lists name every node, else "loose" (NASNet /
    LaNet) when they name the loose ends. Ops are checked against the space's op list here, so a
    cell from a larger op set fails with the fix rather than deep in validation.
    """
    source = text.strip()
    if not source:
        raise ArchError(f"{where} is empty; give Genotype(normal=[...], ...) or a file holding it")
    if not source.startswith(("Genotype", "{", "[", "(")) and "=" not in source:
        file = Path(source)
        if not file.is_file():
            raise UserError(f"{where} {source[:60]!r}: no such file; give Genotype(normal=[...], ...) or a file")
        if file.stat().st_size > MAX_GENOTYPE_CHARS:
            raise ArchError(f"{where} {file}: {file.stat().st_size} bytes is too large for a genotype; give its text")
        try:
            source = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{where} {file}: cannot read it ({first_line(exc, 80)}); give a UTF-8 text file") from None
        where = f"{where} {file}"
    g = genotype_fields(source, where)
    for kind in ("normal", "reduce"):
        if not isinstance(g.get(kind), (list, tuple)) or not g[kind] or len(g[kind]) % 2:
            raise ArchError(f"{where}: {kind} must be a non-empty list of (op, input) pairs, two per node")
    nodes = len(g["normal"]) // 2
    if len(g["reduce"]) != 2 * nodes:
        raise ArchError(f"{where}: normal has {nodes} nodes but reduce has {len(g['reduce']) // 2}; give both alike")
    implied: dict[str, Any] = {"nodes": nodes, "ops": "darts"}
    modes = []
    for kind in ("normal", "reduce"):
        edges = genotype_edges(g[kind], f"{where}: {kind}")
        concat = g.get(f"{kind}_concat")
        if concat is None:
            continue
        if not isinstance(concat, (list, tuple)):
            raise ArchError(f"{where}: {kind}_concat must be a list of node indices, e.g. range(2, {nodes + 2})")
        if tuple(concat) == concat_nodes(edges, nodes, "all"):
            modes.append("all")
        elif tuple(concat) == concat_nodes(edges, nodes, "loose"):
            modes.append("loose")
        else:
            raise ArchError(
                f"{where}: {kind}_concat={list(concat)[:16]} is neither every node (range(2, {nodes + 2})) nor the "
                "loose ends; this space concatenates one of the two"
            )
    if len(set(modes)) > 1:
        raise ArchError(f"{where}: normal_concat and reduce_concat follow different rules; give both alike")
    implied["concat"] = modes[0] if modes else "all"
    implied.update(options)
    ops = resolve_ops(implied["ops"])
    used = dict.fromkeys(str(op) for kind in ("normal", "reduce") for op, _ in g[kind])
    missing = [op for op in used if op not in ops]
    if missing:
        raise ArchError(
            f"{where}: op {missing[0]!r} is not in the space's ops {list(ops)}; "
            + ("drop ops from --space-opts" if "ops" in options else "name a set that has it in --space-opts ops=...")
        )
    return g, implied


def genotype_edges(pairs: Any, where: str) -> tuple[Edge, ...]:
    try:
        edges = tuple((int(inp), str(op)) for op, inp in pairs)
    except (TypeError, ValueError, OverflowError):
        raise ArchError(f"{where} must be a list of (op name, input index) pairs") from None
    if any(isinstance(inp, bool) or not isinstance(inp, int) or not isinstance(op, str) for op, inp in pairs):
        raise ArchError(f"{where} must be a list of (op name, input index) pairs")
    return edges


def genotype_fields(genotype: Any, where: str = "nasnet: genotype") -> dict[str, Any]:
    if isinstance(genotype, str):
        if len(genotype) > MAX_GENOTYPE_CHARS:
            raise ArchError(f"{where}: {len(genotype)} characters is too long for a genotype")
        try:
            body = ast.parse(genotype.strip(), mode="exec").body
            if len(body) == 1 and isinstance(body[0], ast.Assign):  # `DARTS_V2 = Genotype(...)`, as genotypes.py
                tree: ast.AST = body[0].value
            elif len(body) == 1 and isinstance(body[0], ast.Expr):
                tree = body[0].value
            else:
                raise ValueError("expected one expression")
            if isinstance(tree, ast.Call):
                if getattr(tree.func, "id", None) != "Genotype":
                    raise ValueError(f"calls {ast.unparse(tree.func)[:30]!r}, not Genotype")
                if len(tree.args) > 4 or any(kw.arg not in GENOTYPE_KEYS for kw in tree.keywords):
                    raise ValueError(f"Genotype takes {', '.join(GENOTYPE_KEYS)}")
                d = dict(zip(GENOTYPE_KEYS, [_literal(a) for a in tree.args]))
                d.update({str(kw.arg): _literal(kw.value) for kw in tree.keywords})
                return d
            genotype = ast.literal_eval(tree)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
            why = "only literals and range(a, b) are read" if "malformed node" in str(exc) else first_line(exc, 80)
            raise ArchError(
                f"{where}: cannot parse it ({why}); expected Genotype(normal=[('sep_conv_3x3', 0), "
                "...], normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))"
            ) from None
    if isinstance(genotype, dict):
        return genotype
    if hasattr(genotype, "normal") and hasattr(genotype, "reduce"):
        return {k: getattr(genotype, k, None) for k in GENOTYPE_KEYS}
    if isinstance(genotype, (list, tuple)) and len(genotype) in (2, 4):
        return dict(zip(GENOTYPE_KEYS, genotype)) if len(genotype) == 4 else dict(zip(("normal", "reduce"), genotype))
    raise ArchError(
        f"{where}: a genotype is a Genotype namedtuple, its string, a dict or [normal, concat, reduce, concat]"
    )


def _literal(node: ast.AST) -> Any:
    # `range(a, b)` is the one call DARTS genotypes contain (read here, never run); the rest must be literals.
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range":
        args = [ast.literal_eval(a) for a in node.args]
        if node.keywords or not 1 <= len(args) <= 2 or not all(type(a) is int and 0 <= a <= 64 for a in args):
            raise ValueError("range() of a genotype takes one or two integers in [0, 64]")
        return list(range(*args))
    return ast.literal_eval(node)
