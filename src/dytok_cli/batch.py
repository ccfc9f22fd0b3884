"""Many (video, question) pairs in one process: one model load, per-video reuse, and error isolation
(a video that fails yields an error record; the others go on). What the pairs are: `inputs.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError, about
from .gpu import free_cached_memory
from .pipeline import Pipeline, StageCallback
from .record import answer_record, error_record
from .types import Answer, Visual

# Failures that belong to one video; anything else (a model that cannot load, a bug) stops the run.
PER_VIDEO_ERRORS = (InputError, torch.OutOfMemoryError)  # InputError includes VideoError


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
    on_reasoning: Callable[[str], None] | None = None,
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
                    answer = pipeline.ask(visual, question, on_text=on_text, on_stage=on_stage, on_reasoning=on_reasoning)
                except PER_VIDEO_ERRORS as error:
                    message = about(video, error)
                    if visual is None:
                        unusable = message
                    out_of_memory = isinstance(error, torch.OutOfMemoryError)
                else:
                    emit(Outcome(answer_record(answer, settings, prior_name), answer))
                    continue
                if out_of_memory:
                    # Past the handler, the error's traceback and the tensors its frames held are gone: the
                    # prompt prefix and the allocator's cache go too, so the next question finds them free.
                    pipeline.release()
                    free_cached_memory()
            emit(Outcome(error_record(video, question, settings, prior_name, message), None))
            failed += 1
        del visual
        pipeline.release()
    return failed

