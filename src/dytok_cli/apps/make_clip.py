"""`dytok make-clip`: a short video made on this machine, so a first run needs no file and no download.

Drawn with numpy and encoded with PyAV (a dependency already, its FFmpeg built in), so no ffmpeg command
is needed: a ball crosses a sky-to-grass gradient and bounces, and a white square is shown from the
middle of the clip on, so that questions about what happens, and when, have answers.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from ..files import atomic_path

FPS = 8
# Every backend (decord, PyAV, OpenCV) decodes MPEG-4 Part 2, and every FFmpeg build encodes it.
CODEC = "mpeg4"


def frame(index: int, frames: int, width: int, height: int) -> np.ndarray:
    """The RGB (height, width, 3) uint8 image of frame `index` of `frames`."""
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    sky, grass = np.array([90, 150, 230]), np.array([60, 160, 70])
    image = np.broadcast_to(np.where(rows < 0.7, sky, grass), (height, width, 3)).astype(np.uint8).copy()
    progress = index / max(frames - 1, 1)
    radius = max(2, height // 10)
    x = radius + progress * (width - 2 * radius)
    bounce = abs(np.sin(progress * 3 * np.pi))  # three hops across
    y = 0.7 * height - radius - bounce * 0.4 * height
    ys, xs = np.ogrid[:height, :width]
    image[(xs - x) ** 2 + (ys - y) ** 2 <= radius**2] = (220, 40, 40)
    if index >= frames // 2:
        side = height // 5
        image[side // 2 : side // 2 + side, width - side - side // 2 : width - side // 2] = 255
    return image


def make_clip(path: Path, *, seconds: float, width: int, height: int, force: bool) -> int:
    """Write the clip to `path` (atomically: a whole file or none) and return its number of frames."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory; name the video file to write")
    if path.exists() and not force:
        raise InputError(f"{path}: exists (use --force to replace it)")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such directory")
    frames = max(1, round(seconds * FPS))
    with atomic_path(path) as temporary:
        with av.open(str(temporary), mode="w", format="mp4") as container:
            stream = container.add_stream(CODEC, rate=FPS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = Fraction(1, FPS)
            stream.options = {"qscale": "2"}  # sharp enough for the model to see the shapes
            stream.gop_size = 1  # every frame whole: predicted ones smear the moving ball (a 4 s clip is 37 kB)
            for index in range(frames):
                picture = av.VideoFrame.from_ndarray(frame(index, frames, width, height), format="rgb24")
                container.mux(stream.encode(picture))
            container.mux(stream.encode())
    return frames
