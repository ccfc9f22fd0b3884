"""Shot cuts found by PySceneDetect's adaptive detector (`media/shots.py`), at the start time of the first
frame of each new shot, also when frames are skipped on a fast video; nothing found in one long shot."""

from __future__ import annotations

import math

import pytest
from clips import write_shots, write_text_file

from dytok_cli.media.shots import MAX_DETECTION_FPS, detect_cuts
from dytok_cli.media.video import VideoError


@pytest.mark.parametrize("fps", [4, 30])
def test_cuts_are_found_on_frame_starts(tmp_path, fps):
    cuts = [2.5, 5.1, 8.0]
    found = detect_cuts(write_shots(tmp_path / "shots.mp4", cuts, 10.0, fps=fps))
    assert len(found) == len(cuts)
    # The new shot's first frame is the first to start at or after the cut; at 30 fps every other frame is
    # compared, so a cut may be found one frame later. Times are to the millisecond.
    late = 1 / fps if fps > MAX_DETECTION_FPS else 0
    for found_at, cut in zip(found, cuts):
        first = math.ceil(cut * fps - 1e-6) / fps
        assert first - 5e-4 <= found_at <= first + late + 5e-4


def test_one_shot_has_no_cut_and_a_text_file_is_refused(tmp_path):
    assert detect_cuts(write_shots(tmp_path / "one.mp4", [], 5.0, fps=4)) == []
    with pytest.raises(VideoError, match="shot detection could not read it"):
        detect_cuts(write_text_file(tmp_path / "notes.mp4"))
