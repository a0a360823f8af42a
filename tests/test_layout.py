"""The house of DESIGN.md's Layout: no import cycle, no private name across rooms, short
modules, and every name the API reference documents importable from where it says."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skconv"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(modules: dict[str, Path]):
    """(importer, imported module, imported name or None), in-function imports included."""
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    yield (name, full, None) if full in modules else (name, target, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield name, alias.name, None


def _known(module: str, modules) -> str | None:
    while module and module not in modules:
        module = module.rpartition(".")[0]
    return module or None


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle():
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for importer, target, _ in _imports(modules):
        target = _known(target, modules)
        # A package re-exporting its own modules is not an arrow between rooms.
        if target and target != importer and not target.startswith(importer + "."):
            graph[importer].add(target)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt) :]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_no_private_name_imported_from_another_room():
    modules = _modules()
    crossing = sorted(
        {
            (importer, target, name)
            for importer, target, name in _imports(modules)
            if name
            and name.startswith("_")
            and not name.startswith("__")
            and _known(target, modules)
            and _room(importer) != _room(_known(target, modules))
        }
    )
    assert not crossing


def test_no_module_over_500_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long


def _documented_names():
    module, names = None, []
    for line in (ROOT / "docs" / "api.rst").read_text().splitlines():
        found = re.match(r"\.\. currentmodule:: (\S+)", line)
        if found:
            module = found.group(1)
        elif module and re.match(r"   [A-Za-z_][\w.]*$", line):
            names.append((module, line.strip()))
    return names


@pytest.mark.parametrize("module, name", _documented_names())
def test_every_documented_name_imports(module, name):
    obj = importlib.import_module(module)
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(f"{obj.__name__}.{part}")
    assert obj is not None
