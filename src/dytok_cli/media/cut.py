"""A time range of a video cut out into a file of its own, with the ffmpeg command.

Stream copy when the range's packets decode on their own: it starts on a keyframe and ends on one (or at
the video's end), so the copied packets begin with a picture that needs no earlier one and no copied
picture refers to one past the end. Copying is exact then, and fast. Any other range is re-encoded
(H.264, audio as AAC), which cuts at the frame: a copy of it would begin at the keyframe before the range
(seconds early) or hold pictures that cannot be decoded. Keyframes are read from the packets' flags,
without decoding.

The clip is written beside its target under a temporary name and renamed onto it (`files.atomic_path`),
so it is whole or absent, with the mode a plain `open()` gives a new file.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from ..errors import InputError
from ..files import atomic_path
from ..math.windows import to_ms
from .video import native_stderr_silenced

# H.264 that plays everywhere (yuv420p), close to the source (x264's crf 18 is visually near lossless).
_ENCODE = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac"]
# A copy keeps the packets' timestamps; this moves the first to 0, so the clip starts at its first frame.
_COPY = ["-c", "copy", "-avoid_negative_ts", "make_zero"]


def require_ffmpeg() -> str:
    """The ffmpeg command's path; InputError naming what to install when there is none (said before any work)."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise InputError("--clip cuts with the ffmpeg command, which is not installed (FFmpeg: https://ffmpeg.org)")
    return found


def keyframe_times(video: str | os.PathLike) -> list[float]:
    """The start time of every keyframe of `video`'s first video stream, in seconds from the stream's start
    (as `media.video.Timeline` times frames), ascending; read from the packets' flags, nothing decoded."""
    times = []
    with native_stderr_silenced(), av.open(str(video)) as container:
        stream = container.streams.video[0]
        start, unit = stream.start_time or 0, stream.time_base
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None and packet.size:
                times.append(float((packet.pts - start) * unit))
    return sorted(times)


@dataclass(frozen=True)
class Cut:
    """A range as it was cut: by stream copy or re-encoded."""

    path: Path
    start: float
    end: float
    copied: bool


def copies(start: float, end: float, keyframes: list[float], duration: float) -> bool:
    """Whether [start, end) can be stream-copied: it starts on a keyframe and ends on one or at the video's
    end, compared at the millisecond (the precision of window boundaries)."""
    at = {to_ms(time) for time in keyframes}
    return to_ms(start) in at and (to_ms(end) in at or to_ms(end) >= to_ms(duration))


# Half a millisecond: less than any two frames are apart, and the precision window boundaries are rounded to.
_HALF_MS = 0.0005


def _seconds(time: float) -> str:
    return f"{time:.6f}"


def cut(ffmpeg: str, video: str | os.PathLike, start: float, end: float, target: Path, *,
        keyframes: list[float], duration: float) -> Cut:
    """[start, end) seconds of `video` into `target` (MP4), whole or not at all; InputError in one line when
    ffmpeg fails. `keyframes` and `duration` (the video's) decide between copying and re-encoding.

    ffmpeg keeps the frames that start in [-ss, -ss + -t). A copy seeks to the keyframe at or before -ss, so
    -ss is the keyframe's own time rounded up to ffmpeg's microsecond; the range ends half a millisecond
    before the next keyframe (or the video's end), which it excludes. A re-encoded range keeps the frames
    whose start rounds into [start, end) at the millisecond, as a window's frames are chosen."""
    copied = copies(start, end, keyframes, duration)
    if copied:
        first = min(keyframes, key=lambda time: abs(time - start))
        last = min([*keyframes, duration], key=lambda time: abs(time - end))
        seek, length = math.ceil(first * 1e6) / 1e6, last - first - _HALF_MS
    else:
        seek, length = max(0.0, start - _HALF_MS), end - start
    with atomic_path(target) as temporary:
        command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-ss", _seconds(seek),
                   "-i", os.fspath(video), "-t", _seconds(length), "-map", "0:v:0", "-map", "0:a:0?",
                   *(_COPY if copied else _ENCODE), "-f", "mp4", os.fspath(temporary)]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            reason = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), f"exit code {done.returncode}")
            raise InputError(f"{target}: ffmpeg could not cut {video} ({reason.strip()})")
    return Cut(target, start, end, copied)
