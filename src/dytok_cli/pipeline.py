"""The stages in order: decode -> encode -> prior -> allocate -> select -> generate.

`Pipeline.plan` stops before generation (what `inspect` shows); `Pipeline.ask` runs everything.
Models load once per pipeline, so one process can serve many videos and questions.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .config import DEFAULT_SPEECH_MODEL, Settings
from .errors import InputError, ModelError
from .gpu import clock
from .math.layers import resolve_prune_layer
from .media import subtitles
from .media.cache import VisualCache
from .media.speech import FRAMES_ALONE, Transcriber, audio_track
from .media.video import read_video_bounded
from .methods import PlanContext, Strategy, strategy
from .models import VideoModel, load_model, load_random_model
from .models.thinking import AnswerLength, ReasoningBudget, ReasoningProgress, ReasoningStreamer
from .prefill.prefix import PrefixReuse
from .types import HEARD, Answer, EncodedVideo, Frames, Plan, Question, Transcript, Visual

StageCallback = Callable[[str], None]  # told what the pipeline is doing now, for progress displays


class _FirstTokenClock(LogitsProcessor):
    """Notes when generation first asks for next-token scores: the prompt's prefill is done once its
    scores are computed, which on a GPU is later than they are asked for."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.at is None:
            self.at = clock(scores.device)
        return scores


class _StopWhenSet(StoppingCriteria):
    """Ends generation after the current token once `event` is set: how a caller stops an answer (a chat's
    Ctrl-C, a server's client gone) between two tokens, with nothing left half-done."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.fired = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.fired = self.event.is_set()
        return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)


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
        if cache is not None and settings.random_weights:
            # Random weights differ in every process: their vision features are worth nothing to a later run.
            raise InputError("--cache-dir keeps vision features for later runs; with --random-weights the weights "
                             "are new in every run, so drop one of them")
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
        if settings.random_weights:
            return load_random_model(name, device=settings.device, dtype=settings.dtype)
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

    @cached_property
    def transcriber(self) -> Transcriber:
        settings = self.settings
        return Transcriber(settings.speech_model or DEFAULT_SPEECH_MODEL, device=settings.device, dtype=settings.dtype,
                           decode_timeout=settings.decode_timeout, cache=self.cache)

    def transcript(self, video: str | Path, duration_s: float, on_stage: StageCallback | None = None) -> Transcript:
        """What is said in `video` (of `duration_s` seconds), as the settings ask: its subtitle file's lines,
        else with `speech` its audio track's; lines past the video's end clipped. No lines and a note saying
        why when neither gives any: the video is then answered from its frames alone."""
        return self._said(video, duration_s, on_stage, hear=False)[0]

    @property
    def hears(self) -> bool:
        """Whether `--speech` gives the answering model the audio track itself rather than a transcript."""
        return self.settings.speech and self.model.hears_audio()

    def _said(self, video: str | Path, duration_s: float, on_stage: StageCallback | None,
              hear: bool) -> tuple[Transcript, np.ndarray | None]:
        """`transcript`, and with `hear` the audio track's samples in place of its transcript (source HEARD, no
        lines), or None when the model hears nothing of it."""
        settings = self.settings
        notes = []
        if settings.subtitles is not None:
            found = subtitles.find(video, settings.subtitles)
            if found is None:
                notes.append("no subtitle file found")
            else:
                try:
                    lines = subtitles.clip(subtitles.read(found), duration_s)
                except subtitles.SubtitleError as error:
                    notes.append(str(error))
                else:
                    if lines:
                        return Transcript(str(found), lines), None
                    notes.append(f"{found} has no subtitle lines within the video")
        if settings.speech and hear:
            samples, note = audio_track(video, settings.decode_timeout)
            if samples is not None:
                return Transcript(HEARD, (), f"{'; '.join(notes)}; heard its audio instead" if notes else None), samples
            notes.append(note)
        elif settings.speech:
            if on_stage:
                on_stage("Transcribing its audio")
            heard = self.transcriber.transcribe(video)
            lines = subtitles.clip(heard.lines, duration_s)
            if lines:
                said = Transcript(heard.source, lines, f"{'; '.join(notes)}; transcribed its audio instead" if notes else None)
                return said, None
            notes.append(heard.note.removesuffix(f"; {FRAMES_ALONE}") if heard.note else "no speech within the video")
        return Transcript(None, (), f"{'; '.join(notes)}; {FRAMES_ALONE}"), None

    def prepare(self, video: str | Path, on_stage: StageCallback | None = None) -> Visual:
        """Decode and encode a video once, and find what is said in it if the settings ask; every question
        on it reuses the result."""
        visual = self._prepare_frames(video, on_stage)
        if self.settings.uses_transcript and visual.transcript is None:
            # What is said comes back as text, on the host: nothing is left running on a device after it; audio
            # the model hears comes back as its soft tokens, beside the frames' (never compressed).
            started = clock()
            visual.transcript, samples = self._said(video, visual.frames.duration_s, on_stage, hear=self.hears)
            if samples is not None:
                if on_stage:
                    on_stage("Encoding its audio")
                heard = dataclasses.replace(visual.encoded, audio=self.model.encode_audio(samples))
                if visual.prior_encoded is visual.encoded:  # an assistant prior model hears nothing: it weighs frames
                    visual.prior_encoded = heard
                visual.encoded = heard
            visual.timings["speech_s"] = clock(self.model.device) - started
        return visual

    def _prepare_frames(self, video: str | Path, on_stage: StageCallback | None = None) -> Visual:
        return self.prepare_part(video, self.settings.sampling, lambda: self.read(video), on_stage)

    def prepare_part(self, video: str | Path, part: dict[str, Any], read: Callable[[], Frames],
                     on_stage: StageCallback | None = None) -> Visual:
        """The vision stage for the frames `read` decodes from `video`, which `part` names (the settings'
        sampling of the whole video, or the frames of one window of a long one): with a vision cache,
        stored under the file, `part` and the settings, so a later call for the same part reads them back
        (`Visual.cached`) instead of decoding and encoding them again."""
        stage = on_stage or (lambda message: None)
        if self.cache is not None:
            key = self.cache.key(video, {**self._cache_identity(), "sampling": part})
            hit = self.cache.load(key, video, self.model.device)
            if hit is not None:
                return hit
        started = clock()  # decoding runs on the host
        stage("Decoding")
        frames = read()
        decoded = clock()
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
        loaded = clock(model.device)
        stage(f"Encoding {len(frames.indices)} frames")
        encoded = model.encode(frames, self.settings.max_pixels, self.settings.repeats)
        timings = {"decode_s": 0.0, "vision_s": clock(model.device) - loaded}
        prior_encoded = encoded
        if self.strategy.traits.separate_prior_pass and self.prior is not self.model:
            stage(f"Encoding {len(frames.indices)} frames for the prior model")
            encoding_started = clock(self.prior.device)
            prior_encoded = self.prior.encode(frames, self.settings.max_pixels, self.settings.repeats)
            if prior_encoded.num_frames != encoded.num_frames:
                raise ModelError(
                    f"the prior model groups the video into {prior_encoded.num_frames} frames, "
                    f"the answering model into {encoded.num_frames}; use a prior model of the same family"
                )
            # Part of what the prior costs, not the answering model's vision.
            timings["prior_vision_s"] = clock(self.prior.device) - encoding_started
        return Visual(video, frames, encoded, prior_encoded, timings)

    def _cache_identity(self) -> dict[str, Any]:
        """Everything besides the file's bytes and the frames sampled (`prepare_part`'s part) that changes the
        query-independent result."""
        settings = self.settings
        model = self.model
        identity = {
            "max_pixels": settings.max_pixels,
            "backend": settings.backend.value,
            "model": settings.model,
            "dtype": str(model.model.dtype),
            "device": model.device.type,
        }
        if settings.repeats != 0:  # only when not the default: exact reuse changes no feature, only a count
            identity["repeats"] = settings.repeats
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
        if self.settings.think and not self.model.can_think():
            raise ModelError(f"--think: {self.settings.model} has no chat template with a thinking mode")
        said = visual.transcript if self.settings.uses_transcript else None
        lines = ()
        if said is not None and not question.context:  # a question with text of its own beside the video keeps it
            lines = subtitles.covering(said.lines, visual.frames.timestamps)
            question = dataclasses.replace(question, context=subtitles.context(lines))
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
            thinking=self.settings.think,
        )
        plan = self.strategy.plan(context, visual, question, visual.take_timings())
        plan.reused_prefix_tokens = reuse.reused if reuse is not None else 0
        if said is not None:
            plan.transcript, plan.subtitles = said, lines
            plan.subtitle_tokens = self._context_tokens(question) if lines else self._audio_tokens(visual.encoded)
        plan.thinking = context.thinking
        return plan

    @staticmethod
    def _audio_tokens(encoded: EncodedVideo) -> int:
        """The prompt tokens the heard audio takes: each item's soft tokens and the two that mark it."""
        return sum(item.shape[0] + 2 for item in encoded.audio)

    def _context_tokens(self, question: Question) -> int:
        """The prompt tokens `question.context` takes: the prompt's length with it less without it."""
        without = dataclasses.replace(question, context="")
        return self.model.prompt_ids(question).shape[1] - self.model.prompt_ids(without).shape[1]

    def answer(
        self,
        plan: Plan,
        on_text: Callable[[str], None] | None = None,
        force_length: bool = False,
        stop: threading.Event | None = None,
        on_reasoning: Callable[[str], None] | None = None,
    ) -> Answer:
        """Generate the answer for `plan`, its text to `on_text` as it comes, and the text of any reasoning
        before it to `on_reasoning`. `force_length` ignores end-of-sequence so every answer is
        `max_new_tokens` long: benchmarks compare decoding speed over equal lengths. Setting `stop` (from
        another thread or a signal handler) ends the answer after the token being generated; the answer
        then says `stopped`."""
        model = self.model
        first_token = _FirstTokenClock()
        # Without a tokenizer (random weights) there are no words to stream: the ids come whole at the end.
        streams = (on_text or on_reasoning) and model.tokenizer is not None
        streamer = ReasoningStreamer(model.tokenizer, model.markers, on_text, on_reasoning) if streams else None
        started = clock(model.device)
        reuse = self._prefix_reuse(plan.encoded)
        if reuse is not None:
            reuse.reused = 0
        inputs = self.strategy.generation_inputs(model, plan, reuse)
        if reuse is not None:
            # A method reuses its prefix in the plan or here, never in both.
            plan.reused_prefix_tokens = max(plan.reused_prefix_tokens, reuse.reused)
        stopper = _StopWhenSet(stop) if stop is not None else None
        token_ids = self._generate(inputs, force_length, first_token, streamer, stopper)
        finished = clock(model.device)
        timings = dict(plan.timings)
        # A single pass began in `plan`, up to the prune layer.
        earlier = plan.timings.get("prefill_s", 0.0)
        timings["prefill_s"] = earlier + (first_token.at or finished) - started
        timings["generate_s"] = earlier + finished - started
        text, reasoning = self._texts(inputs["input_ids"], token_ids)
        if on_text and streamer is None:
            on_text(text)
        return Answer(plan, text, token_ids.tolist(), timings, stopped=bool(stopper and stopper.fired), reasoning=reasoning)

    def _generate(
        self,
        inputs: dict[str, Any],
        force_length: bool = False,
        first_token: LogitsProcessor | None = None,
        streamer: Any = None,
        stopper: StoppingCriteria | None = None,
        max_new_tokens: int | None = None,
    ) -> torch.Tensor:
        """New token ids (n,) for `inputs`, sampled and sized as the settings say; `max_new_tokens` caps
        the answer below the settings' (never above)."""
        settings, model = self.settings, self.model
        length = settings.max_new_tokens if max_new_tokens is None else min(max_new_tokens, settings.max_new_tokens)
        generation = copy.deepcopy(model.model.generation_config)
        generation.max_new_tokens = length
        if force_length:
            generation.min_new_tokens = length
        if settings.temperature > 0:
            generation.update(do_sample=True, temperature=settings.temperature)
        else:
            generation.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        processors = LogitsProcessorList([first_token] if first_token else [])
        stopping = StoppingCriteriaList([stopper] if stopper else [])
        prompt_ids = inputs["input_ids"]
        if model.markers is not None and not force_length:
            # A reasoning block (opened by the prompt, or by the model's first token) has an allowance of its
            # own, then is closed; --max-new-tokens counts the answer after it.
            progress = ReasoningProgress(model.markers, prompt_ids.shape[1], model.reasons_first(prompt_ids))
            processors.append(ReasoningBudget(progress, settings.max_reasoning_tokens))
            stopping.append(AnswerLength(progress, length))
            generation.max_new_tokens += settings.max_reasoning_tokens + 2  # and its two markers
        with torch.inference_mode():
            return model.generate(inputs, generation, processors, streamer, stopping_criteria=stopping)

    def _texts(self, prompt_ids: torch.Tensor, token_ids: torch.Tensor) -> tuple[str, str | None]:
        """The answer's text and the reasoning's (None without any) in the new tokens `token_ids` (n,)."""
        split = self.model.split_reasoning(prompt_ids, token_ids)
        text = self.model.decode(token_ids.new_tensor(split.answer))
        reasoning = self.model.decode(token_ids.new_tensor(split.reasoning)) if split.reasoning is not None else None
        return text, reasoning

    def complete(self, prompt: str, force_length: bool = False, max_new_tokens: int | None = None) -> tuple[str, float]:
        """The answering model's reply to `prompt` alone, no video (what is written about a video after
        its frames were seen: chapter titles, a summary), without any reasoning, and the seconds it took.
        `force_length` as in `answer`; `max_new_tokens` caps the reply below --max-new-tokens (a title),
        counted after any reasoning, which keeps its own allowance."""
        started = clock(self.model.device)
        input_ids = self.model.text_prompt_ids(prompt, self.settings.think).to(self.model.device)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        token_ids = self._generate(inputs, force_length, max_new_tokens=max_new_tokens)
        text, _ = self._texts(input_ids, token_ids)
        return text, clock(self.model.device) - started

    def ask(
        self,
        video: str | Path | Visual,
        question: str | Question,
        on_text: Callable[[str], None] | None = None,
        on_stage: StageCallback | None = None,
        force_length: bool = False,
        stop: threading.Event | None = None,
        on_reasoning: Callable[[str], None] | None = None,
    ) -> Answer:
        plan = self.plan(video, question, on_stage)
        if on_stage:
            on_stage("Generating")
        answer = self.answer(plan, on_text, force_length, stop, on_reasoning)
        # Model loading is a one-off per process, so it is not part of a question's cost.
        answer.timings["total_s"] = sum(answer.timings[key] for key in ("decode_s", "vision_s", "prior_s", "generate_s"))
        return answer
