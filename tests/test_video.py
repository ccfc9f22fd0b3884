"""Frame sampling, decoding on every backend, timestamps, rotation, truncation, errors and the worker."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import (
    frame_pattern,
    has_red_top_left,
    read_index,
    write_audio_only,
    write_clip,
    write_clip_pyav,
    write_text_file,
    write_truncated,
    write_undecodable,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from dytok_cli.media import video
from dytok_cli.media.video import (
    BACKENDS,
    Frames,
    VideoError,
    fit,
    native_stderr_silenced,
    read_video,
    read_video_bounded,
    sample_indices,
    upright,
)

DECODERS = [b for b in BACKENDS if b != "auto"]
FPS = 10.0
N_FRAMES = 40


@dataclass(frozen=True)
class Videos:
    clip: Path  # 40 frames at 10 fps, 64x48, OpenCV mp4v
    short: Path  # 5 frames
    cut_index: Path  # half of `clip`: the moov atom at its end is gone
    cut_data: Path  # half of a faststart clip: the index claims 40 frames, fewer are there
    undecodable: Path
    audio_only: Path
    text: Path
    empty: Path
    folder: Path
    missing: Path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    d = tmp_path_factory.mktemp("videos")
    clip = write_clip(d / "clip.mp4", n_frames=N_FRAMES, fps=FPS)
    faststart = write_clip_pyav(d / "faststart.mp4", n_frames=N_FRAMES, fps=int(FPS), faststart=True)
    (d / "empty.mp4").touch()
    (d / "folder.mp4").mkdir()
    return Videos(
        clip=clip,
        short=write_clip(d / "short.mp4", n_frames=5, fps=FPS),
        cut_index=write_truncated(clip, d / "cut index.mp4"),
        cut_data=write_truncated(faststart, d / "cut-data.mp4"),
        undecodable=write_undecodable(clip, d / "undecodable.mp4"),
        audio_only=write_audio_only(d / "audio.m4a"),
        text=write_text_file(d / "notes.mp4"),
        empty=d / "empty.mp4",
        folder=d / "folder.mp4",
        missing=d / "missing.mp4",
    )


def assert_shows_sources(frames: Frames) -> None:
    """Each returned image is the source frame its index names, upright and in RGB order."""
    assert frames.images.dtype == np.uint8 and frames.images.ndim == 4 and frames.images.shape[-1] == 3
    assert len(frames.images) == len(frames.indices) == len(frames.timestamps)
    assert [read_index(img) for img in frames.images] == list(frames.indices)
    assert all(has_red_top_left(img) for img in frames.images)


def assert_one_line_naming(error: pytest.ExceptionInfo, path: Path, *phrases: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "\r" not in message
    assert str(path) in message
    for phrase in phrases:
        assert phrase in message


# --- sample_indices -----------------------------------------------------------------------------


def assert_valid(indices: list[int], total: int) -> None:
    assert all(isinstance(i, int) for i in indices)
    assert all(0 <= i < total for i in indices)
    assert all(a < b for a, b in zip(indices, indices[1:]))


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 5000), n=st.integers(1, 300), cap=st.none() | st.integers(1, 300))
def test_uniform_sampling_properties(total: int, n: int, cap: int | None) -> None:
    indices = sample_indices(total, num_frames=n, max_frames=cap)
    assert_valid(indices, total)
    wanted = n if cap is None else min(n, cap)
    assert len(indices) == min(total, wanted)
    if total and wanted > 1:
        assert indices[0] == 0 and indices[-1] == total - 1


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 5000), video_fps=st.floats(1, 120), fps=st.floats(0.05, 240),
       cap=st.none() | st.integers(1, 300))
def test_fps_sampling_properties(total: int, video_fps: float, fps: float, cap: int | None) -> None:
    indices = sample_indices(total, fps=fps, video_fps=video_fps, max_frames=cap)
    assert_valid(indices, total)
    if cap is not None:
        assert len(indices) <= cap
    if total:
        assert indices[0] == 0
    step = video_fps / fps
    if cap is None and step >= 1:
        assert indices == [math.floor(k * step + 1e-9) for k in range(len(indices))]
        assert math.floor(len(indices) * step + 1e-9) >= total  # the next pick would be past the end
    if cap is None and step < 1:
        assert indices == list(range(total))


def test_uniform_includes_first_and_last_and_rounds() -> None:
    assert sample_indices(100, num_frames=5) == [0, 25, 50, 74, 99]
    assert sample_indices(100, num_frames=1) == [0]


def test_short_video_gives_every_frame_once() -> None:
    assert sample_indices(5, num_frames=32) == [0, 1, 2, 3, 4]
    assert sample_indices(0, num_frames=32) == []


def test_fps_mode_and_max_frames_cap() -> None:
    assert sample_indices(100, fps=2, video_fps=10) == list(range(0, 100, 5))
    assert sample_indices(100, fps=2, video_fps=10, max_frames=4) == [0, 30, 65, 95]
    assert sample_indices(7, fps=60, video_fps=30) == list(range(7))
    assert sample_indices(100, num_frames=10, max_frames=3) == [0, 50, 99]


@pytest.mark.parametrize("kwargs", [
    {},
    {"num_frames": 4, "fps": 1.0, "video_fps": 10},
    {"num_frames": 0},
    {"num_frames": -3},
    {"fps": 0.0, "video_fps": 10},
    {"fps": -1.0, "video_fps": 10},
    {"fps": math.nan, "video_fps": 10},
    {"fps": 1.0},
    {"fps": 1.0, "video_fps": 0.0},
    {"num_frames": 4, "max_frames": 0},
])
def test_bad_sampling_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError) as error:
        sample_indices(100, **kwargs)
    assert "\n" not in str(error.value)


def test_negative_total_is_rejected() -> None:
    with pytest.raises(ValueError):
        sample_indices(-1, num_frames=4)


# --- pure image helpers -------------------------------------------------------------------------


def test_upright_turns_counter_clockwise_by_the_display_rotation() -> None:
    image = np.array([[1, 2], [3, 4]])
    assert upright(image, 0) is image
    np.testing.assert_array_equal(upright(image, 90), [[2, 4], [1, 3]])
    np.testing.assert_array_equal(upright(image, -90), [[3, 1], [4, 2]])  # a phone held upright
    np.testing.assert_array_equal(upright(image, 270), upright(image, -90))
    np.testing.assert_array_equal(upright(image, 180), [[4, 3], [2, 1]])
    np.testing.assert_array_equal(upright(image, -180), upright(image, 180))
    np.testing.assert_array_equal(upright(image, 89.6), upright(image, 90))


def test_fit_keeps_aspect_and_never_upscales() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    assert fit(image, 32).shape == (24, 32, 3)
    assert fit(np.zeros((640, 10, 3), np.uint8), 64).shape == (64, 1, 3)
    assert fit(image, 64) is image
    assert fit(image, None) is image


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", DECODERS)
def test_backend_returns_the_sampled_frames_with_pts_timestamps(videos: Videos, backend: str) -> None:
    frames = read_video(videos.clip, num_frames=5, backend=backend)
    assert frames.backend == backend
    assert frames.indices == (0, 10, 20, 29, 39)
    assert frames.images.shape == (5, 48, 64, 3)
    assert_shows_sources(frames)
    assert frames.timestamps == pytest.approx([i / FPS for i in frames.indices], abs=1e-3)
    assert list(frames.timestamps) == sorted(set(frames.timestamps))
    assert (frames.video_fps, frames.total_frames) == (pytest.approx(FPS), N_FRAMES)
    assert frames.duration_s == pytest.approx(N_FRAMES / FPS)


def test_auto_picks_decord(videos: Videos) -> None:
    assert read_video(videos.clip, num_frames=3).backend == "decord"


@pytest.mark.parametrize("backend", BACKENDS)
def test_fps_sampling_with_a_cap(videos: Videos, backend: str) -> None:
    frames = read_video(videos.clip, num_frames=None, fps=2.5, backend=backend)
    assert frames.indices == tuple(range(0, N_FRAMES, 4))
    assert_shows_sources(frames)
    capped = read_video(videos.clip, num_frames=None, fps=2.5, max_frames=3, backend=backend)
    assert capped.indices == (0, 20, 36)


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_video_gives_fewer_frames(videos: Videos, backend: str) -> None:
    frames = read_video(videos.short, num_frames=32, backend=backend)
    assert frames.indices == (0, 1, 2, 3, 4)
    assert_shows_sources(frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_side_downscales_keeping_aspect(videos: Videos, backend: str) -> None:
    frames = read_video(videos.clip, num_frames=4, backend=backend, max_side=32)
    assert frames.images.shape == (4, 24, 32, 3)
    assert_shows_sources(frames)
    assert read_video(videos.clip, num_frames=2, backend=backend, max_side=500).images.shape == (2, 48, 64, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_container_without_a_frame_count(tmp_path: Path, backend: str) -> None:
    path = write_clip_pyav(tmp_path / "clip.mkv", n_frames=30)  # Matroska stores a duration, no count
    frames = read_video(path, num_frames=4, backend=backend)
    assert frames.indices == (0, 10, 19, 29) and frames.total_frames == 30
    assert frames.timestamps == pytest.approx([i / FPS for i in frames.indices], abs=1e-3)
    assert_shows_sources(frames)


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotated_phone_video_comes_out_upright(tmp_path: Path, rotation: int) -> None:
    path = write_clip_pyav(tmp_path / "phone.mp4", n_frames=12, rotation=rotation)
    expected_shape = (48, 64, 3) if rotation == 180 else (64, 48, 3)
    for backend in ("auto", "pyav", "opencv"):
        frames = read_video(path, num_frames=4, backend=backend)
        assert frames.backend != "decord"
        assert frames.images.shape[1:] == expected_shape
        upright_pattern = upright(frame_pattern(frames.indices[1]), rotation)
        assert np.abs(frames.images[1].astype(int) - upright_pattern).mean() < 12
        coded = np.stack([upright(img, -rotation) for img in frames.images])
        assert [read_index(img) for img in coded] == list(frames.indices) == [0, 4, 7, 11]
    with pytest.raises(VideoError) as error:
        read_video(path, backend="decord")
    assert_one_line_naming(error, path, "rotated", "pyav")


@pytest.mark.parametrize("backend", ["auto", "pyav", "opencv"])
def test_truncated_data_is_resampled_within_the_readable_frames(videos: Videos, backend: str) -> None:
    frames = read_video(videos.cut_data, num_frames=4, backend=backend)
    assert frames.backend == ("pyav" if backend == "auto" else backend)
    assert 0 < frames.total_frames < N_FRAMES
    assert frames.indices[0] == 0 and frames.indices[-1] == frames.total_frames - 1
    assert frames.duration_s == pytest.approx(frames.total_frames / FPS)
    assert_shows_sources(frames)


def test_decord_reports_truncated_data(videos: Videos) -> None:
    with pytest.raises(VideoError) as error:
        read_video(videos.cut_data, num_frames=N_FRAMES, backend="decord")
    assert_one_line_naming(error, videos.cut_data, "decord")


# --- an explicit backend that fails -------------------------------------------------------------

# What decord2 3.4.0 raises on a video 96 pixels wide on some CPUs (an AMD EPYC with AVX-512), not on others.
DECORD_ON_SOME_CPUS = ("[18:37:06] /project/src/runtime/ndarray.cc:171: Check failed: from_size == to_size "
                       "(24576 vs. 18432) DECORDArrayCopyFromTo: The size must exactly match\n\nStack trace:\n  [bt]")


def failing_reader(path: Path) -> None:
    raise RuntimeError(DECORD_ON_SOME_CPUS)


def test_a_named_backend_that_fails_names_one_that_reads_the_video(videos: Videos,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(video._READERS, "decord", failing_reader)
    assert read_video(videos.clip, num_frames=4).backend == "pyav"  # auto goes on to the next
    with pytest.raises(VideoError) as error:
        read_video(videos.clip, num_frames=4, backend="decord")
    assert str(error.value) == (
        f"{videos.clip}: could not be decoded with backend 'decord' (Check failed: from_size == to_size (24576 vs. "
        "18432) DECORDArrayCopyFromTo: The size must exactly match); backend 'pyav' decodes it: use backend 'pyav' "
        "or 'auto'")


def test_the_first_backend_in_autos_order_that_reads_it_is_named(videos: Videos,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(video._READERS, "opencv", failing_reader)
    with pytest.raises(VideoError) as error:
        read_video(videos.clip, num_frames=4, backend="opencv")
    assert_one_line_naming(error, videos.clip, "with backend 'opencv' (Check failed",
                           "backend 'decord' decodes it: use backend 'decord' or 'auto'")


def test_the_other_backends_are_tried_only_once_the_named_one_failed(videos: Videos,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    for name, reader in list(video._READERS.items()):
        monkeypatch.setitem(video._READERS, name,
                            lambda path, name=name, reader=reader: opened.append(name) or reader(path))
    for backend in DECODERS:
        assert read_video(videos.clip, num_frames=4, backend=backend).backend == backend
    assert opened == DECODERS
    opened.clear()
    monkeypatch.setitem(video._READERS, "pyav", lambda path: opened.append("pyav") or failing_reader(path))
    with pytest.raises(VideoError, match="backend 'decord' decodes it"):
        read_video(videos.clip, num_frames=4, backend="pyav")
    assert opened == ["pyav", "decord"]  # OpenCV is not asked once decord is known to read it


def test_a_video_no_backend_reads_gives_every_reason(videos: Videos, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DECODERS:
        monkeypatch.setitem(video._READERS, name, failing_reader)
    reason = "Check failed: from_size == to_size (24576 vs. 18432) DECORDArrayCopyFromTo: The size must exactly match"
    for backend in BACKENDS:
        with pytest.raises(VideoError) as error:
            read_video(videos.clip, num_frames=4, backend=backend)
        tried = DECODERS if backend == "auto" else [backend, *(name for name in DECODERS if name != backend)]
        assert str(error.value) == f"{videos.clip}: could not be decoded ({'; '.join(f'{n}: {reason}' for n in tried)})"


# --- errors -------------------------------------------------------------------------------------

BAD_FILES = [
    ("missing", "no such file"),
    ("folder", "is a directory"),
    ("empty", "empty"),
    ("text", "not a video"),
    ("cut_index", "truncated"),
    ("undecodable", "no decodable"),
    ("audio_only", "has no video stream"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "phrase"), BAD_FILES)
def test_unreadable_file_is_a_one_line_video_error(videos: Videos, name: str, phrase: str, backend: str,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    path = getattr(videos, name)
    with pytest.raises(VideoError) as error:
        read_video(path, backend=backend)
    assert_one_line_naming(error, path, phrase)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_native_noise_while_decoding_damaged_data(videos: Videos, backend: str,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    try:
        read_video(videos.cut_data, num_frames=N_FRAMES, backend=backend)
    except VideoError:
        pass  # decord refuses it; the others resample; either way nothing may be printed
    assert capfd.readouterr() == ("", "")


def test_the_noise_check_would_see_native_output(videos: Videos, capfd: pytest.CaptureFixture[str]) -> None:
    cv2.VideoCapture(str(videos.cut_index)).release()
    assert "moov atom not found" in capfd.readouterr().err
    with native_stderr_silenced():
        cv2.VideoCapture(str(videos.cut_index)).release()
    os.write(2, b"fd 2 is back\n")
    assert capfd.readouterr().err == "fd 2 is back\n"


@pytest.mark.parametrize("kwargs", [
    {"num_frames": 0},
    {"fps": 1.0},  # num_frames keeps its default of 32: both given
    {"num_frames": None},
    {"num_frames": None, "fps": 0.0},
    {"backend": "ffmpeg"},
    {"max_side": 0},
])
def test_bad_arguments_are_value_errors(videos: Videos, kwargs: dict) -> None:
    with pytest.raises(ValueError) as error:
        read_video(videos.clip, **kwargs)
    assert "\n" not in str(error.value)


def test_video_error_is_always_one_line() -> None:
    assert str(VideoError("a.mp4: first\nsecond\r\nthird")) == "a.mp4: first second third"


# --- bounded worker -----------------------------------------------------------------------------


def test_worker_round_trip_matches_in_process(videos: Videos) -> None:
    kwargs = {"num_frames": 6, "max_side": 32}
    here = read_video(videos.clip, **kwargs)
    there = read_video_bounded(videos.clip, timeout_s=60, **kwargs)
    np.testing.assert_array_equal(there.images, here.images)
    for field in ("indices", "timestamps", "backend", "video_fps", "total_frames", "duration_s"):
        assert getattr(there, field) == getattr(here, field)


def test_worker_passes_errors_back(videos: Videos) -> None:
    with pytest.raises(VideoError) as error:
        read_video_bounded(videos.text, timeout_s=60)
    assert_one_line_naming(error, videos.text, "not a video")
    with pytest.raises(ValueError):
        read_video_bounded(videos.clip, timeout_s=60, num_frames=0)


def test_worker_timeout_is_a_video_error(videos: Videos) -> None:
    with pytest.raises(VideoError) as error:
        read_video_bounded(videos.clip, timeout_s=0.001)
    assert_one_line_naming(error, videos.clip, "timed out after 0.001 s")


def test_no_timeout_decodes_in_process(videos: Videos, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.setattr(subprocess, "Popen", None)  # any attempt to start a worker would fail
    assert read_video_bounded(videos.clip, timeout_s=None, num_frames=2).indices == (0, 39)
