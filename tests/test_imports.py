"""The package's import graph has no cycle.

The graph is read from the source with ``ast``: an edge for every import of a module of the
package, at module level or inside a function (a function-local import only hides a cycle until
the function runs), and for every subpackage (its ``__init__``) that such an import passes
through, except the module's own packages, which run before it. The root package's
``__init__`` is left out as a target: it re-exports the flat public API, so everything reaches
it, and no module of the package imports from it.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

import moe_lora


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) of every module under the package directory ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _imported(node, name: str, package: bool) -> list[str]:
    """The dotted names an import statement of module ``name`` reaches (before filtering)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = name.split(".") if package else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [module] + [f"{module}.{a.name}" for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (module-level and function-local)."""
    mods = modules(root)
    graph = {}
    for name, (path, package) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, name, package):
                parts = target.split(".")
                # the module itself and each subpackage its import runs (not the root)
                deps |= {".".join(parts[:k]) for k in range(2, len(parts) + 1)}
        # a module's own packages are initialised before it, whatever it imports
        graph[name] = {d for d in deps if d in mods and not (name + ".").startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph(Path(moe_lora.__file__).parent)
    assert len(graph) > 40  # the walk saw the package
    assert cycles(graph) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize(
    "files, expected",
    [
        # module level, relative imports
        (
            {"__init__.py": "", "a.py": "from .b import x\n", "b.py": "from . import a\nx = 1\n"},
            [["pkg.a", "pkg.b"]],
        ),
        # function-local, absolute, through a subpackage's __init__
        (
            {
                "__init__.py": "",
                "a.py": "def f():\n    import pkg.sub.c\n",
                "sub/__init__.py": "from .c import y\n",
                "sub/c.py": "from ..a import f\ny = 2\n",
            },
            [["pkg.a", "pkg.sub", "pkg.sub.c"]],
        ),
        # no cycle
        (
            {"__init__.py": "from .a import f\n", "a.py": "from .b import x\n", "b.py": "x = 1\n"},
            [],
        ),
    ],
)
def test_a_constructed_cycle_is_found(tmp_path, files, expected):
    assert cycles(import_graph(_package(tmp_path, files))) == expected


def test_the_run_layer_knows_no_kind():
    """``moe_lora.runs`` runs units of any kind: it imports no kind's module."""
    graph = import_graph(Path(moe_lora.__file__).parent)
    kinds = {"moe_lora.experiment", "moe_lora.head_study", "moe_lora.bound_stage"}
    assert {m: graph[m] & kinds for m in graph if m.startswith("moe_lora.runs")} == {
        m: set() for m in graph if m.startswith("moe_lora.runs")
    }
