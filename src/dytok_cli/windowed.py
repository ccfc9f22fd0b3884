"""A long video window by window, as `summarize` describes it and `find` scores it.

1. `timeline`  every frame's start time, read from the packets without decoding; a file that is not a
               usable video fails here, before a model loads.
2. `segment`   windows at shot cuts (PySceneDetect, `media/shots.py`; short shots merged, long ones
               split), or fixed windows of `--window` seconds (`math/windows.py`).
3. `sample`    frames picked by time over the whole video (`--fps`), each window keeping those that
               start inside it (at most `--max-frames`).
4. per window  only its frames decoded (`read_window`), as a clip of their own that keeps their true times.

`scan` runs them for a question: each window's frames encoded (once, with a vision cache: a later question
reads them back) and read by the keyframe prior (`prefill.prior_pass.window_prior`), which scores the
window on a scale every window of every video shares, window after window, so no two windows' frames or
visual tokens are ever alive at once and memory stays flat however long the video is.

`whole_video` and `ask_whole` answer a question from the whole video (`dytok ask --whole`): the scan says
where, the best windows' frames (`math.windows.whole_video_frames`) answer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .config import (
    SUMMARY_FPS,
    SUMMARY_MAX_FRAMES,
    SUMMARY_MAX_WINDOW_S,
    SUMMARY_MIN_WINDOW_S,
    WHOLE_HINT_GAP_S,
    Device,
    Settings,
)
from .errors import InputError
from .files import write_atomically
from .gpu import clock
from .math.layers import parse_prior_layers
from .math.windows import Window, fixed_windows, shot_windows, whole_video_frames, window_samples
from .media.shots import ADAPTIVE_THRESHOLD, detect_cuts
from .media.video import Timeline, call_bounded, read_frames, sample_indices, video_timeline
from .timecode import short_hms
from .types import Answer, Frames, Question

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from .pipeline import Pipeline, StageCallback


@dataclass(frozen=True)
class Segmentation:
    """How a video is cut into windows: at shot cuts (`window` None), merged to at least `min_window`
    seconds and split to at most `max_window`, or into fixed windows of `window` seconds."""

    window: float | None = None
    min_window: float = SUMMARY_MIN_WINDOW_S
    max_window: float = SUMMARY_MAX_WINDOW_S
    threshold: float = ADAPTIVE_THRESHOLD

    def __post_init__(self) -> None:
        if self.window is not None and not (math.isfinite(self.window) and self.window > 0):
            raise ValueError(f"--window must be a positive number of seconds, not {self.window:g}")
        if not (math.isfinite(self.min_window) and self.min_window > 0):
            raise ValueError(f"--min-window must be a positive number of seconds, not {self.min_window:g}")
        if not (math.isfinite(self.max_window) and self.max_window >= 2 * self.min_window):
            raise ValueError(f"--max-window ({self.max_window:g} s) must be at least twice --min-window "
                             f"({self.min_window:g} s), so a long shot splits into windows no shorter than it")

    def record(self) -> dict[str, Any]:
        if self.window is not None:
            return {"mode": "fixed", "window_s": self.window}
        return {"mode": "shots", "detector": "pyscenedetect-adaptive", "threshold": self.threshold,
                "min_window_s": self.min_window, "max_window_s": self.max_window}


def default_fps(device: Device) -> float:
    """--fps when not given: what keeps an hour affordable where the model runs."""
    from .models import resolve_device

    return SUMMARY_FPS["cpu" if resolve_device(device).type == "cpu" else "accelerator"]


class CutsStore(Protocol):
    """Where a video's shot cuts are kept for a later run, by detection threshold."""

    def cuts(self, threshold: float) -> list[float] | None:
        """The cuts found before at `threshold`, or None."""

    def save_cuts(self, threshold: float, cuts: list[float]) -> None:
        ...


class ShotCuts:
    """A video's shot cuts in `directory`, one small JSON file per threshold, named by a digest of the file's
    bytes (`digest`) and written whole: shot detection reads every frame, so a later run skips it."""

    def __init__(self, directory: Path, digest: str) -> None:
        self.directory, self.digest = Path(directory), digest

    def _path(self, threshold: float) -> Path:
        return self.directory / f"cuts-{self.digest[:32]}-{threshold:g}.json"

    def cuts(self, threshold: float) -> list[float] | None:
        try:
            stored = json.loads(self._path(threshold).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing, or not ours: found again
        return stored["cuts"] if isinstance(stored, dict) and isinstance(stored.get("cuts"), list) else None

    def save_cuts(self, threshold: float, cuts: list[float]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self._path(threshold), json.dumps({"cuts": cuts}))


class KeptCuts:
    """A video's shot cuts kept in memory, by threshold: its later questions in this process find them here
    where no vision cache keeps them on disk."""

    def __init__(self) -> None:
        self.found: dict[float, list[float]] = {}

    def cuts(self, threshold: float) -> list[float] | None:
        return self.found.get(threshold)

    def save_cuts(self, threshold: float, cuts: list[float]) -> None:
        self.found[threshold] = cuts


# --- 1. timeline ----------------------------------------------------------------------------------------


def timeline(video: str, settings: Settings) -> Timeline:
    return call_bounded(video_timeline, video, timeout_s=settings.decode_timeout, what="reading the frame times")


# --- 2. segment -----------------------------------------------------------------------------------------


def _shot_timeout(settings: Settings, duration: float) -> float | None:
    """Shot detection reads every frame: --decode-timeout for every 2 minutes of video (at the default,
    detection at real-time speed; a hung decoder makes none)."""
    return None if settings.decode_timeout is None else settings.decode_timeout * max(1.0, duration / 120)


def segment(video: str, line: Timeline, segmentation: Segmentation, settings: Settings,
            store: CutsStore | None) -> tuple[list[Window], list[float] | None]:
    """The windows, and the shot cuts they came from (None for fixed windows)."""
    duration = line.duration_s
    if segmentation.window is not None:
        return fixed_windows(duration, segmentation.window), None
    cuts = store.cuts(segmentation.threshold) if store is not None else None
    if cuts is None:
        cuts = call_bounded(detect_cuts, video, timeout_s=_shot_timeout(settings, duration), what="shot detection",
                            threshold=segmentation.threshold)
        if store is not None:
            store.save_cuts(segmentation.threshold, cuts)
    windows = shot_windows(cuts, duration, min_s=segmentation.min_window, max_s=segmentation.max_window)
    return windows, cuts


# --- 3. sample ------------------------------------------------------------------------------------------


def sample(line: Timeline, windows: Sequence[Window], settings: Settings) -> list[list[int]]:
    """Each window's source frames: the frame on screen every 1/fps s from the start, at most max_frames."""
    picked = sample_indices(line.total_frames, fps=settings.fps, frame_times=line.times)
    return window_samples(line.times, picked, windows, settings.max_frames or SUMMARY_MAX_FRAMES)


# --- 4. one window's frames -----------------------------------------------------------------------------


def as_clip(frames: Frames, line: Timeline, window: Window) -> Frames:
    """A window's decoded frames described as a video of their own (the frames that start inside the
    window, its length): what a model that derives its sampling rate from them (Qwen2.5-VL) needs. The
    frames keep their source numbers and their true times."""
    first, stop = np.searchsorted(np.round(line.times * 1000), [round(window.start * 1000), round(window.end * 1000)])
    return dataclasses.replace(frames, total_frames=max(int(stop - first), len(frames.indices)),
                               duration_s=window.length, fps_frames=None)


def read_window(video: str, line: Timeline, window: Window, indices: Sequence[int], settings: Settings) -> Frames:
    """Decode only `indices` of `video`, the frames sampled in `window`, as a clip of their own (`as_clip`)."""
    frames = call_bounded(read_frames, video, timeout_s=settings.decode_timeout, indices=list(indices),
                          backend=settings.backend.value)
    return as_clip(frames, line, window)


def window_part(window: Window, indices: Sequence[int]) -> dict[str, Any]:
    """What, beside the file and the settings, makes a window's frames what they are: the vision cache's key
    for them (`Pipeline.prepare_part`)."""
    return {"window_ms": [round(window.start * 1000), round(window.end * 1000)], "frames": [int(i) for i in indices]}


# --- the question's score for every window -----------------------------------------------------------------


class ScanProgress(Protocol):
    """What a display is told while a video's windows are scored."""

    def windows(self, total: int, done: int) -> None:
        """The video has `total` windows (`done`: always 0 here, as nothing of a scan is resumed)."""

    def stage(self, message: str) -> None:
        """What is happening now within a step (reading frames, encoding, the prior)."""

    def step(self, message: str) -> None:
        """A step of the scan begins (finding shots)."""

    def scored(self, index: int, window: Window, seconds: float) -> None:
        """Window `index` (from 0) scored, in `seconds`."""


class _Quiet:
    def windows(self, total: int, done: int) -> None:
        pass

    def stage(self, message: str) -> None:
        pass

    def step(self, message: str) -> None:
        pass

    def scored(self, index: int, window: Window, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class ScoredWindow:
    """One window as the question's prior read it. Its frames are the model's (a Qwen temporal patch of two
    sampled frames is one), each timed where its first sampled frame starts."""

    index: int
    window: Window
    sampled: tuple[int, ...]  # source frame number of every frame sampled in the window, ascending
    frames_per_group: int  # sampled frames the model merges into one of its frames (Qwen's temporal patch: 2)
    frames: tuple[int, ...]  # source frame number of each model frame's first sampled frame
    timestamps: tuple[float, ...]  # their start times, seconds
    weights: tuple[float, ...]  # the keyframe prior within the window: normalised over its frames, as DyToK's
    frame_scores: tuple[float, ...]  # each frame's attention on the scale every window shares
    score: float  # the window's: the mean of its frames' (`WindowPrior.score`)
    cached: bool  # its frames and their encoding were read back from the vision cache
    timings: dict[str, float]

    @property
    def peak(self) -> float:
        """When the frame with the highest score starts: where in the window the question points."""
        return self.timestamps[int(np.argmax(self.frame_scores))]

    @property
    def peak_frame(self) -> int:
        """The source frame number where the frame with the highest score starts."""
        return self.frames[int(np.argmax(self.frame_scores))]

    def record(self) -> dict[str, Any]:
        return {
            "index": self.index, "start": self.window.start, "end": self.window.end, "opens": self.window.opens,
            "score": self.score, "peak": round(self.peak, 3), "frames": list(self.frames),
            "timestamps": [round(t, 3) for t in self.timestamps], "weights": [round(w, 5) for w in self.weights],
            "frame_scores": list(self.frame_scores), "cached": self.cached,
            "timings": {key: round(value, 4) for key, value in self.timings.items()},
        }


@dataclass
class Scan:
    """Every window of one video, scored for one question."""

    video: str
    duration_s: float
    segmentation: Segmentation
    cuts: list[float] | None  # None with fixed windows
    windows: list[ScoredWindow]
    line: Timeline = field(repr=False)  # every frame's start time: a later question on the video reads them here
    timings: dict[str, float] = field(default_factory=dict)


def score_window(pipeline: Pipeline, video: str, line: Timeline, index: int, window: Window, indices: Sequence[int],
                 question: Question, layers: tuple[int, ...], progress: ScanProgress) -> ScoredWindow:
    """Decode and encode one window (or read it back from the vision cache) and read the prior over it;
    nothing of its frames outlives this call but its times and scores."""
    from .prefill.prior_pass import window_prior  # torch: only once a window is scored

    settings = pipeline.settings
    visual = pipeline.prepare_part(video, window_part(window, indices), lambda: read_window(video, line, window, indices, settings),
                                   progress.stage)
    started = clock(pipeline.prior.device)
    progress.stage("Computing the keyframe prior")
    read = window_prior(pipeline.prior, visual.prior_encoded, question, layers)
    prior_s = clock(pipeline.prior.device) - started
    encoded = visual.prior_encoded
    firsts = visual.frames.group_starts(encoded.frames_per_group)
    return ScoredWindow(
        index=index, window=window, sampled=visual.frames.indices, frames_per_group=encoded.frames_per_group,
        frames=firsts.indices, timestamps=firsts.timestamps,
        weights=tuple(read.weights.tolist()), frame_scores=tuple(read.frame_scores.tolist()), score=read.score,
        cached=visual.cached,
        timings={"decode_s": visual.timings.get("decode_s", 0.0),
                 "vision_s": visual.timings.get("vision_s", 0.0) + visual.timings.get("prior_vision_s", 0.0),
                 "prior_s": prior_s},
    )


def scan(pipeline: Pipeline, video: str, question: str | Question, segmentation: Segmentation,
         layers: tuple[int, ...], *, cuts: CutsStore | None = None, progress: ScanProgress | None = None,
         line: Timeline | None = None) -> Scan:
    """Every window of `video` scored for `question` by the prior model's attention at `layers`, window by
    window in bounded memory (InputError, a VideoError among them, for a video that cannot be used). With the
    pipeline's vision cache each window's encoding is kept, so a later question reads it back; `cuts` keeps
    the shot cuts likewise. `line`: the video's `timeline`, when the caller has read it already."""
    progress = progress or _Quiet()
    question = Question.of(question)
    settings = pipeline.settings
    started = time.perf_counter()
    if line is None:
        progress.stage("Reading frame times")
        line = timeline(video, settings)
    timed = time.perf_counter()
    if segmentation.window is None:
        progress.step("Finding shots")
    windows, found = segment(video, line, segmentation, settings, cuts)
    segmented = time.perf_counter()
    samples = sample(line, windows, settings)
    progress.windows(len(windows), 0)
    scored = []
    for index, (window, indices) in enumerate(zip(windows, samples)):
        begun = time.perf_counter()
        scored.append(score_window(pipeline, video, line, index, window, indices, question, layers, progress))
        progress.scored(index, window, time.perf_counter() - begun)
    finished = time.perf_counter()
    timings = {"timeline_s": timed - started, "shots_s": segmented - timed}
    for key in ("decode_s", "vision_s", "prior_s"):
        timings[key] = sum(item.timings[key] for item in scored)
    timings.update(windows_s=finished - segmented, total_s=finished - started)
    return Scan(video=video, duration_s=line.duration_s, segmentation=segmentation, cuts=found, windows=scored,
                timings=timings, line=line)


# --- a question answered from the whole video -----------------------------------------------------------


class StageProgress:
    """A scan's progress told to a display of one stage line (`Pipeline`'s StageCallback): the window being
    scored, then what is done to it."""

    def __init__(self, on_stage: StageCallback) -> None:
        self.on_stage = on_stage
        self.total = self.done = 0

    def windows(self, total: int, done: int) -> None:
        self.total, self.done = total, done

    def stage(self, message: str) -> None:
        self.on_stage(f"Window {self.done + 1}/{self.total}: {message}" if self.total else message)

    def step(self, message: str) -> None:
        self.on_stage(message)

    def scored(self, index: int, window: Window, seconds: float) -> None:
        self.done = index + 1


def sparse_note(frames: Frames) -> str | None:
    """What `ask` says once, without `--whole`, about a video whose frames lie far apart: that --whole answers
    from the parts that matter; None for frames close enough."""
    gap = frames.duration_s / max(1, len(frames.indices))
    if gap < WHOLE_HINT_GAP_S:
        return None
    return (f"{len(frames.indices)} frames over {short_hms(frames.duration_s)}, one every {gap:.0f} s; --whole answers "
            "from the parts of the video that matter (it scores every window first, so it costs more)")


def scan_layers(pipeline: Pipeline) -> tuple[int, ...]:
    """The layers a whole-video answer's scan reads: those the method reads its prior from (dytok-fastv's
    single pass: up to its prune layer); for a method that reads no prior (none, visionzip), DyToK's
    default, the deepest third of the model's full-attention layers."""
    if pipeline.prior_layers is not None:
        return pipeline.prior_layers
    prior = pipeline.prior
    return parse_prior_layers(None, prior.num_layers, prior.attention_layers())


def scanning(pipeline: Pipeline, fps: float) -> Pipeline:
    """A pipeline of `pipeline`'s models and vision cache that samples a whole video as `summarize` does:
    every 1/`fps` s, at most SUMMARY_MAX_FRAMES a window. Its windows' cache entries are `find`'s too."""
    from .pipeline import Pipeline  # torch: only once a video is scanned

    settings = dataclasses.replace(pipeline.settings, fps=fps, max_frames=SUMMARY_MAX_FRAMES)
    return Pipeline(settings, model=pipeline.model, prior=pipeline.prior, cache=pipeline.cache)


@dataclass(frozen=True)
class UsedWindow:
    """A window whose frames a whole-video answer sees, and which of them."""

    window: ScoredWindow
    frames: tuple[int, ...]  # source frame numbers taken, ascending
    timestamps: tuple[float, ...]  # their start times, seconds, from the packets

    def record(self) -> dict[str, Any]:
        window = self.window
        return {"index": window.index, "start": window.window.start, "end": window.window.end, "score": window.score,
                "peak": round(window.peak, 3), "frames": list(self.frames),
                "timestamps": [round(t, 3) for t in self.timestamps]}


@dataclass(frozen=True)
class Whole:
    """Where in a whole video a question points (`scan`: every window scored) and the frames its answer sees:
    the best windows' (`used`, best first), `budget` in all."""

    scan: Scan
    layers: tuple[int, ...]  # the prior's layers the scan read
    fps: float  # the windows' sampling
    budget: int
    used: list[UsedWindow]

    @property
    def frames(self) -> tuple[int, ...]:
        """Every frame taken, in time order: what the answer decodes."""
        return tuple(sorted(frame for used in self.used for frame in used.frames))

    def ranges(self) -> list[tuple[float, float]]:
        """The time ranges the frames come from: the used windows in time order, adjacent ones joined."""
        joined: list[tuple[float, float]] = []
        for start, end in sorted((used.window.window.start, used.window.window.end) for used in self.used):
            if joined and joined[-1][1] == start:
                joined[-1] = (joined[-1][0], end)
            else:
                joined.append((start, end))
        return joined

    @property
    def context(self) -> str:
        """The line the question gets beside the frames: where in how long a video they come from. The frames
        are not spread evenly over the video, and most families see no times at all."""
        spans = [f"{short_hms(start)}-{short_hms(end)}" for start, end in self.ranges()]
        listed = spans[0] if len(spans) == 1 else f"{', '.join(spans[:-1])} and {spans[-1]}"
        return f"These frames are from {listed} of a {short_hms(self.scan.duration_s)} video."

    def part(self) -> dict[str, Any]:
        """The vision cache's name for the frames taken (`Pipeline.prepare_part`): the same selection is read
        back by a later question that makes it."""
        return {"frames": list(self.frames)}

    def record(self) -> dict[str, Any]:
        """The `whole` field of `ask --whole`'s JSON record (docs/ask.md)."""
        found = self.scan
        return {
            "budget": self.budget, "fps": self.fps, "prior_layers": list(self.layers),
            "duration_s": round(found.duration_s, 3),
            "segmentation": {**found.segmentation.record(), "cuts": found.cuts},
            "context": self.context,
            "used": [used.record() for used in self.used],
            "windows": [{"index": window.index, "start": window.window.start, "end": window.window.end,
                         "score": window.score, "cached": window.cached} for window in found.windows],
            "cached_windows": sum(window.cached for window in found.windows),
            "timings": {key: round(value, 4) for key, value in found.timings.items()},
        }


def whole_video(pipeline: Pipeline, video: str, question: str | Question, segmentation: Segmentation,
                layers: tuple[int, ...], frames: int, *, fps: float | None = None, line: Timeline | None = None,
                cuts: CutsStore | None = None, progress: ScanProgress | None = None) -> Whole:
    """Where in `video` `question` points, and the `frames` frames its answer sees: every window `scan`ned
    (sampled at `fps`, default `default_fps`; with the pipeline's vision cache each window's encoding is kept
    for a later question, and the shot cuts unless `cuts` says where), then the best windows' frames
    (`whole_video_frames`). `line`: the video's `timeline`, when read already (an earlier question's
    `Scan.line`)."""
    settings = pipeline.settings
    if settings.uses_transcript:
        raise InputError("--subtitles and --speech are not yet part of a whole-video answer (--whole)")
    rate = fps if fps is not None else default_fps(settings.device)
    if cuts is None and pipeline.cache is not None:
        cuts = ShotCuts(pipeline.cache.directory / "shots", pipeline.cache.digest(video))
    found = scan(scanning(pipeline, rate), video, question, segmentation, layers, cuts=cuts, progress=progress,
                 line=line)
    windows, times = found.windows, found.line.times
    chosen = whole_video_frames([window.sampled for window in windows], [window.peak_frame for window in windows],
                                [window.score for window in windows], frames, group=windows[0].frames_per_group)
    used = [UsedWindow(windows[index], taken, tuple(float(times[frame]) for frame in taken)) for index, taken in chosen]
    return Whole(found, layers, rate, frames, used)


def ask_whole(pipeline: Pipeline, whole: Whole, question: str | Question, *,
              on_text: Callable[[str], None] | None = None, on_stage: StageCallback | None = None,
              stop: threading.Event | None = None, on_reasoning: Callable[[str], None] | None = None) -> Answer:
    """`question` answered from `whole`'s frames, as `Pipeline.ask` answers (the pipeline's method and ratio):
    the frames decoded by number, so with their true times (the times Qwen3-VL/3.5 and SmolVLM2 write into
    the prompt); encoded once for this selection (with the vision cache, kept under a part naming them); the
    question led by one line of context saying where in the video they come from."""
    settings, video, indices = pipeline.settings, whole.scan.video, list(whole.frames)

    def read() -> Frames:
        return call_bounded(read_frames, video, timeout_s=settings.decode_timeout, indices=indices,
                            backend=settings.backend.value)

    visual = pipeline.prepare_part(video, whole.part(), read, on_stage)
    asked = Question.of(question)
    asked = dataclasses.replace(asked, context="\n".join(text for text in (whole.context, asked.context) if text))
    return pipeline.ask(visual, asked, on_text=on_text, on_stage=on_stage, stop=stop, on_reasoning=on_reasoning)
