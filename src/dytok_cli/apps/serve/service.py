"""One model in one process, a queue in front of it, and the videos it was asked about kept warm.

Requests are jobs run one at a time on the model's own thread; at most `queue` wait behind the running one
and the next is refused with a time to retry. A job streams what it generates back to the event loop as
events, and stops between two tokens when its client goes (`Pipeline.answer`'s `stop`).

A model that runs out of GPU memory frees every warm video and prompt prefix and the allocator's cache,
then tries the request once more before it answers 503; either way the next request finds that memory free.

Warm videos are keyed by the digest of their bytes, so the same video sent again (as another path, a
data: URL, a download) finds its decoded frames and vision features, and, for the same settings, the
pipeline that keeps its prompt prefix: a later question on it runs only its own tokens. Whether the model
reasons first changes only the prompt's end, so requests with and without reasoning share that prefix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

from ...config import Method, Settings
from ...errors import ModelError
from ...gpu import free_cached_memory
from ...media.cache import VisualCache
from ...media.sources import MediaFile
from ...pipeline import Pipeline
from ...types import Answer, Plan, Question, Visual
from .protocol import ApiError, Options

Key = TypeVar("Key")
Value = TypeVar("Value")


class LRU(Generic[Key, Value]):
    """The `limit` most recently used entries; the oldest goes (and what it holds is freed) to make room,
    told to `on_evict`."""

    def __init__(self, limit: int, on_evict: Callable[[Key, Value], None] | None = None) -> None:
        self.limit = limit
        self.on_evict = on_evict
        self._entries: OrderedDict[Key, Value] = OrderedDict()

    def get(self, key: Key) -> Value | None:
        if key in self._entries:
            self._entries.move_to_end(key)
        return self._entries.get(key)

    def put(self, key: Key, value: Value) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            evicted = self._entries.popitem(last=False)
            if self.on_evict:
                self.on_evict(*evicted)

    def items(self) -> list[tuple[Key, Value]]:
        return list(self._entries.items())

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Outcome:
    """A finished answer with what the response reports about it."""

    answer: Answer
    prompt_tokens: int  # the prompt as asked: its text and every visual token of the sampled frames
    finish_reason: str  # "stop": the model ended it; "length": max_tokens did
    settings: Settings  # what the request ran with, after clamping
    reasoning_tokens: int = 0  # generated before the answer: the reasoning and its markers


@dataclass(eq=False)  # jobs are kept in a set by identity
class Job:
    """One request's work, from the event loop's side: `events` receives ("ready", Plan), then ("reasoning",
    str) and ("text", str) as they come, then ("done", Outcome) or ("error", Exception), which end it."""

    settings: Settings
    media: MediaFile
    question: Question
    force_length: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    sent: set[str] = field(default_factory=set)  # the kinds of event emitted so far

    def emit(self, kind: str, value: Any) -> None:
        """From the model's thread: hand an event to the loop (dropped if the loop is gone)."""
        self.sent.add(kind)
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:
            pass


class Busy(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(429, f"the server is busy; retry in {retry_after} s", code="queue_full",
                         headers={"Retry-After": str(retry_after)})


class OutOfMemory(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(503, f"the model ran out of GPU memory on this request; every video and prefix it kept is "
                         f"freed: retry in {retry_after} s, or with fewer frames", code="out_of_memory",
                         headers={"Retry-After": str(retry_after)})


class Stopped(Exception):
    """A job whose client left before the model got to it."""


class Trimmed:
    """Streamed pieces of text passed on without the whitespace that ends them so far: it goes out before
    the next piece that has more, so the pieces join into the text as decoded whole (which is stripped;
    the streamer already drops the whitespace before the first word)."""

    def __init__(self, emit: Any) -> None:
        self.emit = emit
        self.held = ""

    def __call__(self, piece: str) -> None:
        text = self.held + piece
        body = text.rstrip()
        self.held = text[len(body):]
        if body:
            self.emit(body)


@dataclass(frozen=True)
class Limits:
    queue: int = 16  # requests that may wait behind the one running
    keep_videos: int = 4  # videos kept decoded and encoded, and prompt prefixes kept per (settings, video)


class Service:
    """The model, its queue and its warm videos; `settings` are the server's defaults and maxima."""

    def __init__(self, settings: Settings, limits: Limits = Limits(), cache: VisualCache | None = None) -> None:
        self.settings = settings
        self.limits = limits
        self.cache = cache
        base = Pipeline(settings, cache=cache)
        self.model = base.model  # loaded now: a model that cannot load stops the server before it listens
        if settings.think and not self.model.can_think():
            raise ModelError(f"--think: {settings.model} has no chat template with a thinking mode")
        self.prior = base.prior if settings.prior_model else None
        self._visuals: LRU[tuple, Visual] = LRU(limits.keep_videos, on_evict=self._release_prefixes)
        self._pipelines: LRU[tuple, Pipeline] = LRU(limits.keep_videos)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dytok-model")
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = 0
        self._durations: deque[float] = deque(maxlen=16)
        self.active: set[Job] = set()
        self.counts = {"answered": 0, "stopped": 0, "failed": 0, "refused": 0}

    # --- what a request may change ------------------------------------------------------------

    @property
    def max_frames(self) -> int:
        """The most frames any request samples: the server's --frames (with --fps, its --max-frames)."""
        return (self.settings.max_frames or self.settings.frames) if self.settings.fps else self.settings.frames

    def settings_for(self, options: Options) -> Settings:
        """The server's settings with the request's options, clamped to the server's maxima."""
        base = self.settings
        try:
            method = Method(options.method) if options.method is not None else base.method
        except ValueError:
            valid = ", ".join(member.value for member in Method)
            raise ApiError(400, f"method must be one of {valid}, not {options.method!r}", param="method") from None
        ratio = options.ratio
        if ratio is None and method.traits.compresses and base.method.traits.compresses:
            ratio = base.ratio
        changes: dict[str, Any] = {}
        if options.max_tokens is not None:
            changes["max_new_tokens"] = min(options.max_tokens, base.max_new_tokens)
        if options.think is not None:
            if options.think and not self.model.can_think():
                raise ApiError(400, f"enable_thinking: {base.model} has no chat template with a thinking mode",
                               param="chat_template_kwargs", code="invalid_value")
            changes["think"] = options.think
        if options.max_reasoning_tokens is not None:
            changes["max_reasoning_tokens"] = min(options.max_reasoning_tokens, base.max_reasoning_tokens)
        if options.temperature is not None:
            changes["temperature"] = float(options.temperature)
        temperature = changes.get("temperature", base.temperature)
        # A seed means nothing to greedy decoding, and clients send one by habit.
        changes["seed"] = (options.seed if options.seed is not None else base.seed) if temperature > 0 else None
        if options.fps is not None:
            changes.update(fps=float(options.fps), max_frames=min(options.frames or self.max_frames, self.max_frames))
        elif options.frames is not None:
            changes.update(frames=min(options.frames, self.max_frames), fps=None, max_frames=None)
        try:
            chosen = base.with_method(method, ratio) if (method, ratio) != (base.method, base.ratio) else base
            return dataclasses.replace(chosen, **changes)
        except ValueError as error:
            raise ApiError(400, str(error).replace("--", ""), param="method" if "method" in str(error) else None) from None

    # --- the queue ----------------------------------------------------------------------------

    def retry_after(self) -> int:
        """Seconds until the queue likely has room: the recent mean time of a request, per request ahead."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, min(3600, math.ceil(mean * (self.waiting + 1))))

    def submit(self, job: Job) -> None:
        """Queue `job` on the model's thread, or refuse it (429) when `limits.queue` already wait."""
        with self._lock:
            if self.waiting >= self.limits.queue + (0 if self.running else 1):
                self.counts["refused"] += 1
                raise Busy(self.retry_after())
            self.waiting += 1
        self.active.add(job)
        self._executor.submit(self._run, job)

    def finished(self, job: Job) -> None:
        self.active.discard(job)

    def shutdown(self) -> None:
        """Stop every answer and the model's thread (the server is going down)."""
        for job in list(self.active):
            job.stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job) -> None:
        with self._lock:
            self.waiting -= 1
            self.running += 1
        started = time.perf_counter()
        try:
            if job.stop.is_set():
                raise Stopped
            outcome = self._answer_in_memory(job)
            job.emit("done", outcome)
            self.counts["stopped" if outcome.answer.stopped else "answered"] += 1
        except Stopped as stopped:
            self.counts["stopped"] += 1
            job.emit("error", stopped)
        except Exception as error:  # reported to its client; the next job runs as usual
            self.counts["failed"] += 1
            job.emit("error", error)
        finally:
            job.media.discard()
            self._durations.append(time.perf_counter() - started)
            with self._lock:
                self.running -= 1

    # --- a job on the model's thread ------------------------------------------------------------

    def _answer_in_memory(self, job: Job) -> Outcome:
        """`_answer`; after running out of GPU memory, once more with every kept video and prefix freed, unless
        its client has had some of the answer already (it would get it twice). Out of memory again: a 503."""
        for attempt in range(2):
            try:
                return self._answer(job)
            except torch.OutOfMemoryError:
                if attempt or job.sent & {"text", "reasoning"}:
                    break
            # Past the handler: the error's traceback, and the tensors its frames held, are gone.
            self._free_memory()
        self._free_memory()
        raise OutOfMemory(self.retry_after())

    def _free_memory(self) -> None:
        """Every warm video and prompt prefix, and the allocator's cached blocks, given back."""
        self._visuals.clear()
        self._pipelines.clear()
        free_cached_memory()

    def _release_prefixes(self, key: tuple, visual: Visual) -> None:
        """A video no longer kept: the pipelines' prompt prefixes of it would keep its encoding alive."""
        for (_, digest), pipeline in self._pipelines.items():
            if digest == key[0]:
                pipeline.release()

    def _warm(self, settings: Settings, media: MediaFile) -> tuple[Pipeline, Visual]:
        """The pipeline for these settings and this video (its prefix kept), and the video's visual work."""
        # How long and how randomly the answer is generated, and whether reasoning opens it, change nothing of
        # the prompt before it (the thinking switch changes only the prompt's end, after the video).
        prompt_settings = dataclasses.replace(settings, max_new_tokens=1, temperature=0.0, seed=None, think=False,
                                              max_reasoning_tokens=1)
        pipeline_key = (prompt_settings, media.digest)
        pipeline = self._pipelines.get(pipeline_key)
        if pipeline is None:
            prior = self.prior if settings.prior_model else None
            pipeline = Pipeline(settings, model=self.model, prior=prior, cache=self.cache)
            self._pipelines.put(pipeline_key, pipeline)
        pipeline.settings = settings  # this request's generation settings; jobs run one at a time
        separate_prior = settings.prior_model if settings.method.traits.separate_prior_pass else None
        visual_key = (media.digest, json.dumps(settings.sampling, sort_keys=True), settings.backend, separate_prior)
        visual = self._visuals.get(visual_key)
        if visual is None:
            visual = pipeline.prepare(media.path)
            self._visuals.put(visual_key, visual)
        return pipeline, visual

    def _answer(self, job: Job) -> Outcome:
        # The video's file stays until the job ends (`_run`): a second attempt decodes it again.
        pipeline, visual = self._warm(job.settings, job.media)
        plan: Plan = pipeline.plan(visual, job.question)
        if job.stop.is_set():
            raise Stopped
        if "ready" not in job.sent:  # a second attempt's plan is the first one's
            job.emit("ready", plan)
        answer = pipeline.answer(plan, Trimmed(lambda text: job.emit("text", text)), job.force_length, job.stop,
                                 on_reasoning=Trimmed(lambda text: job.emit("reasoning", text)))
        answer.timings["total_s"] = sum(answer.timings.get(key, 0.0) for key in ("decode_s", "vision_s", "prior_s", "generate_s"))
        prompt_ids = self.model.prompt_ids(plan.question, plan.thinking)
        answered = len(self.model.split_reasoning(prompt_ids, torch.tensor(answer.token_ids, dtype=torch.long)).answer)
        prompt_tokens = self.model.uncompressed_prompt_length(plan.question, plan.encoded, plan.thinking)
        return Outcome(answer, prompt_tokens, self._finish_reason(answer, answered, job), job.settings,
                       reasoning_tokens=len(answer.token_ids) - answered)

    def _finish_reason(self, answer: Answer, answered: int, job: Job) -> str:
        """"stop" when the model ended its answer, "length" when the answer's allowance did (`answered`: its
        tokens after any reasoning; with ignore_eos the allowance counts every token)."""
        ends = self.model.model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, list) else [ends])
        if answer.token_ids and answer.token_ids[-1] in ends:
            return "stop"
        counted = len(answer.token_ids) if job.force_length else answered
        return "length" if counted >= job.settings.max_new_tokens else "stop"
