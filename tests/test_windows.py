"""Windows and chapters of a long video (`math/windows.py`): every boundary a cut, a split or the video's
ends; chapters that start and end on window boundaries whatever a model names; and the parsing of what a
model writes, which never turns a time into a chapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dytok_cli.apps.summarize import chosen_parts, title_and_description
from dytok_cli.math.windows import (
    MIN_CHAPTER_S,
    Window,
    change_chapter_starts,
    chapter_spans,
    chapter_starts,
    fixed_windows,
    pack,
    shot_windows,
    target_chapters,
    to_ms,
    visual_change,
    window_samples,
)


def assert_tiles(windows: list[Window], duration: float) -> None:
    """Contiguous from 0 to the duration, ascending, no gap and no overlap."""
    assert windows[0].start == 0 and windows[-1].end == to_ms(duration)
    assert all(a.end == b.start for a, b in zip(windows, windows[1:]))
    assert all(w.end > w.start for w in windows)


@st.composite
def shot_case(draw: st.DrawFn) -> tuple[list[float], float, float, float]:
    duration = draw(st.floats(0.5, 4000))
    cuts = draw(st.lists(st.floats(0, duration), max_size=60))
    min_s = draw(st.floats(0.5, 30))
    max_s = draw(st.floats(2 * min_s, 200))
    return cuts, duration, min_s, max_s


@settings(max_examples=100, deadline=None)
@given(case=shot_case())
def test_shot_windows_tile_the_video_within_the_limits(case):
    cuts, duration, min_s, max_s = case
    windows = shot_windows(cuts, duration, min_s=min_s, max_s=max_s)
    assert_tiles(windows, duration)
    rounded = {to_ms(cut) for cut in cuts}
    for window in windows:
        assert window.length <= max_s + 1e-3
        if to_ms(duration) >= min_s:
            assert window.length >= min_s - 1e-3
        # What opens a window is true: a cut opens it only where there was a cut.
        assert (window.opens == "cut") == (window.start in rounded and window.start > 0 and window.opens != "split")
    assert windows[0].opens == "start"
    assert all(w.opens in ("cut", "split") for w in windows[1:])


def test_shot_windows_by_hand():
    # A 2 s shot joins the next; a 150 s shot splits in three equal windows; the 4 s tail joins the one before.
    windows = shot_windows([20, 22, 30, 180, 196], 200, min_s=10, max_s=60)
    assert [(w.start, w.end, w.opens) for w in windows] == [
        (0.0, 20.0, "start"), (20.0, 30.0, "cut"), (30.0, 80.0, "cut"), (80.0, 130.0, "split"),
        (130.0, 180.0, "split"), (180.0, 200.0, "cut"),
    ]
    assert [(w.start, w.end) for w in shot_windows([], 7.5, min_s=10, max_s=60)] == [(0.0, 7.5)]
    with pytest.raises(ValueError, match="twice"):
        shot_windows([], 100, min_s=10, max_s=15)


@settings(max_examples=100, deadline=None)
@given(duration=st.floats(0.1, 4000), seconds=st.floats(2, 600))
def test_fixed_windows_start_at_multiples(duration, seconds):
    windows = fixed_windows(duration, seconds)
    assert_tiles(windows, duration)
    assert all(w.start == to_ms(k * seconds) for k, w in enumerate(windows))
    assert all(w.length <= 1.5 * seconds + 1e-3 for w in windows)
    if len(windows) > 1:
        assert windows[-1].length >= seconds / 2 - 1e-3


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(1, 400), rate=st.floats(1, 60), fps=st.floats(0.02, 4), max_frames=st.integers(1, 40),
    window=st.floats(1, 90),
)
def test_each_window_decodes_frames_that_start_inside_it(count, rate, fps, max_frames, window):
    times = np.arange(count) / rate
    duration = count / rate
    windows = fixed_windows(duration, window)
    instants = np.arange(math.ceil(duration * fps)) / fps
    sampled = np.unique(np.searchsorted(times, instants + 1e-9, side="right") - 1).tolist()
    per_window = window_samples(times, sampled, windows, max_frames)
    assert len(per_window) == len(windows)
    for frames, w in zip(per_window, windows):
        assert 1 <= len(frames) <= max_frames and frames == sorted(set(frames))
        inside = [i for i in sampled if w.start <= to_ms(times[i]) < w.end]
        if inside:
            assert set(frames) <= set(inside) and frames[0] == inside[0]
            assert len(frames) == min(len(inside), max_frames) and (max_frames == 1 or frames[-1] == inside[-1])
        else:  # sampling sparser than the window: the frame on screen at its middle
            assert times[frames[0]] <= (w.start + w.end) / 2


def test_pack_keeps_groups_within_the_budget():
    assert pack([3, 3, 3, 10, 1], 6) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert pack([], 5) == []


WINDOWS = shot_windows([12.5, 25, 41, 70, 95], 120, min_s=10, max_s=60)


@settings(max_examples=100, deadline=None)
@given(chosen=st.sets(st.integers(-5, 20), max_size=12))
def test_chapters_start_on_window_boundaries_whatever_is_chosen(chosen):
    starts = chapter_starts(WINDOWS, chosen)
    spans = chapter_spans(WINDOWS, starts)
    boundaries = {w.start for w in WINDOWS}
    chapters = [(WINDOWS[s.start].start, WINDOWS[s.stop - 1].end) for s in spans]
    assert chapters[0][0] == 0 and chapters[-1][1] == WINDOWS[-1].end
    assert all(a[1] == b[0] for a, b in zip(chapters, chapters[1:]))
    assert all(start in boundaries for start, _ in chapters)
    assert all(end - start >= MIN_CHAPTER_S for start, end in chapters)
    assert set(starts[1:]) <= chosen


def test_chapters_too_close_are_dropped():
    windows = fixed_windows(60, 5)
    assert chapter_starts(windows, {1, 2, 3, 11}) == [0, 2]  # 5 s after 0 is too soon; 55 s leaves a 5 s chapter


def test_the_largest_visual_changes_open_chapters():
    signatures = np.array([[1, 0], [1, 0.05], [0, 1], [0, 1], [1, 1], [1, 1.02]], dtype=float)
    windows = fixed_windows(120, 20)
    change = visual_change(signatures)
    assert change.shape == (5,) and change.argmax() == 1
    assert change_chapter_starts(windows, change.tolist(), 3) == [0, 2, 4]
    assert target_chapters(3600, 60) == 20 and target_chapters(40, 4) == 3 and target_chapters(40, 1) == 1


def test_a_model_answer_names_parts_never_times():
    answer = "Chapters begin at part 3 (00:14:00), part 5 at 1:05, then 7.5 minutes in; also parts 2, 99."
    assert chosen_parts(answer) == {3, 5, 2, 99}
    assert chosen_parts("") == set()


@pytest.mark.parametrize(("answer", "expected"), [
    ("Title: The Red Room\nA man walks in and sits.", ("The Red Room", "A man walks in and sits.")),
    ("## **\"Opening\"**\n\nDescription: Slides about cats.\nMore.", ("Opening", "Slides about cats. More.")),
    ("", ("Chapter 4", "")),
    ("x " * 80, ("x " * 39 + "x…", "")),
])
def test_title_and_description(answer, expected):
    title, description = title_and_description(answer, 4)
    assert (title, description) == (expected[0].strip(), expected[1])
