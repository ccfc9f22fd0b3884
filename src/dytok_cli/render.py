"""Everything a person sees: the stderr console, streamed answers, JSON output. Rich lives only here."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any

from rich.console import Console

# Progress and messages go to stderr so stdout carries only results.
console = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    console.print(f"[bold red]dytok: error:[/] {message}", markup=True, soft_wrap=True)


def note(message: str) -> None:
    console.print(f"[dim]{message}[/]", soft_wrap=True)


@contextmanager
def status(message: str) -> Iterator[Any]:
    """A spinner on a terminal; nothing at all when stderr is a pipe or file."""
    if not console.is_terminal:
        yield None
        return
    with console.status(message) as spinner:
        yield spinner


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def write_json(record: dict[str, Any], *, indent: int | None = 2) -> None:
    write(json.dumps(record, indent=indent, ensure_ascii=False) + "\n")
