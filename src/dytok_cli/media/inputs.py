"""Which videos and questions a command was given: arguments, directories, stdin, a questions file.

Torch-free, so a command line that is wrong fails at once, before any model library loads."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from ..config import DEFAULT_QUESTION
from ..errors import InputError

VIDEO_EXTENSIONS = frozenset(
    "mp4 m4v mov mkv webm avi gif mpg mpeg ts wmv flv 3gp".split()
)
STDIN = "-"



def is_video_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


def split_arguments(arguments: list[str], questions: list[str]) -> tuple[list[str], list[str]]:
    """(inputs, questions). Without -q/--questions the last argument is the question, unless it
    names an existing path, `-`, or a video file name: `dytok ask a.mp4 "what?"` and `dytok ask a.mp4`.

    Every input must then be `-`, an existing path or a video file name (a missing one still gets its
    error record): anything else is a misplaced question or a typo, refused before any work is done.
    """
    inputs, advice = arguments, "with -q, give every question with -q"
    if not questions:
        questions, advice = [DEFAULT_QUESTION], "quote the question and put it last, or give it with -q"
        if len(arguments) >= 2 and not _names_input(arguments[-1]):
            inputs, questions = arguments[:-1], [arguments[-1]]
    for argument in inputs:
        if not _names_input(argument):
            raise InputError(f"{argument!r} is not a video file, a directory or -; {advice}")
    return inputs, questions


def _names_input(argument: str) -> bool:
    return argument == STDIN or _exists(argument) or is_video_name(argument)


def _exists(argument: str) -> bool:
    """Whether `argument` names an existing path; a text no path can be (a long question: a name over the
    file system's limit) names none, rather than raising."""
    try:
        return Path(argument).exists()
    except OSError:
        return False


def read_questions(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"--questions {path}: {getattr(error, 'strerror', None) or error}") from None
    questions = [line.strip() for line in lines if line.strip()]
    if not questions:
        raise InputError(f"--questions {path}: no questions in the file")
    return questions


def _videos_in(directory: Path, recursive: bool) -> list[str]:
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(str(path) for path in candidates if path.is_file() and is_video_name(path))


def expand_inputs(arguments: Iterable[str], *, recursive: bool, stdin: TextIO, nul: bool) -> Iterator[str]:
    """Video paths in input order: files as given (a missing one still yields its path, so it gets
    an error record), directories as their video files sorted, `-` as the paths read from stdin."""
    for argument in arguments:
        if argument == STDIN:
            text = stdin.read()
            for line in text.split("\0") if nul else text.splitlines():
                if line.strip():
                    yield line if nul else line.strip()
        elif Path(argument).is_dir():
            yield from _videos_in(Path(argument), recursive)
        else:
            yield argument
