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

from .config import SUMMARY_FPS, SUMMARY_MAX_FRAMES, SUMMARY_MAX_WINDOW_S, SUMMARY_MIN_WINDOW_S, Device, Settings
from .files import write_atomically
from .gpu import clock
from .math.windows import Window, fixed_windows, shot_windows, window_samples
from .media.shots import ADAPTIVE_THRESHOLD, detect_cuts
from .media.video import Timeline, call_bounded, read_frames, sample_indices, video_timeline
from .types import Frames, Question

if TYPE_CHECKING:
    from .pipeline import Pipeline


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
        index=index, window=window, frames=firsts.indices, timestamps=firsts.timestamps,
        weights=tuple(read.weights.tolist()), frame_scores=tuple(read.frame_scores.tolist()), score=read.score,
        cached=visual.cached,
        timings={"decode_s": visual.timings.get("decode_s", 0.0),
                 "vision_s": visual.timings.get("vision_s", 0.0) + visual.timings.get("prior_vision_s", 0.0),
                 "prior_s": prior_s},
    )


def scan(pipeline: Pipeline, video: str, question: str | Question, segmentation: Segmentation,
         layers: tuple[int, ...], *, cuts: CutsStore | None = None, progress: ScanProgress | None = None) -> Scan:
    """Every window of `video` scored for `question` by the prior model's attention at `layers`, window by
    window in bounded memory (InputError, a VideoError among them, for a video that cannot be used). With the
    pipeline's vision cache each window's encoding is kept, so a later question reads it back; `cuts` keeps
    the shot cuts likewise."""
    progress = progress or _Quiet()
    question = Question.of(question)
    settings = pipeline.settings
    started = time.perf_counter()
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
        progress.stage(f"Window {index + 1}/{len(windows)}")
        begun = time.perf_counter()
        scored.append(score_window(pipeline, video, line, index, window, indices, question, layers, progress))
        progress.scored(index, window, time.perf_counter() - begun)
    finished = time.perf_counter()
    timings = {"timeline_s": timed - started, "shots_s": segmented - timed}
    for key in ("decode_s", "vision_s", "prior_s"):
        timings[key] = sum(item.timings[key] for item in scored)
    timings.update(windows_s=finished - segmented, total_s=finished - started)
    return Scan(video=video, duration_s=line.duration_s, segmentation=segmentation, cuts=found, windows=scored,
                timings=timings)
