"""Where the code that runs beside a model makes tensors, read from its source: in `models/`, `prefill/`,
`methods.py` and `math/`, a tensor factory names its `device=`, and `.numpy()` follows `.cpu()`, unless
the line says the tensor is meant to be on the host (a comment with "on the host"). On a CPU both
mistakes pass every test; on a GPU the first mixes devices in the next operation (or copies at every
use), the second fails."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "dytok_cli"
CHECKED = sorted([*(PACKAGE / "models").glob("*.py"), *(PACKAGE / "prefill").glob("*.py"), PACKAGE / "methods.py",
                  *(PACKAGE / "math").rglob("*.py")])
# torch's functions that make a tensor from nothing (or from host data) on the default device: the CPU.
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye",
             "rand", "randn", "randint", "randperm", "from_numpy"}
MARK = "on the host"


def misplaced(source: str) -> list[tuple[int, str]]:
    """(line, what) for every factory without `device=` and every `.numpy()` not straight after `.cpu()`,
    on lines that do not say they are meant to be on the host."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        spanned = lines[node.lineno - 1 : node.end_lineno]
        if any(MARK in line.partition("#")[2] for line in spanned):
            continue
        function, owner = node.func.attr, node.func.value
        if (function in FACTORIES and isinstance(owner, ast.Name) and owner.id == "torch"
                and not any(keyword.arg == "device" for keyword in node.keywords)):
            found.append((node.lineno, f"torch.{function} without device="))
        elif function == "numpy" and not (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Attribute)
                                          and owner.func.attr == "cpu"):
            found.append((node.lineno, ".numpy() without .cpu()"))
    return found


@pytest.mark.parametrize("path", CHECKED, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_tensors_are_made_where_they_are_used(path):
    found = misplaced(path.read_text())
    assert not found, "\n".join(f"{path.relative_to(PACKAGE)}:{line}: {what}" for line, what in found)


def test_the_lint_sees_what_it_looks_for():
    """Guards the test above: each mistake is found, each exemption honoured."""
    source = (
        "a = torch.zeros(3)\n"
        "b = torch.zeros(3, device=x.device)\n"
        "c = torch.arange(\n    4,\n)  # on the host: budgets\n"
        "d = x.numpy()\n"
        "e = x.cpu().numpy()\n"
        "f = x.new_zeros(3)\n"
        "g = torch.tensor([1])  # a comment about something else\n"
    )
    assert misplaced(source) == [(1, "torch.zeros without device="), (6, ".numpy() without .cpu()"),
                                 (9, "torch.tensor without device=")]
    assert len(CHECKED) > 20 and PACKAGE / "methods.py" in CHECKED
