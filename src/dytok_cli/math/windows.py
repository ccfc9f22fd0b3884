"""A long video as windows, sampled window by window, and windows grouped into chapters: pure functions
over times in seconds, no model and no decoder.

Every time a summary reports is a window boundary: the video's start or end, a shot cut (a frame's start
time) or the point where a long shot is split. Boundaries are rounded to the millisecond once, here, when
the windows are made; chapters and chapter files reuse those numbers and never compute a time of their
own, and a language model only ever picks among them (`chapter_starts`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# The shortest chapter: YouTube ignores a chapter list with a shorter one.
MIN_CHAPTER_S = 10.0
# When the model names no usable chapter start: about one chapter per this many seconds.
TARGET_CHAPTER_S = 180.0
# What opens a window.
OPENS = ("start", "cut", "split", "fixed")


@dataclass(frozen=True)
class Window:
    """[start, end) seconds of a video, and what opens it: the video's start, a shot cut, a split of a
    shot longer than the maximum window, or a fixed-length grid (`OPENS`)."""

    start: float
    end: float
    opens: str

    @property
    def length(self) -> float:
        return self.end - self.start


def to_ms(seconds: float) -> float:
    """Seconds rounded to the millisecond: the precision of every boundary and of every chapter file."""
    return round(seconds * 1000) / 1000


def _check_duration(duration: float) -> None:
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"the video's duration must be a positive number of seconds, got {duration}")


def shot_windows(cuts: Iterable[float], duration: float, *, min_s: float, max_s: float) -> list[Window]:
    """Windows from shot cuts (the start times of every shot but the first).

    A shot shorter than `min_s` joins the shot after it (the cut that would close it is dropped; a short
    last shot joins the one before), and a window longer than `max_s` is split into the fewest equal
    parts of at most `max_s`. With `max_s >= 2 * min_s` every window is at least `min_s` long, unless
    the whole video is shorter: then it is one window.
    """
    _check_duration(duration)
    if not (math.isfinite(min_s) and min_s > 0):
        raise ValueError(f"the minimum window must be a positive number of seconds, got {min_s}")
    if not (math.isfinite(max_s) and max_s >= 2 * min_s):
        raise ValueError(f"the maximum window ({max_s:g} s) must be at least twice the minimum ({min_s:g} s)")
    end = to_ms(duration)
    kept = [0.0]
    for cut in sorted({to_ms(cut) for cut in cuts}):
        if 0 < cut < end and cut - kept[-1] >= min_s:
            kept.append(cut)
    if len(kept) > 1 and end - kept[-1] < min_s:
        kept.pop()
    windows = []
    for index, (start, stop) in enumerate(zip(kept, [*kept[1:], end])):
        parts = max(1, math.ceil((stop - start) / max_s - 1e-9))
        points = [start, *(to_ms(start + (stop - start) * k / parts) for k in range(1, parts)), stop]
        for part, (left, right) in enumerate(zip(points, points[1:])):
            opens = "split" if part else ("cut" if index else "start")
            windows.append(Window(left, right, opens))
    return windows


def fixed_windows(duration: float, seconds: float) -> list[Window]:
    """Windows starting at every multiple of `seconds`; a last piece shorter than half a window joins the
    one before, so no window is a sliver."""
    _check_duration(duration)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--window must be a positive number of seconds, got {seconds}")
    end = to_ms(duration)
    starts = [to_ms(k * seconds) for k in range(max(1, math.ceil(end / seconds - 1e-9)))]
    if len(starts) > 1 and end - starts[-1] < seconds / 2:
        starts.pop()
    return [Window(start, stop, "fixed" if k else "start") for k, (start, stop) in enumerate(zip(starts, [*starts[1:], end]))]


def _thin(count: int, keep: int) -> list[int]:
    """`keep` of `count` positions, uniformly, first and last included (as frames are sampled)."""
    if count <= keep:
        return list(range(count))
    return np.floor(np.linspace(0, count - 1, keep) + 0.5).astype(int).tolist()


def window_samples(frame_times: Sequence[float], sampled: Sequence[int], windows: Sequence[Window],
                   max_frames: int) -> list[list[int]]:
    """The source frames each window decodes: of `sampled` (frame numbers picked over the whole video,
    ascending), those that start inside the window, uniformly thinned to `max_frames`. A window that
    none starts in (sampling sparser than the window) gets the frame on screen at its middle.

    `frame_times` (N,) is every frame's start in seconds, in presentation order."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    times = np.asarray(frame_times, dtype=np.float64)  # (N,)
    picked = np.asarray(sampled, dtype=np.int64)  # (S,)
    # A frame belongs to the window its start falls in, compared at the boundaries' millisecond precision.
    starts_ms = np.round(times[picked] * 1000) if len(picked) else np.zeros(0)  # (S,)
    per_window = []
    for window in windows:
        inside = picked[(starts_ms >= round(window.start * 1000)) & (starts_ms < round(window.end * 1000))]
        if len(inside):
            per_window.append([int(inside[i]) for i in _thin(len(inside), max_frames)])
        else:
            middle = (window.start + window.end) / 2
            per_window.append([max(0, int(np.searchsorted(times, middle, side="right")) - 1)])
    return per_window


def pack(lengths: Sequence[int], budget: int) -> list[range]:
    """Consecutive groups of items whose lengths add up to at most `budget` (an item longer than the
    budget is a group of its own): how many descriptions one prompt can hold."""
    groups: list[range] = []
    first, used = 0, 0
    for index, length in enumerate(lengths):
        if index > first and used + length > budget:
            groups.append(range(first, index))
            first, used = index, 0
        used += length
    if len(lengths):
        groups.append(range(first, len(lengths)))
    return groups


def _spaced(starts: Sequence[float], candidate: float, end: float, min_s: float) -> bool:
    return end - candidate >= min_s and all(abs(candidate - start) >= min_s for start in starts)


def chapter_starts(windows: Sequence[Window], chosen: Iterable[int], min_s: float = MIN_CHAPTER_S) -> list[int]:
    """The windows that open a chapter: 0, then each of `chosen` (what a model named) that is a window
    index, in time order, kept only if every chapter stays at least `min_s` long. Whatever `chosen`
    holds, a chapter starts and ends on a window boundary."""
    end = windows[-1].end
    starts = [0]
    for index in sorted(set(chosen)):
        if 0 < index < len(windows) and _spaced([windows[starts[-1]].start], windows[index].start, end, min_s):
            starts.append(index)
    return starts


def target_chapters(duration: float, windows: int) -> int:
    """How many chapters to aim for without a model's choice: one per `TARGET_CHAPTER_S`, at least three
    (YouTube's minimum) where there are windows for them."""
    return min(windows, max(min(3, windows), round(duration / TARGET_CHAPTER_S)))


def visual_change(signatures: np.ndarray) -> np.ndarray:
    """(W-1,): how much each window differs from the one before it, 1 - cosine of their (W, D) mean
    visual features, in [0, 2]."""
    vectors = np.asarray(signatures, dtype=np.float64)  # (W, D)
    norms = np.linalg.norm(vectors, axis=1).clip(min=1e-12)  # (W,)
    unit = vectors / norms[:, None]  # (W, D)
    return 1.0 - np.sum(unit[1:] * unit[:-1], axis=1)  # (W-1,)


def change_chapter_starts(windows: Sequence[Window], change: Sequence[float], count: int,
                          min_s: float = MIN_CHAPTER_S) -> list[int]:
    """Up to `count` chapters opened at the largest changes between adjacent windows (`change[i - 1]` is
    between windows i-1 and i), each at least `min_s` long: the chaptering when a model names none."""
    end = windows[-1].end
    starts = [0]
    for index in sorted(range(1, len(windows)), key=lambda i: (-change[i - 1], i)):
        if len(starts) >= count:
            break
        if _spaced([windows[s].start for s in starts], windows[index].start, end, min_s):
            starts.append(index)
    return sorted(starts)


def chapter_spans(windows: Sequence[Window], starts: Sequence[int]) -> list[range]:
    """The windows of each chapter, from the windows that open them (`starts`, ascending, from 0)."""
    if not starts or starts[0] != 0 or list(starts) != sorted(set(starts)) or starts[-1] >= len(windows):
        raise ValueError(f"chapter starts must ascend from 0 through the {len(windows)} windows, got {list(starts)}")
    return [range(first, stop) for first, stop in zip(starts, [*starts[1:], len(windows)])]


def spread(count: int, take: int, keep: int) -> list[int]:
    """`take` of the positions 0..count-1, evenly spaced, `keep` among them: the positions cut into `take`
    runs as equal as whole positions allow, the middle of each run, except that the run holding `keep`
    gives `keep`. One per run, so the picks are distinct and ascending."""
    if not 1 <= take <= count or not 0 <= keep < count:
        raise ValueError(f"cannot take {take} of {count} positions keeping position {keep}")
    firsts = [-(-run * count // take) for run in range(take + 1)]  # run r is firsts[r]..firsts[r+1]-1
    picks = [(first + following - 1) // 2 for first, following in zip(firsts, firsts[1:])]
    picks[keep * take // count] = keep
    return picks


def whole_video_frames(samples: Sequence[Sequence[int]], peaks: Sequence[int], scores: Sequence[float], budget: int,
                       group: int = 1) -> list[tuple[int, tuple[int, ...]]]:
    """The frames a whole-video answer sees, from windows scored for its question: the windows best first
    (equal scores: the earlier), each giving its sampled frames `samples[w]` (source frame numbers,
    ascending) until `budget` frames are taken. A window that does not fit whole gives as many as fit,
    evenly spaced over it (`spread`), with its peak `peaks[w]` (one of its frames) among them. With
    `group` above 1 (a model that merges that many consecutive frames into one: Qwen's two) a window
    gives a multiple of `group` frames where it has that many, so that in time order no merged frame
    spans two windows; one with fewer gives them all.

    Returns (window, its frames taken, ascending) for every window used, best first."""
    if budget < 1:
        raise ValueError(f"the budget must be at least one frame, not {budget}")
    if not len(samples) == len(peaks) == len(scores):
        raise ValueError(f"{len(samples)} windows' frames, {len(peaks)} peaks and {len(scores)} scores")
    group = max(1, min(group, budget))  # a budget under one group still sees a frame
    left = budget
    used = []
    for window in sorted(range(len(samples)), key=lambda w: (-scores[w], w)):
        frames = list(samples[window])
        take = min(len(frames), left)
        if len(frames) >= group:
            take -= take % group
        if take == 0:
            continue
        picks = spread(len(frames), take, frames.index(peaks[window]))
        used.append((window, tuple(frames[pick] for pick in picks)))
        left -= take
        if left == 0:
            break
    return used
