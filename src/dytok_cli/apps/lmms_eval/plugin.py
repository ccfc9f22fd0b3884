"""dytok as an lmms-eval model, registered through lmms-eval's `lmms_eval.models` entry point (no fork):

    python -m pip install 'dytok-cli[lmms-eval]'
    lmms-eval --model dytok --model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,method=dytok,ratio=0.25 \\
        --tasks videomme

A task that gives subtitles (videomme_w_subtitle writes them at the head of its prompt, under its header) has
them placed after the video as it wrote them, and then dytok's own `subtitles`/`speech` are not added to them.

Everything here works without lmms-eval installed (its tests use stand-ins for lmms-eval's requests);
`model.Dytok` is the thin `lmms` subclass lmms-eval loads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...batch import PER_VIDEO_ERRORS
from ...config import Backend, Device, DType, Method, Settings
from ...errors import one_line
from ...media import subtitles
from ...models import VideoModel
from ...pipeline import Pipeline

MODEL_ID = "dytok"
log = logging.getLogger("dytok")

# lmms-eval's names for our settings, where they differ (its video models take `max_frames_num`).
_ALIASES = {"pretrained": "model", "max_frames_num": "frames"}
_ENUMS = {"method": Method, "backend": Backend, "dtype": DType}


def manifest() -> Any:
    """The entry point's payload: lmms-eval calls it at start-up to learn which class `--model dytok` is."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path="dytok_cli.apps.lmms_eval.model.Dytok")


def settings_from_args(model_args: Mapping[str, Any]) -> Settings:
    """Settings from `--model_args` as lmms-eval parses them (digits arrive as numbers, words as strings).

    Names are our options' (`method`, `ratio`, `prior_model`, `prior_layers`, `frames`, ...), plus lmms-eval's
    `pretrained` and `max_frames_num`. `device=cuda:N` is `cuda` here; `gpu_index` keeps the N.
    """
    fields = {field.name for field in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for name, value in model_args.items():
        field = _ALIASES.get(name, name)
        if field not in fields:
            known = ", ".join(sorted((fields - set(_ALIASES.values())) | set(_ALIASES)))
            raise ValueError(f"dytok: unknown model_args {name!r}; known: {known}")
        if field in _ENUMS:
            value = _ENUMS[field](str(value))
        elif field == "device":
            value = Device(str(value).split(":", 1)[0])
        elif field == "prior_layers":
            value = str(value)  # `20` arrives as a number
        elif field == "ratio":
            value = float(value)
        values[field] = value
    return Settings(**values)


def gpu_index(model_args: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> int | None:
    """The CUDA device this process answers on: the N of `device=cuda:N`; else, in one of several processes
    launched together (`accelerate launch`, torchrun: WORLD_SIZE above 1), its LOCAL_RANK, so each has a GPU
    of its own; None (CUDA's current device) otherwise."""
    device = str(model_args.get("device", ""))
    if device.startswith("cuda:"):
        index = device.removeprefix("cuda:")
        if not index.isdigit():
            raise ValueError(f"dytok: device {device!r} names no CUDA device; use cuda:N")
        return int(index)
    if device in ("", "cuda", "auto") and int(environ.get("WORLD_SIZE", "1")) > 1:
        return int(environ.get("LOCAL_RANK", "0"))
    return None


@dataclass(frozen=True)
class Request:
    """One lmms-eval `generate_until` request, as dytok answers it."""

    video: str
    question: str  # the task's whole prompt text; the video goes before it, as the chat template puts it
    max_new_tokens: int | None  # None: the settings'
    temperature: float
    until: tuple[str, ...]  # the answer ends before the first of these

    @property
    def gives_subtitles(self) -> bool:
        """Whether the task wrote the video's subtitles into the prompt itself, as Video-MME's subtitle setting does."""
        return self.question.startswith(subtitles.HEADER)


def request_from_args(arguments: tuple, task_dict: Mapping[str, Any]) -> Request:
    """A request from a simple lmms-eval model's `Instance.args`:
    (context, generation kwargs, doc_to_visual, doc_id, task, split)."""
    context, generation, doc_to_visual, doc_id, task, split = arguments
    visuals = doc_to_visual(task_dict[task][split][doc_id])
    if len(visuals) != 1 or not isinstance(visuals[0], (str, os.PathLike)):
        raise ValueError(
            f"dytok answers questions about one video file; {task} document {doc_id} gives {len(visuals)} visuals"
        )
    until = generation.get("until") or ()
    until = (until,) if isinstance(until, str) else tuple(until)
    # As Hugging Face generation reads them: a temperature samples only with do_sample.
    temperature = float(generation.get("temperature") or 0.0) if generation.get("do_sample") else 0.0
    max_new_tokens = generation.get("max_new_tokens")
    return Request(os.fspath(visuals[0]), context, int(max_new_tokens) if max_new_tokens else None, temperature, until)


def group_by_video(requests: Sequence[Request]) -> dict[str, list[int]]:
    """Request indices per video, videos in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.video, []).append(index)
    return groups


def cut_at(text: str, until: Sequence[str]) -> str:
    ends = [text.find(stop) for stop in until if stop and stop in text]
    return text[: min(ends)] if ends else text


class Answerer:
    """Answers requests with one set of models; the questions about a video share its decoding and vision."""

    def __init__(self, settings: Settings, *, model: VideoModel | None = None, prior: VideoModel | None = None,
                 gpu: int | None = None):
        """`gpu`: the CUDA device to answer on (`gpu_index`), made the current one before any model loads."""
        if gpu is not None:
            import torch

            torch.cuda.set_device(gpu)
        self.settings = settings
        self._shared = Pipeline(settings, model=model, prior=prior)
        self._pipelines: dict[tuple[int, float, bool], Pipeline] = {}

    def _pipeline(self, request: Request) -> Pipeline:
        uses_transcript = self.settings.uses_transcript and not request.gives_subtitles
        key = (request.max_new_tokens or self.settings.max_new_tokens, request.temperature, uses_transcript)
        if key not in self._pipelines:
            variant = dataclasses.replace(self.settings, max_new_tokens=key[0], temperature=key[1])
            if not uses_transcript:
                variant = dataclasses.replace(variant, subtitles=None, speech=False, speech_model=None)
            self._pipelines[key] = Pipeline(variant, model=self._shared.model, prior=self._shared.prior)
        return self._pipelines[key]

    def answer(self, requests: Sequence[Request], on_answer: Callable[[], None] | None = None) -> list[str]:
        """One reply per request, in request order. A video or question that fails gets an empty reply
        (scored wrong, as an unanswered question is) and a warning; the others go on."""
        replies = [""] * len(requests)
        done = on_answer or (lambda: None)
        for video, indices in group_by_video(requests).items():
            try:
                visual = self._shared.prepare(video)
            except PER_VIDEO_ERRORS as error:
                log.warning("dytok: %s; its %d questions get empty answers", one_line(error), len(indices))
                for _ in indices:
                    done()
                continue
            if visual.transcript is not None and visual.transcript.note:
                log.info("dytok: %s: %s", video, visual.transcript.note)
            for index in indices:
                request = requests[index]
                try:
                    answer = self._pipeline(request).ask(visual, request.question)
                except PER_VIDEO_ERRORS as error:
                    log.warning("dytok: %s: %s; an empty answer instead", video, one_line(error))
                else:
                    replies[index] = cut_at(answer.text, request.until)
                done()
            for pipeline in self._pipelines.values():
                pipeline.release()
        return replies
