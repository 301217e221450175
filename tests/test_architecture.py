"""The package draws as layers: every import goes down (or stays inside its own package), no cycles, and no
imports hidden inside functions except optional dependencies and the command line's lazy command loading.

The layer order is the one written at the top of ``aelab/__init__.py``; this test reads the package's
source with ``ast`` (nothing is imported), so it also catches an import that only runs in a rare branch.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aelab

PACKAGE = Path(aelab.__file__).parent

# Bottom to top; a module may import its own layer's modules and any layer below. Mirrors aelab/__init__.py.
LAYERS = [
    {"errors", "io", "device", "losses", "modality", "version"},
    {"data", "models"},
    {"registry"},
    {"config"},
    {"runfolder"},
    {"training", "evaluation", "predict"},
    {"viz"},
    {"api", "sklearn", "oneclass"},
    {"cli", "commands", "web", "__main__", "__init__"},
]
# Function-level imports allowed: the CLI's lazy command loading, and optional dependencies.
LAZY_OK_MODULES = {"cli", "commands"}
OPTIONAL = {"umap", "torch.utils.tensorboard", "tensorboard", "playwright", "uvicorn", "IPython"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> int:
    top = name.split(".")[0]
    for i, members in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"module aelab.{name} is in no layer: add its top-level name to LAYERS and to the "
                         f"order written in aelab/__init__.py")


def imports_of(path: Path) -> list[tuple[str, bool, int]]:
    """(imported aelab module or external name, inside a function?, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    is_package = path.name == "__init__.py"
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = here if is_package else here[:-1]
                    base = base[:len(base) - (child.level - 1)] if child.level > 1 else base
                    target = [p for p in base if p] + ([child.module] if child.module else [])
                    for alias in child.names:  # `from . import x` may name a submodule
                        full = ".".join([*target, alias.name])
                        sub = PACKAGE.joinpath(*full.split(".")).with_suffix(".py")
                        pkg = PACKAGE.joinpath(*full.split("."), "__init__.py")
                        name = full if sub.is_file() or pkg.is_file() else ".".join(target)
                        found.append(("aelab." + name if name else "aelab", inner, child.lineno))
                elif child.module.split(".")[0] == "aelab":
                    found.append((child.module, inner, child.lineno))
                elif inner:
                    found.append(("ext:" + child.module, inner, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    name = alias.name if alias.name.startswith("aelab") else "ext:" + alias.name
                    if inner or not name.startswith("ext:"):
                        found.append((name, inner, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    edges = {}
    for path in MODULES:
        src = module_name(path)
        edges[src] = {name.removeprefix("aelab").lstrip(".") or "__init__"
                      for name, nested, _ in imports_of(path) if not name.startswith("ext:") and not nested}
    return edges


def test_every_module_is_in_a_layer_and_imports_go_down():
    wrong = []
    for path in MODULES:
        src = module_name(path)
        if src == "__init__":  # the flat public API re-exports from every layer
            continue
        for name, _, line in imports_of(path):
            if name.startswith("ext:"):
                continue
            target = name.removeprefix("aelab").lstrip(".") or "__init__"
            if layer_of(target) > layer_of(src):
                wrong.append(f"aelab/{path.relative_to(PACKAGE)}:{line} imports aelab.{target} "
                             f"(layer {layer_of(target)}) from layer {layer_of(src)}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_imports_inside_functions_except_lazy_cli_and_optional_dependencies():
    hidden = []
    for path in MODULES:
        top = module_name(path).split(".")[0]
        for name, nested, line in imports_of(path):
            if not nested or top in LAZY_OK_MODULES:
                continue
            if name.startswith("ext:") and any(name[4:] == o or name[4:].startswith(o + ".") for o in OPTIONAL):
                continue
            hidden.append(f"aelab/{path.relative_to(PACKAGE)}:{line} imports {name.removeprefix('ext:')}")
    assert not hidden, "imports inside functions:\n" + "\n".join(hidden)


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                nxt = next((m for m in edges if nxt.startswith(m + ".")), nxt)
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(f"aelab.{m}" for m in cycle))
            if state.get(nxt) is None and nxt in edges:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node != "__init__" and state.get(node) is None:
            dfs(node)


def test_the_checker_resolves_relative_and_nested_imports():
    """Known answers: viz/figures.py imports models.base at the top; commands/report.py imports the api
    inside a function (the lazy command loading), both written as relative imports."""
    figures = imports_of(PACKAGE / "viz" / "figures.py")
    assert ("aelab.models.base", False) in {(n, nested) for n, nested, _ in figures}
    report = imports_of(PACKAGE / "commands" / "report.py")
    assert ("aelab.api", True) in {(n, nested) for n, nested, _ in report}
    assert layer_of("api") > layer_of("viz") > layer_of("evaluation") > layer_of("runfolder") > layer_of("models")


def test_the_layer_order_is_written_in_the_package():
    text = (PACKAGE / "__init__.py").read_text()
    for members in LAYERS:
        for name in members - {"__init__", "__main__"}:
            assert name in text, f"aelab/__init__.py does not name '{name}' in its layer order"
