"""Many (video, question) pairs in one process: input expansion, one model load, per-video reuse,
and error isolation (a video that fails yields an error record; the others go on)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from .config import DEFAULT_QUESTION
from .errors import InputError
from .pipeline import Pipeline, StageCallback
from .types import Answer, Visual
from .record import answer_record, error_record

VIDEO_EXTENSIONS = frozenset(
    "mp4 m4v mov mkv webm avi gif mpg mpeg ts wmv flv 3gp".split()
)
STDIN = "-"

# Failures that belong to one video; anything else (a model that cannot load, a bug) stops the run.
PER_VIDEO_ERRORS = (InputError, torch.OutOfMemoryError)  # InputError includes VideoError


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
    return argument == STDIN or Path(argument).exists() or is_video_name(argument)


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


@dataclass
class Outcome:
    record: dict[str, Any]
    answer: Answer | None  # None when the pair failed


def run(
    pipeline: Pipeline,
    videos: list[str],
    questions: list[str],
    emit: Callable[[Outcome], None],
    *,
    on_pair: Callable[[str, str], None] | None = None,
    on_prepared: Callable[[Visual], None] | None = None,
    on_stage: StageCallback | None = None,
    on_text: Callable[[str], None] | None = None,
) -> int:
    """Answer every question on every video, in input order; returns the number of failed pairs.

    The query-independent work for a video runs once and serves all its questions, then is
    released before the next video, so memory does not grow with the batch.
    """
    failed = 0
    settings, prior_name = pipeline.settings, pipeline.prior_name
    for video in videos:
        visual: Visual | None = None
        unusable: str | None = None  # set when the video itself fails: every question on it fails alike
        for question in questions:
            if on_pair:
                on_pair(video, question)
            message = unusable
            if message is None:
                try:
                    if visual is None:
                        visual = pipeline.prepare(video, on_stage)
                        if on_prepared:
                            on_prepared(visual)
                    answer = pipeline.ask(visual, question, on_text=on_text, on_stage=on_stage)
                except PER_VIDEO_ERRORS as error:
                    message = _reason(error, video)
                    if visual is None:
                        unusable = message
                else:
                    emit(Outcome(answer_record(answer, settings, prior_name), answer))
                    continue
            emit(Outcome(error_record(video, question, settings, prior_name, message), None))
            failed += 1
        del visual
        pipeline.release()
    return failed


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _reason(error: BaseException, video: str) -> str:
    """`error` in one line that names `video` once: a VideoError names it already, others do not."""
    text = one_line(error)
    for name in (video, str(Path(video))):
        if text.startswith(f"{name}: "):
            text = text[len(name) + 2 :]
            break
    return f"{video}: {text}"
