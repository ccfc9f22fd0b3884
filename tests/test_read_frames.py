"""Reading a long video piece by piece: every frame's time from the packets (`video_timeline`), and exactly
the frames asked for (`read_frames`), by every backend, PyAV seeking to them rather than decoding from the start."""

from __future__ import annotations

import numpy as np
import pytest
from clips import read_index, write_clip_pyav, write_text_file

from dytok_cli.media import video
from dytok_cli.media.video import VideoError, read_frames, video_timeline

FRAMES, RATE = 300, 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip_pyav(tmp_path_factory.mktemp("read_frames") / "clip.mp4", n_frames=FRAMES, fps=RATE, keyframe_every=10)


def test_the_timeline_has_every_frame(clip):
    line = video_timeline(clip)
    assert line.total_frames == FRAMES and line.video_fps == RATE
    assert np.allclose(line.times, np.arange(FRAMES) / RATE) and line.duration_s == pytest.approx(FRAMES / RATE)


@pytest.mark.parametrize("backend", ["decord", "pyav", "opencv"])
def test_exactly_the_frames_asked_for(clip, backend, monkeypatch):
    seeks = []
    original = video.av.container.InputContainer.seek
    monkeypatch.setattr(video.av.container.InputContainer, "seek", lambda self, *a, **k: seeks.append(a) or original(self, *a, **k))
    wanted = [130, 131, 200, 299]
    frames = read_frames(clip, wanted, backend=backend)
    assert list(frames.indices) == wanted and [read_index(image) for image in frames.images] == wanted
    assert frames.timestamps == pytest.approx([index / RATE for index in wanted], abs=1e-3)
    assert frames.backend == backend
    if backend == "pyav":
        assert len(seeks) == 1  # straight to the keyframe before frame 130


def test_a_named_backend_that_fails_names_one_that_reads_them(clip, monkeypatch):
    def failing(path):
        raise RuntimeError("Check failed: from_size == to_size (24576 vs. 18432)")

    monkeypatch.setitem(video._READERS, "decord", failing)
    assert read_frames(clip, [130, 131]).backend == "pyav"
    with pytest.raises(VideoError) as error:
        read_frames(clip, [130, 131], backend="decord")
    assert str(error.value) == (f"{clip}: could not be decoded with backend 'decord' (Check failed: from_size == "
                                "to_size (24576 vs. 18432)); backend 'pyav' decodes it: use backend 'pyav' or 'auto'")


def test_frames_past_the_end_are_left_out_and_bad_arguments_refused(clip, tmp_path):
    assert read_frames(clip, [298, 299, 300, 5000], backend="pyav").indices == (298, 299)
    with pytest.raises(ValueError, match="ascending"):
        read_frames(clip, [5, 5])
    with pytest.raises(VideoError, match="not a video file"):
        video_timeline(write_text_file(tmp_path / "notes.mp4"))
