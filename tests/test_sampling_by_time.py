"""`fps` sampling by time: the frame on screen every 1/fps seconds, read from each frame's
presentation time, so a variable-frame-rate video is not sampled by its average rate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from clips import read_index, write_vfr_clip
from hypothesis import given, settings
from hypothesis import strategies as st

from dytok_cli.media.video import BACKENDS, read_video, read_video_bounded, sample_indices, thinning_note

DECODERS = [backend for backend in BACKENDS if backend != "auto"]
# 3 s at 20 fps, then a slide show: a frame every 0.5 s until 8.5 s. 72 frames in 8.5 s, so an
# average of 8.5 fps, which matches neither part.
VFR_TIMES = [i / 20 for i in range(60)] + [3 + 0.5 * i for i in range(12)]


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory) -> Path:
    return write_vfr_clip(tmp_path_factory.mktemp("vfr") / "vfr.mp4", VFR_TIMES)


def on_screen(times: list[float], instant: float) -> int:
    """The oracle: the last frame that started at or before `instant`."""
    return max(i for i, start in enumerate(times) if start <= instant + 1e-9)


@pytest.mark.parametrize("backend", DECODERS)
@pytest.mark.parametrize("fps", [1.0, 0.5, 3.0])
def test_vfr_video_is_sampled_every_1_over_fps_seconds(vfr_clip, backend, fps):
    frames = read_video(vfr_clip, num_frames=None, fps=fps, backend=backend)
    instants = [k / fps for k in range(math.ceil(8.5 * fps) + 1) if k / fps < 8.5 + 8.5 / 71]
    expected = sorted({on_screen(VFR_TIMES, t) for t in instants})
    assert frames.indices == tuple(expected)
    assert [read_index(image) for image in frames.images] == expected  # the pixels of those frames
    assert frames.timestamps == pytest.approx([VFR_TIMES[i] for i in expected], abs=2e-3)
    assert frames.fps_frames == len(expected)


def test_one_fps_lands_on_whole_seconds(vfr_clip):
    frames = read_video(vfr_clip, num_frames=None, fps=1.0)
    assert frames.timestamps == pytest.approx([float(k) for k in range(9)], abs=2e-3)


def test_bounded_reader_samples_by_time_too(vfr_clip):
    frames = read_video_bounded(vfr_clip, timeout_s=60, num_frames=None, fps=0.5)
    assert frames.timestamps == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0], abs=2e-3)


def test_max_frames_thins_the_time_sample_and_says_so(vfr_clip):
    frames = read_video(vfr_clip, num_frames=None, fps=1.0, max_frames=3)
    assert frames.timestamps == pytest.approx([0.0, 4.0, 8.0], abs=2e-3)
    assert frames.fps_frames == 9
    assert thinning_note(frames) == (
        "--fps picks 9 frames of this 8.5 s video; --max-frames keeps 3 of them, about one every 4.00 s"
    )
    assert thinning_note(read_video(vfr_clip, num_frames=None, fps=1.0, max_frames=9)) is None
    assert thinning_note(read_video(vfr_clip, num_frames=4)) is None


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 2000), video_fps=st.floats(1, 120), fps=st.floats(0.05, 240),
       cap=st.none() | st.integers(1, 300))
def test_constant_rate_times_sample_as_the_rate_does(total, video_fps, fps, cap):
    times = np.arange(total) / video_fps
    by_time = sample_indices(total, fps=fps, frame_times=times, max_frames=cap)
    assert by_time == sample_indices(total, fps=fps, video_fps=video_fps, max_frames=cap)


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(0.001, 3.0), min_size=1, max_size=300), fps=st.floats(0.1, 60))
def test_time_sample_is_the_frame_on_screen(gaps, fps):
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    picked = sample_indices(len(times), fps=fps, frame_times=times)
    assert picked == sorted(set(picked)) and picked[0] == 0
    assert all(0 <= i < len(times) for i in picked)
    # Every pick is on screen at some multiple of 1/fps, and every multiple before the end is served.
    instants = np.arange(math.ceil(times[-1] * fps) + 1) / fps
    assert set(picked) <= {on_screen(list(times), t) for t in instants}
    assert {on_screen(list(times), t) for t in instants if t <= times[-1]} <= set(picked)
