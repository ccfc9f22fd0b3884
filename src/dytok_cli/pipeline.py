"""The stages in order: decode -> encode -> prior -> allocate -> select -> generate.

`Pipeline.plan` stops before generation (what `inspect` shows); `Pipeline.ask` runs everything.
Models load once per pipeline, so one process can serve many videos and questions.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TextStreamer

from .config import Settings
from .errors import InputError, ModelError
from .math.layers import resolve_prune_layer
from .media.cache import VisualCache
from .media.video import read_video_bounded
from .methods import PlanContext, Strategy, strategy
from .models import VideoModel, load_model
from .prefill.prefix import PrefixReuse
from .types import Answer, EncodedVideo, Frames, Plan, Question, Visual

StageCallback = Callable[[str], None]  # told what the pipeline is doing now, for progress displays


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


class Pipeline:
    """The stages for one `Settings`: `prepare` a video once (decode and vision pass, cached with a
    `VisualCache`), then `plan` (budgets, no answer) or `ask` (plan and answer) any number of questions.

    Models load on first use, so a video that cannot be read fails before a model is loaded; pass
    `model`/`prior` to share loaded models between pipelines of different settings.
    """

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
        # The prompt prefix of the video whose questions are being asked, with that video's encoding.
        self._prefix: tuple[EncodedVideo, PrefixReuse] | None = None
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
    def strategy(self) -> Strategy:
        return strategy(self.settings.method)

    @cached_property
    def prune_layer(self) -> int | None:
        """The single pass's K, for a method that prunes inside the prefill; None otherwise."""
        if not self.strategy.traits.prunes_in_prefill:
            return None
        try:
            return resolve_prune_layer(self.settings.prune_layer, self.model.num_layers, self.model.attention_layers())
        except ValueError as error:
            raise InputError(str(error)) from None

    @cached_property
    def prior_layers(self) -> tuple[int, ...] | None:
        """The prior model's layers the method's prior reads; None for a method without a prior."""
        if not self.strategy.traits.reads_prior:
            return None
        reader = self.prior if self.strategy.traits.separate_prior_pass else self.model
        try:
            return self.strategy.prior_layers(
                self.settings.prior_layers, reader.num_layers, self.prune_layer, reader.attention_layers()
            )
        except ValueError as error:
            raise InputError(str(error)) from None

    @property
    def prior_name(self) -> str | None:
        return self.strategy.prior_model(self.settings.model, self.settings.prior_model)

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
        visual = self.encode(str(video), frames, on_stage)
        visual.timings["decode_s"] = decoded - started
        if self.cache is not None:
            self.cache.store(key, visual)
        return visual

    def encode(self, video: str, frames: Frames, on_stage: StageCallback | None = None) -> Visual:
        """The vision stage for frames decoded elsewhere (one window of a long video); `prepare` is this
        after decoding the video's own sample."""
        stage = on_stage or (lambda message: None)
        if "model" not in self.__dict__:
            stage(f"Loading {self.settings.model}")
        model = self.model
        loaded = time.perf_counter()
        stage(f"Encoding {len(frames.indices)} frames")
        encoded = model.encode(frames)
        timings = {"decode_s": 0.0, "vision_s": time.perf_counter() - loaded}
        prior_encoded = encoded
        if self.strategy.traits.separate_prior_pass and self.prior is not self.model:
            stage(f"Encoding {len(frames.indices)} frames for the prior model")
            encoding_started = time.perf_counter()
            prior_encoded = self.prior.encode(frames)
            if prior_encoded.num_frames != encoded.num_frames:
                raise ModelError(
                    f"the prior model groups the video into {prior_encoded.num_frames} frames, "
                    f"the answering model into {encoded.num_frames}; use a prior model of the same family"
                )
            # Part of what the prior costs, not the answering model's vision.
            timings["prior_vision_s"] = time.perf_counter() - encoding_started
        return Visual(video, frames, encoded, prior_encoded, timings)

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
        if self.strategy.traits.separate_prior_pass and settings.prior_model:
            identity["prior_model"] = settings.prior_model
            identity["prior_dtype"] = str(self.prior.model.dtype)
        return identity

    def _prefix_reuse(self, encoded: EncodedVideo) -> PrefixReuse | None:
        """What is kept of the prompt prefix of the video `encoded` came from, for its questions; a video
        asked about for the first time (or again after another) starts with nothing kept."""
        if not self.settings.prefix_cache:
            return None
        if self._prefix is None or self._prefix[0] is not encoded:
            self._prefix = (encoded, PrefixReuse())  # the last video's is freed
        return self._prefix[1]

    def release(self) -> None:
        """Free the prompt prefix kept for the current video's later questions (its questions are done)."""
        self._prefix = None

    def plan(self, video: str | Path | Visual, question: str | Question, on_stage: StageCallback | None = None) -> Plan:
        """Everything but the answer for (video, question): frame weights, budgets and kept tokens."""
        question = Question.of(question)
        visual = video if isinstance(video, Visual) else self.prepare(video, on_stage)
        reuse = self._prefix_reuse(visual.encoded)
        if reuse is not None:
            reuse.reused = 0
        context = PlanContext(
            model=self.model,
            prior=self.prior,
            ratio=self.settings.ratio,
            prior_layers=self.prior_layers,
            prune_layer=self.prune_layer,
            stage=on_stage or (lambda message: None),
            reuse=reuse,
        )
        plan = self.strategy.plan(context, visual, question, visual.take_timings())
        plan.reused_prefix_tokens = reuse.reused if reuse is not None else 0
        return plan

    def answer(
        self, plan: Plan, on_text: Callable[[str], None] | None = None, force_length: bool = False
    ) -> Answer:
        """Generate the answer for `plan`. `force_length` ignores end-of-sequence so every answer is
        `max_new_tokens` long: benchmarks compare decoding speed over equal lengths."""
        generation = self._generation_config(force_length)
        clock = _FirstTokenClock()
        streamer = _CallbackStreamer(self.model.tokenizer, on_text) if on_text else None
        started = time.perf_counter()
        reuse = self._prefix_reuse(plan.encoded)
        if reuse is not None:
            reuse.reused = 0
        inputs = self.strategy.generation_inputs(self.model, plan, reuse)
        if reuse is not None:
            # A method reuses its prefix in the plan or here, never in both.
            plan.reused_prefix_tokens = max(plan.reused_prefix_tokens, reuse.reused)
        with torch.inference_mode():
            token_ids = self.model.generate(inputs, generation, LogitsProcessorList([clock]), streamer)
        finished = time.perf_counter()
        timings = dict(plan.timings)
        # A single pass began in `plan`, up to the prune layer.
        earlier = plan.timings.get("prefill_s", 0.0)
        timings["prefill_s"] = earlier + (clock.at or finished) - started
        timings["generate_s"] = earlier + finished - started
        return Answer(plan=plan, text=self.model.decode(token_ids), token_ids=token_ids.tolist(), timings=timings)

    def _generation_config(self, force_length: bool = False) -> Any:
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
        return generation

    def complete(self, prompt: str) -> tuple[str, float]:
        """The answering model's reply to `prompt` alone, no video (what is written about a video after
        its frames were seen: chapter titles, a summary), and the seconds it took."""
        started = time.perf_counter()
        input_ids = self.model.text_prompt_ids(prompt).to(self.model.device)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        with torch.inference_mode():
            token_ids = self.model.generate(inputs, self._generation_config())
        return self.model.decode(token_ids), time.perf_counter() - started

    def ask(
        self,
        video: str | Path | Visual,
        question: str | Question,
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
