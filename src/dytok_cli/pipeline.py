"""The stages in order: decode -> encode -> prior -> allocate -> select -> generate.

`Pipeline.plan` stops before generation (what `inspect` shows); `Pipeline.ask` runs everything.
Models load once per pipeline, so one process can serve many videos and questions.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TextStreamer

from . import fastv
from .budget import allocate_budgets, total_budget, uniform_weights
from .config import Method, Settings, parse_prior_layers, resolve_prune_layer
from .errors import InputError, ModelError
from .models import EncodedVideo, VideoModel, load_model
from .cache import VisualCache
from .prior import keyframe_prior
from .selectors.visionzip import FrameSelection, select_video
from .video import Frames, read_video_bounded

StageCallback = Callable[[str], None]  # told what the pipeline is doing now, for progress displays


@dataclass
class Visual:
    """The query-independent work for one video: decoded frames and what the vision stage made of them."""

    video: str
    frames: Frames
    encoded: EncodedVideo  # for the answering model
    prior_encoded: EncodedVideo  # for the prior model (the same object when the model is its own prior)
    timings: dict[str, float]  # decode_s, vision_s, and prior_vision_s with an assistant prior model

    def take_timings(self) -> dict[str, float]:
        """The cost of this work for the first question that uses it; later questions got it free."""
        timings, self.timings = self.timings, {"decode_s": 0.0, "vision_s": 0.0}
        return dict(timings)


@dataclass
class Plan:
    """Where the visual-token budget goes for one (video, question): everything but the answer."""

    video: str
    question: str
    frames: Frames  # one per model frame: the first sampled frame of each (see `group_frames`)
    encoded: EncodedVideo
    weights: torch.Tensor  # (F,) normalised frame weights (uniform unless the prior ran)
    budgets: torch.Tensor  # (F,) tokens kept per frame
    selections: list[FrameSelection] | None  # None when nothing was compressed
    visual_tokens: torch.Tensor  # (N, D) what the LLM receives: kept frame tokens, then the extra tokens
    kept_index: torch.Tensor  # (N,) where each of those tokens sat in the uncompressed video's tokens
    timings: dict[str, float] = field(default_factory=dict)
    # dytok-fastv: the prefill, run up to the prune layer and pruned there; `answer` finishes it.
    prefill: fastv.PrunedPrefill | None = None

    @property
    def kept_tokens(self) -> int:
        return int(self.budgets.sum())


@dataclass
class Answer:
    plan: Plan
    text: str
    token_ids: list[int]
    timings: dict[str, float]


class _FirstTokenClock(LogitsProcessor):
    """Notes when generation first asks for next-token scores: the prompt's prefill is done then."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.at is None:
            self.at = time.perf_counter()
        return scores


class _CallbackStreamer(TextStreamer):
    """Hands decoded text to a callback as whole words become available."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


def sampled_fps(frames: Frames) -> float | None:
    """Sampled frames per second of video, counted as Qwen's processors do; None when unknown."""
    if frames.video_fps > 0 and frames.total_frames > 0:
        return len(frames.indices) / frames.total_frames * frames.video_fps
    return None


def group_frames(frames: Frames, per_group: int) -> Frames:
    """The first sampled frame of each group of `per_group` that a model merges into one frame.

    Reports and keyframe exports then have one entry per budgeted frame, timed where it starts.
    """
    if per_group == 1:
        return frames
    firsts = range(0, len(frames.indices), per_group)
    return dataclasses.replace(
        frames,
        images=frames.images[list(firsts)],
        indices=tuple(frames.indices[i] for i in firsts),
        timestamps=tuple(frames.timestamps[i] for i in firsts),
    )


class Pipeline:
    """Models load on first use, so a video that cannot be read fails before a model is loaded."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: VideoModel | None = None,
        prior: VideoModel | None = None,
        cache: VisualCache | None = None,
    ):
        self.settings = settings
        self.cache = cache
        if model is not None:
            self.model = model
        if prior is not None:
            self.prior = prior

    def _load(self, name: str) -> VideoModel:
        settings = self.settings
        return load_model(
            name, device=settings.device, dtype=settings.dtype, trust_remote_code=settings.trust_remote_code
        )

    @cached_property
    def model(self) -> VideoModel:
        return self._load(self.settings.model)

    @cached_property
    def prior(self) -> VideoModel:
        return self._load(self.settings.prior_model) if self.settings.prior_model else self.model

    @cached_property
    def prune_layer(self) -> int:
        try:
            return resolve_prune_layer(self.settings.prune_layer, self.model.num_layers)
        except ValueError as error:
            raise InputError(str(error)) from None

    @cached_property
    def prior_layers(self) -> tuple[int, ...]:
        if self.settings.method is Method.dytok_fastv:
            # The layers that run on every token anyway; by default all of them.
            spec = self.settings.prior_layers or "all"
            try:
                return parse_prior_layers(spec, self.prune_layer + 1)
            except ValueError:
                raise InputError(
                    f"--prior-layers {spec!r} must lie within 0-{self.prune_layer} (--prune-layer) for --method dytok-fastv"
                ) from None
        try:
            return parse_prior_layers(self.settings.prior_layers, self.prior.num_layers)
        except ValueError as error:
            raise InputError(str(error)) from None

    @property
    def prior_name(self) -> str | None:
        if self.settings.method is Method.dytok_fastv:
            return self.settings.model
        if self.settings.method is not Method.dytok:
            return None
        return self.settings.prior_model or self.settings.model

    def read(self, video: str | Path) -> Frames:
        sampling = self.settings.sampling
        backend = self.settings.backend.value
        return read_video_bounded(video, timeout_s=self.settings.decode_timeout, backend=backend, **sampling)

    def prepare(self, video: str | Path, on_stage: StageCallback | None = None) -> Visual:
        """Decode and encode a video once; every question on it reuses the result."""
        stage = on_stage or (lambda message: None)
        if self.cache is not None:
            key = self.cache.key(video, self._cache_identity())
            hit = self.cache.load(key, video, self.model.device)
            if hit is not None:
                return hit
        started = time.perf_counter()
        stage("Decoding")
        frames = self.read(video)
        decoded = time.perf_counter()
        if "model" not in self.__dict__:
            stage(f"Loading {self.settings.model}")
        model = self.model
        loaded = time.perf_counter()
        stage(f"Encoding {len(frames.indices)} frames")
        fps = sampled_fps(frames)
        encoded = model.encode(frames.images, fps=fps)
        timings = {"decode_s": decoded - started, "vision_s": time.perf_counter() - loaded}
        prior_encoded = encoded
        if self.settings.method is Method.dytok and self.prior is not self.model:
            stage(f"Encoding {len(frames.indices)} frames for the prior model")
            encoding_started = time.perf_counter()
            prior_encoded = self.prior.encode(frames.images, fps=fps)
            if prior_encoded.num_frames != encoded.num_frames:
                raise ModelError(
                    f"the prior model groups the video into {prior_encoded.num_frames} frames, "
                    f"the answering model into {encoded.num_frames}; use a prior model of the same family"
                )
            # Part of what the prior costs, not the answering model's vision.
            timings["prior_vision_s"] = time.perf_counter() - encoding_started
        visual = Visual(str(video), frames, encoded, prior_encoded, timings)
        if self.cache is not None:
            self.cache.store(key, visual)
        return visual

    def _cache_identity(self) -> dict[str, Any]:
        """Everything besides the file's bytes that changes the query-independent result."""
        settings = self.settings
        model = self.model
        identity = {
            "sampling": settings.sampling,
            "backend": settings.backend.value,
            "model": settings.model,
            "dtype": str(model.model.dtype),
            "device": model.device.type,
        }
        if settings.method is Method.dytok and settings.prior_model:
            identity["prior_model"] = settings.prior_model
            identity["prior_dtype"] = str(self.prior.model.dtype)
        return identity

    def plan(self, video: str | Path | Visual, question: str, on_stage: StageCallback | None = None) -> Plan:
        stage = on_stage or (lambda message: None)
        visual = video if isinstance(video, Visual) else self.prepare(video, on_stage)
        timings = visual.take_timings()
        encoded = visual.encoded
        if self.settings.method is Method.dytok_fastv:
            return self._plan_single_pass(visual, question, timings, stage)

        started = time.perf_counter()
        if self.settings.method is Method.dytok:
            stage("Computing the keyframe prior")
            weights = keyframe_prior(self.prior, visual.prior_encoded, question, self.prior_layers)
        else:
            weights = uniform_weights(encoded.num_frames)
        timings["prior_s"] = timings.pop("prior_vision_s", 0.0) + time.perf_counter() - started

        num_frames, per_frame = encoded.num_frames, encoded.tokens_per_frame
        if self.settings.method is Method.none:
            budgets = torch.full((num_frames,), per_frame, dtype=torch.long)
            selections, kept = None, encoded.features.flatten(0, 1)
            kept_index = encoded.kept_index([torch.arange(per_frame)] * num_frames)
        else:
            budget = total_budget(self.settings.ratio, num_frames, per_frame)
            budgets = allocate_budgets(weights, budget, cap=per_frame)
            kept, selections = select_video(encoded.features, encoded.attention, encoded.keys, budgets)
            kept_index = encoded.kept_index([selection.token_index for selection in selections])
        return Plan(
            video=visual.video,
            question=question,
            frames=group_frames(visual.frames, encoded.frames_per_group),
            encoded=encoded,
            weights=weights,
            budgets=budgets,
            selections=selections,
            visual_tokens=torch.cat([kept, encoded.extra]),
            kept_index=kept_index,
            timings=timings,
        )

    def _plan_single_pass(self, visual: Visual, question: str, timings: dict[str, float], stage: StageCallback) -> Plan:
        """dytok-fastv: weights, budgets and kept tokens come from the prefill itself, run up to the
        prune layer; the prior is free, so all of its time is prefill time."""
        encoded = visual.encoded
        stage(f"Prefilling to layer {self.prune_layer}")
        started = time.perf_counter()
        prefill = fastv.prune(self.model, encoded, question, self.settings.ratio, self.prune_layer, self.prior_layers)
        timings["prior_s"] = 0.0
        timings["prefill_s"] = time.perf_counter() - started
        selections = [
            FrameSelection(encoded.features[f, index.to(encoded.features.device)], index.numel(), 0, index)
            for f, index in enumerate(prefill.token_index)
        ]
        return Plan(
            video=visual.video,
            question=question,
            frames=group_frames(visual.frames, encoded.frames_per_group),
            encoded=encoded,
            weights=prefill.weights,
            budgets=prefill.budgets,
            selections=selections,
            visual_tokens=torch.cat([*(s.tokens for s in selections), encoded.extra]),
            kept_index=encoded.kept_index(prefill.token_index),
            timings=timings,
            prefill=prefill,
        )

    def answer(
        self, plan: Plan, on_text: Callable[[str], None] | None = None, force_length: bool = False
    ) -> Answer:
        """Generate the answer for `plan`. `force_length` ignores end-of-sequence so every answer is
        `max_new_tokens` long: benchmarks compare decoding speed over equal lengths."""
        settings = self.settings
        generation = copy.deepcopy(self.model.model.generation_config)
        if force_length:
            generation.min_new_tokens = settings.max_new_tokens
        if settings.temperature > 0:
            generation.update(max_new_tokens=settings.max_new_tokens, do_sample=True, temperature=settings.temperature)
        else:
            generation.update(max_new_tokens=settings.max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        clock = _FirstTokenClock()
        streamer = _CallbackStreamer(self.model.tokenizer, on_text) if on_text else None
        started = time.perf_counter()
        if plan.prefill is not None:
            cache, _ = fastv.finish(self.model, plan.prefill)
            ids = plan.prefill.input_ids
            inputs = {
                "input_ids": ids, "attention_mask": torch.ones_like(ids),
                "position_ids": plan.prefill.position_ids,
                **fastv.cache_argument(type(self.model.model).forward, cache),
            }
        else:
            inputs = self.model.build_inputs(plan.question, plan.visual_tokens, plan.kept_index, video=plan.encoded)
        with torch.inference_mode():
            token_ids = self.model.generate(inputs, generation, LogitsProcessorList([clock]), streamer)
        finished = time.perf_counter()
        timings = dict(plan.timings)
        # A single pass began in `plan`, up to the prune layer.
        earlier = plan.timings.get("prefill_s", 0.0)
        timings["prefill_s"] = earlier + (clock.at or finished) - started
        timings["generate_s"] = earlier + finished - started
        return Answer(plan=plan, text=self.model.decode(token_ids), token_ids=token_ids.tolist(), timings=timings)

    def ask(
        self,
        video: str | Path | Visual,
        question: str,
        on_text: Callable[[str], None] | None = None,
        on_stage: StageCallback | None = None,
        force_length: bool = False,
    ) -> Answer:
        plan = self.plan(video, question, on_stage)
        if on_stage:
            on_stage("Generating")
        answer = self.answer(plan, on_text, force_length)
        # Model loading is a one-off per process, so it is not part of a question's cost.
        answer.timings["total_s"] = sum(answer.timings[key] for key in ("decode_s", "vision_s", "prior_s", "generate_s"))
        return answer
