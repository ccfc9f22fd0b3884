"""The shape of the package (DESIGN §3), read from its source: imports point one way, the math knows no
model, and the CLI reaches models only through the library. Every import counts, including those inside
functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "dytok_cli"
MATH = {"budget", "prior", "layers", "selectors", "selectors.base", "selectors.visionzip", "selectors.fastv"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """The package modules `path` imports (relative or absolute), as dotted names under the package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("dytok_cli"):
                target = node.module.removeprefix("dytok_cli").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("dytok_cli.") for a in node.names if a.name.startswith("dytok_cli."))
    found.discard(name)
    return {module for module in found if module in MODULES}


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}
GRAPH = {module_name(path): package_imports(path) for path in PACKAGE.rglob("*.py")}


def test_the_import_graph_has_no_cycle():
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(module):], module]))
        if module in done:
            return
        for imported in GRAPH[module]:
            visit(imported, [*trail, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


@pytest.mark.parametrize("module", sorted(MATH))
def test_the_math_imports_only_the_math(module):
    assert GRAPH[module] <= MATH, f"{module} imports {sorted(GRAPH[module] - MATH)}"


def test_shared_types_import_no_stage():
    assert GRAPH["types"] <= MATH


def test_the_cli_reaches_models_only_through_the_library():
    assert not {module for module in GRAPH["cli"] if module == "models" or module.startswith("models.")}


def test_the_graph_is_read():
    """Guards the tests above: the parser does see the package's imports."""
    assert {"methods", "models", "video", "cache", "types"} <= GRAPH["pipeline"]
    assert "selectors.base" in GRAPH["selectors.visionzip"]
