"""The package's import graph: no cycle, and no client module that reaches the server.

Read from the sources with `ast` (nothing is imported): every import statement at any level,
inside functions too (a deferred import is still a dependency), and those under
``if TYPE_CHECKING:`` too (annotations only, never run, but a cycle of types is still one).
Run this file alone to print the graph's cycles: ``python tests/test_imports.py``
(``--runtime``: without the TYPE_CHECKING imports).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "chatscreen"
CLIENT_SIDE = ("chatscreen.client", "chatscreen.gui", "chatscreen.screen")


def module_names(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    names = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, *, typing: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except (unless ``typing``) those under
    ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if not typing and isinstance(node, ast.If) and _is_type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def dependencies(module: str, path: Path, known: set[str], *, typing: bool = False) -> set[str]:
    """The package's modules that ``module`` imports (the most specific one named)."""
    deps: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path)), typing=typing):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _absolute(module, path.name == "__init__.py", node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != module:
                deps.add(target)
    return deps


def import_graph(src: Path = SRC, *, typing: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports; ``typing``: those only type checkers read too."""
    names = module_names(src)
    known = set(names)
    return {name: dependencies(name, path, known, typing=typing)
            for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
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
            connect(node)
    return found


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    edges = [f"  {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "\n".join([" <-> ".join(component), *edges])


def test_the_package_has_no_import_cycle() -> None:
    """Not even of annotations: the imports under ``if TYPE_CHECKING:`` count too (a tab
    names a Protocol of what it uses of the app, gui/host.py, not the App that holds it)."""
    graph = import_graph(typing=True)
    assert len(graph) > 30  # the walk found the package's modules
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_the_graph_sees_deferred_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from chatscreen import a\n"
        "import chatscreen.c\n")
    (pkg / "c.py").write_text("from chatscreen.a import f\n")
    graph = import_graph(tmp_path)
    assert graph["chatscreen.a"] == {"chatscreen.sub.b"}
    assert graph["chatscreen.sub.b"] == {"chatscreen.c"}
    assert cycles(graph) == [["chatscreen.a", "chatscreen.c", "chatscreen.sub.b"]]


def test_no_client_side_module_imports_the_server() -> None:
    """Statically, deferred and annotation imports included (tests/test_newcomer.py checks it
    at run time)."""
    graph = import_graph(typing=True)
    client_side = [m for m in graph
                   if m.startswith(CLIENT_SIDE) or m in ("chatscreen.text", "chatscreen.tls")]
    bad = {m: sorted(d for d in graph[m] if d.startswith("chatscreen.server"))
           for m in client_side}
    assert not {m: d for m, d in bad.items() if d}


if __name__ == "__main__":  # python tests/test_imports.py [--runtime]
    graph = import_graph(typing="--runtime" not in sys.argv)
    for component in cycles(graph):
        print(describe(graph, component))
    print(f"{len(graph)} modules, {len(cycles(graph))} cycle(s)")
    sys.exit(1 if cycles(graph) else 0)
