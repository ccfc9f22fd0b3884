"""The shape of the package, read from its source: imports point one way. The math (`math/`) knows nothing
of the package; settings and shared types know no stage; the library knows no application; an application
(`apps/`) knows the library and no other application, nor the presentation layer; the CLI reaches models
only through the library. Every import counts, including those inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "dytok_cli"


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


def wing(name: str) -> set[str]:
    return {module for module in MODULES if module == name or module.startswith(f"{name}.")}


MATH, APPS = wing("math"), wing("apps") - {"apps"}
PRESENTATION = {"__main__", "cli", "render"}
LIBRARY = MODULES - APPS - PRESENTATION - {"apps"}


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


@pytest.mark.parametrize("module", ["types", "config", "errors", "timecode"])
def test_settings_and_shared_types_import_no_stage(module):
    assert GRAPH[module] <= MATH | {"errors"}, f"{module} imports {sorted(GRAPH[module] - MATH - {'errors'})}"


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_the_library_imports_no_application_nor_the_presentation(module):
    assert not GRAPH[module] & (APPS | PRESENTATION), f"{module} imports {sorted(GRAPH[module] & (APPS | PRESENTATION))}"


@pytest.mark.parametrize("module", sorted(APPS))
def test_an_application_imports_the_library_only(module):
    """An app is a module of `apps/` or a package there (the lmms-eval plugin): it reaches its own modules
    and the library, not another app, not the CLI's presentation."""
    own = wing(".".join(module.split(".")[:2]))
    assert GRAPH[module] <= LIBRARY | own, f"{module} imports {sorted(GRAPH[module] - LIBRARY - own)}"


def test_the_cli_reaches_models_only_through_the_library():
    assert not {module for module in GRAPH["cli"] if module == "models" or module.startswith("models.")}


def test_the_graph_is_read():
    """Guards the tests above: the parser does see the package's imports."""
    assert {"methods", "models", "media.video", "media.cache", "types"} <= GRAPH["pipeline"]
    assert "math.selectors.base" in GRAPH["math.selectors.visionzip"]
    assert "apps.lmms_eval.plugin" in GRAPH["apps.lmms_eval.model"] and "apps.ray_engine" in GRAPH["cli"]
    assert {"math.budget", "math.prior", "math.layers"} <= MATH and {"apps.bench", "apps.eval"} <= APPS
