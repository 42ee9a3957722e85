"""The import structure: no cycles, and each package imports only what lies beneath it.

Every import statement of the project's modules counts, at module level and inside functions
(a deferred import is still a dependency) and under `if TYPE_CHECKING:`. The rules:

- no import cycle among the project's modules;
- the product packages never import `bench` (the benchmarks measure the product, not the reverse);
- the stages (core, ops, supernet, search, retrain) never import `pipeline`, which composes them;
- `search` and `retrain` never import each other;
- `core` and `ops` import no stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PRODUCT = ("core", "ops", "supernet", "search", "retrain", "pipeline")
PACKAGES = (*PRODUCT, "bench")
STAGES = ("supernet", "search", "retrain")


def project_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """{dotted module name: file} of every .py file of `packages` under `root`, and of the top-level scripts."""
    modules = {p.stem: p for p in root.glob("*.py")}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(project module imported, line) for every import statement anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports the module a.b where there is one, else a name of a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno))
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, dict[str, int]]:
    """{module: {imported project module: first line}}."""
    modules = project_modules(root, packages)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line in imports_of(name, path, modules):
            edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    members = set(component)
    edges = [f"{a} -> {b} (line {line})" for a in component for b, line in graph[a].items() if b in members]
    return "; ".join(edges)


def _top(module: str) -> str:
    return module.split(".")[0]


def forbidden(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import that breaks a layering rule, as 'module -> target (line N): rule'."""
    rules = [
        (PRODUCT, ("bench",), "the product never imports the benchmarks"),
        (("core", "ops", *STAGES), ("pipeline",), "a stage never imports the pipeline that composes it"),
        (("search",), ("retrain",), "search and retrain are independent stages"),
        (("retrain",), ("search",), "search and retrain are independent stages"),
        (("core", "ops"), STAGES, "core and ops lie beneath every stage"),
    ]
    problems = []
    for module, edges in sorted(graph.items()):
        for target, line in edges.items():
            for sources, targets, why in rules:
                if _top(module) in sources and _top(target) in targets:
                    problems.append(f"{module} -> {target} (line {line}): {why}")
    return problems


def test_the_project_has_no_import_cycle():
    graph = import_graph(ROOT)
    assert len(graph) > 50, "the walk found too few modules: is ROOT the repository?"
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(graph, c) for c in found)


def test_each_package_imports_only_what_lies_beneath_it():
    problems = forbidden(import_graph(ROOT))
    assert not problems, "\n".join(problems)


def test_the_checks_see_deferred_relative_and_aliased_imports(tmp_path):
    """The walk itself: a cycle closed by a function-level import, and a forbidden relative import, are found."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "a.py").write_text("from core.b import thing\n")
    (tmp_path / "core" / "b.py").write_text("def thing():\n    import core.a as again\n    return again\n")
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "__init__.py").write_text("")
    (tmp_path / "search" / "loop.py").write_text("from . import tools\n")
    (tmp_path / "search" / "tools.py").write_text("def f():\n    from retrain.train import go\n")
    (tmp_path / "retrain").mkdir()
    (tmp_path / "retrain" / "__init__.py").write_text("")
    (tmp_path / "retrain" / "train.py").write_text("def go():\n    pass\n")
    graph = import_graph(tmp_path, ("core", "search", "retrain"))
    assert graph["search.loop"] == {"search.tools": 1}
    assert cycles(graph) == [["core.a", "core.b"]]
    assert forbidden(graph) == ["search.tools -> retrain.train (line 2): search and retrain are independent stages"]
