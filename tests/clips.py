"""Writers for small test videos, plus readers that recover what a decoded frame shows.

Every clip frame is a 4x4 grid of cells. The top-left cell is pure red: it tells which way is up
and catches BGR/RGB mix-ups. The other 15 cells are white or black and spell the frame's source
index in binary (cell k+1 holds bit k), so a test can check which frames a reader returned, even
after downscaling. Only OpenCV and PyAV write files here; the ffmpeg CLI is never needed.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

GRID = 4
RED = (255, 0, 0)


def _cell_bounds(length: int) -> np.ndarray:
    return np.linspace(0, length, GRID + 1).round().astype(int)


def _cells(height: int, width: int) -> list[tuple[slice, slice]]:
    """Row-major cells, each shrunk to its middle half so codec ringing at edges is ignored."""
    ys, xs = _cell_bounds(height), _cell_bounds(width)
    cells = []
    for r in range(GRID):
        for c in range(GRID):
            dy, dx = (ys[r + 1] - ys[r]) // 4, (xs[c + 1] - xs[c]) // 4
            cells.append((slice(ys[r] + dy, ys[r + 1] - dy), slice(xs[c] + dx, xs[c + 1] - dx)))
    return cells


def frame_pattern(index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """The RGB (H, W, 3) uint8 image of source frame `index`; `size` is (width, height)."""
    width, height = size
    ys, xs = _cell_bounds(height), _cell_bounds(width)
    img = np.zeros((height, width, 3), np.uint8)
    for k in range(GRID * GRID):
        r, c = divmod(k, GRID)
        block = img[ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
        if k == 0:
            block[:] = RED
        elif index >> (k - 1) & 1:
            block[:] = 255
    return img


def read_index(img: np.ndarray) -> int:
    """The source index spelled by a decoded (possibly resized) frame from `frame_pattern`."""
    cells = _cells(*img.shape[:2])
    return sum(1 << (k - 1) for k in range(1, GRID * GRID) if img[cells[k]].mean() > 127)


def has_red_top_left(img: np.ndarray) -> bool:
    """True if the frame is upright and in RGB order (the marker cell reads as red)."""
    r, g, b = img[_cells(*img.shape[:2])[0]].reshape(-1, 3).mean(axis=0)
    return r > 160 and g < 96 and b < 96


def write_clip(path: str | os.PathLike, n_frames: int = 20, size: tuple[int, int] = (64, 48),
               fps: float = 10.0) -> Path:
    """An MPEG-4 Part 2 .mp4 written by OpenCV (its moov atom comes last)."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    try:
        for i in range(n_frames):
            writer.write(cv2.cvtColor(frame_pattern(i, size), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def h264_stream(container: av.container.OutputContainer, fps: int, size: tuple[int, int], crf: str = "10",
                **options: str) -> av.VideoStream:
    """A yuv420p H.264 stream of `size` at `fps` frames a second in `container`, x264 at `crf` (10: near
    lossless, so decoded frames stay close to what was drawn), quickest preset, and any further x264 `options`."""
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = Fraction(1, fps)
    stream.options = {"crf": crf, "preset": "ultrafast", **options}
    return stream


def write_clip_pyav(path: str | os.PathLike, n_frames: int = 20, size: tuple[int, int] = (64, 48),
                    fps: int = 10, *, rotation: int = 0, faststart: bool = False, keyframe_every: int | None = None) -> Path:
    """An H.264 .mp4 written by PyAV, optionally with a display rotation (counter-clockwise degrees,
    as a phone records it), with the moov atom first (`faststart`), so a cut file still opens, and with a
    keyframe every `keyframe_every` frames (x264's default: 250)."""
    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = h264_stream(container, fps, size, **({"g": str(keyframe_every)} if keyframe_every else {}))
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, size), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_stills(path: str | os.PathLike, shown: list[int], size: tuple[int, int] = (64, 48), fps: int = 8) -> Path:
    """A lossless H.264 .mp4 (x264 at crf 0) whose frame i shows `frame_pattern(shown[i])`: where `shown`
    repeats, a still whose frames decode to the same bytes, as a slide or a paused screen can."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = h264_stream(container, fps, size, crf="0")
        for i, index in enumerate(shown):
            frame = av.VideoFrame.from_ndarray(frame_pattern(index, size), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: str | os.PathLike, seconds: float = 0.5, rate: int = 16000) -> Path:
    """An AAC file with no video stream (use an .m4a or .mp4 suffix)."""
    path = Path(path)
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        chunk = 1024
        for start in range(0, len(tone), chunk):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + chunk], format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_text_file(path: str | os.PathLike, text: str = "this is not a video\n") -> Path:
    path = Path(path)
    path.write_text(text)
    return path


def write_truncated(valid: str | os.PathLike, out: str | os.PathLike, fraction: float = 0.5) -> Path:
    """A copy of `valid` cut to `fraction` of its bytes, as an interrupted download leaves it."""
    data = Path(valid).read_bytes()
    out = Path(out)
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def write_undecodable(valid: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A copy of `valid` whose index is intact but whose coded video data (the mdat box) is zeroed,
    so the file opens, claims frames, and none of them decodes."""
    data = bytearray(Path(valid).read_bytes())
    at = data.find(b"mdat")
    if at < 4:
        raise ValueError(f"{valid} has no mdat box")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    out = Path(out)
    out.write_bytes(data)
    return out


def write_vfr_clip(path: str | os.PathLike, times: list[float], size: tuple[int, int] = (64, 48)) -> Path:
    """An H.264 .mp4 whose frame `i` (showing `frame_pattern(i)`) starts at `times[i]` seconds, to the
    millisecond: a variable frame rate, as phones and screen recorders write."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1000)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for i, seconds in enumerate(times):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, size), format="rgb24")
            frame.pts = round(seconds * 1000)
            frame.time_base = Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# Colours of successive shots in `write_shots`: far apart in hue, so each cut is a plain content change.
SHOT_COLOURS = [(230, 40, 40), (40, 200, 60), (50, 60, 230), (230, 220, 40), (200, 60, 200), (40, 220, 220)]


def write_shots(path: str | os.PathLike, cuts: list[float], duration: float, fps: int = 4,
                size: tuple[int, int] = (64, 48)) -> Path:
    """An H.264 .mp4 of `duration` seconds whose shots change at `cuts` (seconds, on frame starts): each shot
    one colour of SHOT_COLOURS with a square moving across it, so frames within a shot differ a little and
    a cut changes everything."""
    path = Path(path)
    width, height = size
    bounds = [0.0, *cuts]
    with av.open(str(path), "w") as container:
        stream = h264_stream(container, fps, size, crf="18")
        for i in range(round(duration * fps)):
            shot = max(k for k, start in enumerate(bounds) if start <= i / fps + 1e-9)
            colour = np.array(SHOT_COLOURS[shot % len(SHOT_COLOURS)], np.uint8)
            image = np.broadcast_to(colour, (height, width, 3)).copy()
            x = (2 * i) % max(1, width - width // 8)
            image[height // 5 : 2 * height // 5, x : x + width // 8] = 255 - colour
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_empty_video(path: str | os.PathLike, size: tuple[int, int] = (64, 48), rate: int = 16000) -> Path:
    """A Matroska file (use .mkv) with a video stream that holds not one frame, beside a second of silence
    (a container is only written once some stream has a packet)."""
    path = Path(path)
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        silence = np.zeros((1, rate), np.float32)
        for start in range(0, rate, 1024):
            frame = av.AudioFrame.from_ndarray(silence[:, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
        container.mux(video.encode())
    return path
