"""Shot boundaries of a video, found by PySceneDetect, for cutting a long video into windows.

Why PySceneDetect: it is the maintained, BSD-licensed shot detector most video tools build on, a small
pure-Python package over the OpenCV and PyAV that dytok already uses (no model weights, nothing to
download), and its detectors stream the video frame by frame, so memory does not grow with its length.
Its adaptive detector (what its own command line uses by default) compares each frame's change in colour
and edges with a rolling average of its neighbours', so a camera pan or fast motion is not taken for a
cut. Learned detectors (TransNetV2) are more accurate on gradual transitions but need weights.

It decodes through PyAV, whose frame times are the same presentation times `video.py` reports, so a cut
lands exactly on the start time of the first frame of the new shot.
"""

from __future__ import annotations

import logging
import math
import os

from ..math.windows import to_ms
from .video import VideoError, native_stderr_silenced

# PySceneDetect's adaptive detector: a cut where a frame's change exceeds this many times its
# neighbours' average (its default), and no shot shorter than this many seconds.
ADAPTIVE_THRESHOLD = 3.0
MIN_SHOT_S = 0.5
# Frames per second the detector compares at most: a faster video has frames skipped (decoded but not
# compared), which halves the work at 30 fps and places a cut at most one skipped frame late.
MAX_DETECTION_FPS = 15


def detect_cuts(path: str | os.PathLike, *, threshold: float = ADAPTIVE_THRESHOLD) -> list[float]:
    """The start time of every shot but the first, in seconds from the stream start (to the millisecond),
    ascending. Reads every frame once, holding a few at a time, and compares at most MAX_DETECTION_FPS
    of them a second. VideoError for a file it cannot read."""
    import scenedetect  # imported here: only shot segmentation needs it, and it is not quick to import

    # Its log reports every backend fallback on stderr; a failure reaches the caller as an exception.
    logging.getLogger("pyscenedetect").setLevel(logging.CRITICAL)
    try:
        with native_stderr_silenced():
            video = scenedetect.open_video(os.fspath(path), backend="pyav", threading_mode="AUTO")
            manager = scenedetect.SceneManager()
            manager.add_detector(scenedetect.AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=MIN_SHOT_S))
            skip = max(0, math.ceil(video.frame_rate / MAX_DETECTION_FPS) - 1) if video.frame_rate else 0
            manager.detect_scenes(video, frame_skip=skip)
            scenes = manager.get_scene_list()
    except (scenedetect.VideoOpenFailure, OSError) as error:
        raise VideoError(f"{path}: shot detection could not read it ({error})") from None
    return [to_ms(start.seconds) for start, _ in scenes[1:]]
