"""What the README tells a newcomer is what CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readmes_test_command_in_a_new_virtual_environment():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[-1]
    assert "python -m venv .venv" in command and "python -m pytest" in command
    assert "rm -rf .venv" in ci  # a new environment every run, as on a newcomer's machine
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    assert command in readme_lines
