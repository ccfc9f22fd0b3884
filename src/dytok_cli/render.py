"""Everything a person sees: the stderr console, streamed answers, JSON output. Rich lives only here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class StdoutClosed(Exception):
    """The reader of stdout went away (`| head -1`); not an OSError, so no library turns it into a failure."""


def write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None


def write_json(record: dict[str, Any], *, indent: int | None = 2) -> None:
    write(json.dumps(record, indent=indent, ensure_ascii=False) + "\n")


class BatchProgress:
    """Progress of a run on stderr: answers done/total, current video, stage and ETA.

    Animated only when stderr is a terminal. Answers written to stdout while the display is live
    would be overdrawn by it, so writing pauses the display and the next stage resumes it.
    """

    def __init__(self, videos: int, pairs: int, live: bool = True) -> None:
        from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

        self._videos, self._pairs = videos, pairs
        self._video = ""
        self._running = False
        self._progress = None
        if console.is_terminal:
            columns = [SpinnerColumn(), TextColumn("{task.description}")]
            if live:
                columns += [MofNCompleteColumn(), TimeRemainingColumn()]
            self._progress = Progress(
                *columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False
            )
            self._task = self._progress.add_task("Starting", total=pairs)

    def __enter__(self) -> BatchProgress:
        self._resume()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._suspend()

    def _resume(self) -> None:
        if self._progress is not None and not self._running:
            self._progress.start()
            self._running = True

    def _suspend(self) -> None:
        if self._progress is not None and self._running:
            self._progress.stop()
            self._running = False

    def start_video(self, video: str) -> None:
        self._video = video

    def stage(self, message: str) -> None:
        if self._progress is None:
            return
        name = self._video.rsplit("/", 1)[-1]
        self._progress.update(self._task, description=f"{name}: {message}" if self._pairs > 1 else message)
        self._resume()

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def error(self, message: str) -> None:
        with self.paused():
            error(message)

    @contextmanager
    def paused(self) -> Iterator[None]:
        was_running = self._running
        self._suspend()
        try:
            yield
        finally:
            if was_running:
                self._resume()

    def streaming(self, write: Callable[[str], None]) -> Callable[[str], None]:
        """A text sink that takes the display down for the answer being streamed."""

        def on_text(text: str) -> None:
            self._suspend()
            write(text)

        return on_text
