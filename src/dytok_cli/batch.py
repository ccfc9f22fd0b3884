"""Many (video, question) pairs in one process: one model load, per-video reuse, and error isolation
(a video that fails yields an error record; the others go on). What the pairs are: `inputs.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import windowed
from .errors import InputError, about
from .gpu import free_cached_memory
from .media.video import Timeline
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
    whole: windowed.Segmentation | None = None,
) -> int:
    """Answer every question on every video, in input order; returns the number of failed pairs.

    The query-independent work for a video runs once and serves all its questions, then is
    released before the next video, so memory does not grow with the batch. With `whole`, each question
    is answered from the whole video cut into windows so (`windowed.whole_video`): what its first question
    leaves for the others is then the frame times, and each window's encoding only in the pipeline's
    vision cache.
    """
    failed = 0
    settings, prior_name = pipeline.settings, pipeline.prior_name
    layers: tuple[int, ...] | None = None  # a whole-video scan's, known once the model is loaded
    scan_progress = windowed.StageProgress(on_stage) if on_stage else None
    for video in videos:
        # Its frames and their encoding; with `whole`, its frame times, once its first question is scanned.
        prepared: Visual | Timeline | None = None
        # Without a vision cache, where a whole video's later questions find its shot cuts.
        cuts = windowed.KeptCuts() if whole is not None and pipeline.cache is None else None
        unusable: str | None = None  # set when the video itself fails: every question on it fails alike
        for question in questions:
            if on_pair:
                on_pair(video, question)
            message = unusable
            if message is None:
                found: windowed.Whole | None = None
                try:
                    if whole is not None:
                        layers = layers or windowed.scan_layers(pipeline)
                        # A first question that cannot be scanned fails the video's others alike, as a video
                        # that cannot be prepared does.
                        found = windowed.whole_video(pipeline, video, question, whole, layers, settings.frames,
                                                     line=prepared, cuts=cuts, progress=scan_progress)
                        prepared = found.scan.line
                        answer = windowed.ask_whole(pipeline, found, question, on_text=on_text, on_stage=on_stage,
                                                    on_reasoning=on_reasoning)
                    else:
                        if prepared is None:
                            prepared = pipeline.prepare(video, on_stage)
                            if on_prepared:
                                on_prepared(prepared)
                        answer = pipeline.ask(prepared, question, on_text=on_text, on_stage=on_stage,
                                              on_reasoning=on_reasoning)
                except PER_VIDEO_ERRORS as error:
                    message = about(video, error)
                    if prepared is None:
                        unusable = message
                    out_of_memory = isinstance(error, torch.OutOfMemoryError)
                else:
                    record = answer_record(answer, settings, prior_name, found.record() if found else None)
                    emit(Outcome(record, answer))
                    continue
                if out_of_memory:
                    # Past the handler, the error's traceback and the tensors its frames held are gone: the
                    # prompt prefix and the allocator's cache go too, so the next question finds them free.
                    pipeline.release()
                    free_cached_memory()
            emit(Outcome(error_record(video, question, settings, prior_name, message), None))
            failed += 1
        del prepared
        pipeline.release()
    return failed

