"""Read a few frames of a local video: which frames to sample, decoding only those, and their timestamps.

Decisions callers can rely on:

* Sampling. `num_frames` picks frames uniformly with the first and last frame included; a video with
  fewer frames than asked gives every frame once, so fewer frames come back (never repeats). `fps`
  takes the frame on screen every 1/fps seconds from t=0, uniformly thinned to `max_frames` if given;
  `max_frames` also caps `num_frames`. `read_video` takes exactly one of the two, so pass
  `num_frames=None` together with `fps`. The frame on screen is found from every frame's
  presentation time, so a variable-frame-rate video is sampled by time, not by its average rate.
* Truncation. A container's frame count is an estimate. When decoding stops before a sampled frame
  (a cut download whose index still claims every frame) the PyAV and OpenCV backends know how many
  frames were readable, so the sample is drawn again inside that readable prefix and
  `Frames.total_frames` / `duration_s` describe the prefix. Decord cannot tell where its decoding
  stopped, so it fails instead and `auto` moves on to PyAV. A file whose index itself is missing
  (an MP4 cut before its moov atom) cannot be opened at all and is reported as truncated or corrupt.
* Rotation. Phones store a display rotation instead of rotating pixels. PyAV reports it; frames from
  PyAV and OpenCV (whose own auto-rotation is switched off so it happens exactly once) are turned
  upright here. decord2 mangles rotated videos (wrong buffer sizes, stretched frames), so `auto`
  skips decord for them and an explicit `backend="decord"` refuses them. Mirroring flips are ignored.
* Timestamps come from the decoder's presentation times, in seconds from the start of the stream.
* Errors. Anything that stops a video from being read is a `VideoError` whose message is one line
  naming the file; bad sampling arguments are `ValueError`s. A PyAV probe classifies the file first
  (not a video, truncated, no video stream, no decodable frame). Native libraries print to file
  descriptor 2 directly, so it points at /dev/null while they run; decord's own log is set to quiet,
  and PyAV's is left at its default, which already drops FFmpeg's messages.
* An explicit backend that fails is not swapped for another, but its error names a backend that
  decodes the file (the others are tried only then, on the way to the error). Which backend reads a
  file is not always known in advance: decord2 3.4.0 fails on videos of some widths on some CPUs only
  (32, 48, 96 and 144 pixels wide on an AMD EPYC with AVX-512; CI's CPU decodes 96).
* Hangs. A native decoder can hang while holding the GIL, so `read_video_bounded` decodes in a
  separate process that can be killed.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np

from ..errors import InputError
from ..types import Frames

BACKENDS = ("auto", "decord", "pyav", "opencv")
_AUTO_ORDER = ("decord", "pyav", "opencv")
# decord decodes a batch at once; small batches keep a max_side-downscaled read from holding many
# full-size frames at the same time.
_DECORD_BATCH = 8


class VideoError(InputError):
    """One-line, user-facing reason a video could not be read (str(e) is a single line, names the file)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


# --- sampling -----------------------------------------------------------------------------------


def _check_sampling(num_frames: int | None, fps: float | None, max_frames: int | None) -> None:
    if (num_frames is None) == (fps is None):
        raise ValueError("give exactly one of num_frames and fps (pass num_frames=None to sample by fps)")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")


def _uniform(total: int, count: int) -> list[int]:
    if total <= count:
        return list(range(total))
    # Spacing is above one frame here, so rounding half up keeps the picks distinct.
    return np.floor(np.linspace(0, total - 1, count) + 0.5).astype(int).tolist()


def _every(total: int, step: float) -> list[int]:
    """The frame on screen at each multiple of `step` frames (a frame shows until the next starts)."""
    positions = np.arange(math.ceil(total / step)) * step
    # The epsilon keeps k * step from flooring to the frame before when float error lands just below.
    picked = np.unique(np.floor(positions + 1e-9).astype(int))
    return picked[picked < total].tolist()


def _on_screen(times: np.ndarray, fps: float) -> list[int]:
    """The frame on screen at each multiple of 1/fps seconds after the first frame starts, given every
    frame's start time (a frame shows until the next starts; the last for an average frame's time)."""
    if len(times) < 2:
        return list(range(len(times)))
    start, last = float(times[0]), float(times[-1])
    frame = (last - start) / (len(times) - 1)  # the average frame's duration
    instants = start + np.arange(math.ceil((last + frame - start) * fps - 1e-9)) / fps
    # As in `_every`, a billionth of a frame of slack keeps an instant that float error puts just
    # before a frame's start on that frame.
    on_screen = np.searchsorted(times, instants + 1e-9 * frame, side="right") - 1
    return np.unique(on_screen).tolist()


def sample_indices(total_frames: int, *, num_frames: int | None = None, fps: float | None = None,
                   video_fps: float | None = None, max_frames: int | None = None,
                   frame_times: Sequence[float] | None = None) -> list[int]:
    """Source frame numbers to decode: strictly increasing, unique, within [0, total_frames).

    Exactly one of `num_frames` (uniform, first and last frame included, as LLaVA-OneVision samples)
    or `fps` (the frame on screen every 1/fps seconds from the first frame). `fps` reads each frame's
    start time from `frame_times` (seconds, presentation order), else assumes a constant `video_fps`.
    `max_frames` caps either. Fewer frames than asked come back when the video is short; never repeats.
    """
    _check_sampling(num_frames, fps, max_frames)
    if total_frames < 0:
        raise ValueError(f"total_frames must not be negative, got {total_frames}")
    if num_frames is not None:
        return _uniform(total_frames, num_frames if max_frames is None else min(num_frames, max_frames))
    if frame_times is not None:
        picked = _on_screen(np.asarray(frame_times[:total_frames], dtype=np.float64), fps)
    elif video_fps is None or not (math.isfinite(video_fps) and video_fps > 0):
        raise ValueError(f"sampling by fps needs the video's frame rate, got video_fps={video_fps}")
    else:
        picked = _every(total_frames, video_fps / fps)
    if max_frames is not None and len(picked) > max_frames:
        picked = [picked[i] for i in _uniform(len(picked), max_frames)]
    return picked


def thinning_note(frames: Frames) -> str | None:
    """One line saying that `max_frames` thinned what `fps` picked, and to what spacing; None if it did not."""
    if frames.fps_frames is None or frames.fps_frames <= len(frames.indices):
        return None
    kept = len(frames.indices)
    spacing = (frames.timestamps[-1] - frames.timestamps[0]) / (kept - 1) if kept > 1 else frames.duration_s
    return (f"--fps picks {frames.fps_frames} frames of this {frames.duration_s:.1f} s video; --max-frames keeps "
            f"{kept} of them, about one every {spacing:.2f} s")


# --- image helpers ------------------------------------------------------------------------------


def _quarter_turns(rotation: float) -> int:
    return round(rotation / 90) % 4


def upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """Turn a decoded (H, W, C) frame the way its display matrix says; `rotation` is in degrees
    counter-clockwise, as PyAV's `VideoFrame.rotation` reports it, and snaps to quarter turns."""
    turns = _quarter_turns(rotation)
    return np.rot90(image, turns) if turns else image


def fit(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale so the longer side is at most `max_side`, keeping the aspect ratio."""
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --- native noise -------------------------------------------------------------------------------

_silence_lock = threading.Lock()
_silence_depth = 0
_saved_stderr_fd: int | None = None


def _redirect_stderr_to_devnull() -> None:
    global _silence_depth, _saved_stderr_fd
    with _silence_lock:
        _silence_depth += 1
        if _silence_depth > 1:
            return
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all: nothing can be printed there anyway
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        _saved_stderr_fd = saved


def _restore_stderr() -> None:
    global _silence_depth, _saved_stderr_fd
    with _silence_lock:
        _silence_depth -= 1
        if _silence_depth > 0 or _saved_stderr_fd is None:
            return
        os.dup2(_saved_stderr_fd, 2)
        os.close(_saved_stderr_fd)
        _saved_stderr_fd = None


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point fd 2 at /dev/null while native decoders run (they print past Python's sys.stderr).

    Reference-counted so overlapping uses from several threads restore fd 2 only once, at the end.
    """
    sys.stderr.flush()
    _redirect_stderr_to_devnull()
    try:
        yield
    finally:
        _restore_stderr()


# --- probing ------------------------------------------------------------------------------------


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    if not path.is_file():
        raise VideoError(f"{path}: is not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: permission denied")


def _looks_like_iso_media(path: Path) -> bool:
    """MP4/MOV/M4A files start with an `ftyp` box; a cut one keeps it but loses its index."""
    with path.open("rb") as file:
        return file.read(12)[4:8] == b"ftyp"


def _unopenable(path: Path, error: av.error.FFmpegError) -> VideoError:
    if _looks_like_iso_media(path):
        return VideoError(f"{path}: is truncated or corrupt (its MP4/MOV index is missing or damaged)")
    if isinstance(error, av.error.InvalidDataError):
        return VideoError(f"{path}: is not a video file (no known container format)")
    return VideoError(f"{path}: cannot be opened ({error.strerror})")


def _probe_rotation(path: Path) -> float:
    """Classify the file cheaply with PyAV and return its display rotation (see `upright`)."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise _unopenable(path, error) from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: has no video stream")
        try:
            first = next(container.decode(container.streams.video[0]), None)
        except av.error.FFmpegError:
            first = None
        if first is None:
            raise VideoError(f"{path}: has no decodable video frames (the video data is corrupt)")
        # PyAV before 13 does not expose the display matrix; such frames are taken as upright.
        return float(getattr(first, "rotation", 0) or 0)


def check_video(path: str | os.PathLike) -> None:
    """Raise VideoError (one line, naming the file) unless `path` opens as a video with a decodable first
    frame: a quick check, for a command that would otherwise find out only after loading a model."""
    path = Path(path)
    _check_path(path)
    with native_stderr_silenced():
        _probe_rotation(path)


# --- backends -----------------------------------------------------------------------------------


class _BackendFailed(Exception):
    """This backend cannot read the file; `auto` tries the next one."""


class _ShortRead(Exception):
    """Decoding ended after `readable` frames, before a sampled frame was reached."""

    def __init__(self, readable: int) -> None:
        super().__init__(f"decoding stopped after {readable} frames")
        self.readable = readable


_Decoded = Iterator[tuple[int, np.ndarray, float]]  # (source index, RGB frame, seconds)


class _Reader(ABC):
    total_frames: int
    fps: float

    @abstractmethod
    def read(self, indices: Sequence[int]) -> _Decoded:
        """Yield the given frames in order; raise _ShortRead if the stream ends first."""

    def close(self) -> None:
        """Release the native handle."""

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _DecordReader(_Reader):
    def __init__(self, path: Path) -> None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        self.total_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())

    def read(self, indices: Sequence[int]) -> _Decoded:
        starts = self._reader.get_frame_timestamp(list(indices))[:, 0]
        for lo in range(0, len(indices), _DECORD_BATCH):
            chunk = list(indices[lo : lo + _DECORD_BATCH])
            batch = self._reader.get_batch(chunk).asnumpy()
            if batch.ndim != 4 or batch.shape[-1] != 3:
                raise _BackendFailed(f"decord returned malformed frames of shape {batch.shape}")
            for offset, (index, image) in enumerate(zip(chunk, batch)):
                yield index, image, float(starts[lo + offset])

    def close(self) -> None:
        del self._reader


def _packet_times(path: Path) -> np.ndarray | None:
    """Every frame's start time in seconds from the container's packets, demuxed but not decoded,
    sorted into presentation order; None when a packet carries no timestamp.

    Every backend decodes through FFmpeg, so its frame n is the n-th of these. Exact integer pts
    times the time base, in float64: decord's own timestamps are float32, whose rounding is enough
    to put an instant on the wrong side of a frame's start."""
    stamps = _packet_pts(path)
    return None if stamps is None else (stamps[0] - stamps[1]) * stamps[2]


def _packet_pts(path: Path) -> tuple[np.ndarray, int, float] | None:
    """(every frame's pts in presentation order, the stream's start pts, its time base in seconds) from
    the packets; None when a packet carries no timestamp (see `_packet_times`)."""
    stamps = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start, unit = stream.start_time or 0, float(stream.time_base or 0)
        try:
            for packet in container.demux(stream):
                if packet.size:
                    stamps.append(packet.pts)
        except av.error.FFmpegError:
            pass  # a damaged or cut file: only the frames before the damage are sampled
    if not stamps or not unit or None in stamps:
        return None
    return np.sort(np.array(stamps, dtype=np.int64)), start, unit


# PyAV seeks instead of decoding from the start when the first frame asked for is at least this far in.
_SEEK_AFTER = 120


class _PyAVReader(_Reader):
    def __init__(self, path: Path) -> None:
        self._path = path
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else 0.0
            self.total_frames = stream.frames or self._estimate_frames(container, stream)

    def _estimate_frames(self, container: av.container.InputContainer, stream: av.VideoStream) -> int:
        """For containers that do not store a frame count (e.g. Matroska): duration x rate, else
        count packets, which reads the file but decodes nothing."""
        if stream.duration is not None and stream.time_base and self.fps:
            return round(float(stream.duration * stream.time_base) * self.fps)
        if container.duration is not None and self.fps:
            return round(container.duration / av.time_base * self.fps)
        return sum(1 for packet in container.demux(stream) if packet.size)

    def read(self, indices: Sequence[int]) -> _Decoded:
        wanted, last = set(indices), indices[-1]
        # Far into the video, seek to the keyframe before the first frame asked for rather than decode up
        # to it, and tell frames by their pts: one window of a long video costs its own length.
        stamps = _packet_pts(self._path) if indices[0] >= _SEEK_AFTER else None
        pts = stamps[0] if stamps is not None and indices[0] < len(stamps[0]) else None
        with av.open(str(self._path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            decoded = 0
            if pts is not None:
                container.seek(int(pts[indices[0]]), stream=stream, backward=True, any_frame=False)
            try:
                for frame in container.decode(stream):
                    if pts is None:
                        index = decoded
                    else:
                        index = int(np.searchsorted(pts, frame.pts)) if frame.pts is not None else len(pts)
                        if index >= len(pts) or pts[index] != frame.pts:
                            raise _BackendFailed("after seeking, a frame's time is not one of the file's")
                    decoded = index + 1
                    if index in wanted:
                        seconds = frame.time - start if frame.time is not None else index / self.fps
                        yield index, frame.to_ndarray(format="rgb24"), seconds
                    if index >= last:
                        return
            except av.error.FFmpegError:
                pass  # a damaged or cut stream: the frames before it are still good
            raise _ShortRead(decoded)


class _OpenCVReader(_Reader):
    def __init__(self, path: Path) -> None:
        self._path = path
        capture = self._open()
        try:
            self.total_frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
            self.fps = float(capture.get(cv2.CAP_PROP_FPS))
        finally:
            capture.release()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise _BackendFailed("OpenCV cannot open it")
        # Rotation is applied once for every backend, from PyAV's reading of the display matrix.
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        return capture

    def read(self, indices: Sequence[int]) -> _Decoded:
        wanted = set(indices)
        capture = self._open()
        try:
            for index in range(indices[-1] + 1):
                if not capture.grab():
                    raise _ShortRead(index)
                if index in wanted:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        raise _ShortRead(index)
                    seconds = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
                    yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), seconds
        finally:
            capture.release()


_READERS: dict[str, Callable[[Path], _Reader]] = {
    "decord": _DecordReader,
    "pyav": _PyAVReader,
    "opencv": _OpenCVReader,
}


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    num_frames: int | None
    fps: float | None
    max_frames: int | None
    max_side: int | None
    rotation: float
    explicit: tuple[int, ...] | None = None  # these source frames, not a sampling (`read_frames`)

    def indices(self, total: int, video_fps: float, times: np.ndarray | None, capped: bool = True) -> list[int]:
        if self.explicit is not None:
            return [index for index in self.explicit if index < total]
        return sample_indices(total, num_frames=self.num_frames, fps=self.fps, video_fps=video_fps,
                              max_frames=self.max_frames if capped else None, frame_times=times)


def _collect(reader: _Reader, indices: list[int],
             request: _Request) -> tuple[list[np.ndarray], list[int], list[float]]:
    images: list[np.ndarray] = []
    got: list[int] = []
    seconds: list[float] = []
    if not indices:
        raise _BackendFailed("none of the frames asked for is in the file")
    for index, image, time_s in reader.read(indices):
        images.append(upright(fit(image, request.max_side), request.rotation))
        got.append(index)
        seconds.append(float(time_s))
    return images, got, seconds


def _read_with(name: str, path: Path, request: _Request) -> Frames:
    with _READERS[name](path) as reader:
        if reader.total_frames < 1:
            raise _BackendFailed("it reports no frames")
        if not reader.fps > 0:
            raise _BackendFailed("it reports no frame rate")
        total = reader.total_frames
        times = _packet_times(path) if request.fps is not None else None
        try:
            images, indices, seconds = _collect(reader, request.indices(total, reader.fps, times), request)
        except _ShortRead as short:
            if short.readable == 0:
                raise _BackendFailed("no frame could be decoded") from None
            total = short.readable
            try:
                images, indices, seconds = _collect(reader, request.indices(total, reader.fps, times), request)
            except _ShortRead as again:
                raise _BackendFailed(f"decoding is unstable ({again})") from None
    fps_frames = len(request.indices(total, reader.fps, times, capped=False)) if request.fps is not None else None
    return Frames(images=np.stack(images), indices=tuple(indices), timestamps=tuple(seconds), backend=name,
                  video_fps=reader.fps, total_frames=total, duration_s=total / reader.fps, fps_frames=fps_frames)


# decord prefixes each message with "[hh:mm:ss] /source/file.cc:123: ".
_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def _describe(error: Exception) -> str:
    if isinstance(error, av.error.FFmpegError) and error.strerror:
        return error.strerror
    lines = str(error).strip().splitlines()
    text = _DECORD_PREFIX.sub("", lines[0]) if lines else ""
    return text[:160] or type(error).__name__


def _decode(path: Path, request: _Request, backend: str) -> Frames:
    rotated = _quarter_turns(request.rotation) != 0
    if backend == "decord" and rotated:
        raise VideoError(f"{path}: is rotated ({request.rotation:g} degrees), which decord cannot decode; "
                         "use backend 'pyav' or 'opencv'")
    usable = [name for name in _AUTO_ORDER if not (rotated and name == "decord")]
    failures: dict[str, str] = {}
    for name in usable if backend == "auto" else [backend]:
        try:
            return _read_with(name, path, request)
        except Exception as error:  # noqa: BLE001 - native libraries raise assorted types
            failures[name] = _describe(error)
    if backend != "auto":
        # Only now, on the way to an error, are the other backends tried: a read that works costs one.
        for name in usable:
            if name == backend:
                continue
            try:
                _read_with(name, path, request)
            except Exception as error:  # noqa: BLE001 - as above
                failures[name] = _describe(error)
                continue
            raise VideoError(f"{path}: could not be decoded with backend '{backend}' ({failures[backend]}); "
                             f"backend '{name}' decodes it: use backend '{name}' or 'auto'")
    raise VideoError(f"{path}: could not be decoded ({'; '.join(f'{name}: {why}' for name, why in failures.items())})")


def read_video(path: str | os.PathLike, *, num_frames: int | None = 32, fps: float | None = None,
               max_frames: int | None = None, backend: str = "auto", max_side: int | None = None) -> Frames:
    """Decode only the sampled frames of `path` (see `sample_indices` and the module notes).

    Raises ValueError for bad arguments and VideoError (one line, naming the file) for a video that
    cannot be read.
    """
    _check_sampling(num_frames, fps, max_frames)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    path = Path(path)
    _check_path(path)
    with native_stderr_silenced():
        rotation = _probe_rotation(path)
        request = _Request(num_frames, fps, max_frames, max_side, rotation)
        return _decode(path, request, backend)


def read_frames(path: str | os.PathLike, indices: Sequence[int], *, backend: str = "auto",
                max_side: int | None = None) -> Frames:
    """Decode exactly the source frames `indices` (ascending, unique), such as one window's of a long video
    sampled piece by piece (see `video_timeline`). Frames past the end of what can be decoded are left
    out; `Frames` describes the whole video. Errors as `read_video`'s."""
    if not indices or any(index < 0 for index in indices) or any(b <= a for a, b in zip(indices, indices[1:])):
        raise ValueError(f"indices must be ascending, unique and non-negative, got {list(indices)[:8]}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    path = Path(path)
    _check_path(path)
    with native_stderr_silenced():
        rotation = _probe_rotation(path)
        return _decode(path, _Request(None, None, None, max_side, rotation, tuple(indices)), backend)


@dataclass(frozen=True)
class Timeline:
    """When every frame of a video starts, read from its packets without decoding anything: what a caller
    needs to cut a long video into windows and sample each on its own, never holding its frames at once."""

    times: np.ndarray  # (N,) float64 seconds from the stream start, presentation order; frame n is times[n]
    video_fps: float

    @property
    def total_frames(self) -> int:
        return len(self.times)

    @property
    def duration_s(self) -> float:
        """Until the last frame ends: its start plus one frame at the average rate."""
        return float(self.times[-1]) + 1 / self.video_fps


def video_timeline(path: str | os.PathLike) -> Timeline:
    """Every frame's start time (see `Timeline`). Raises VideoError, one line naming the file, for what
    `read_video` would refuse: not a video, no video stream, nothing decodable."""
    path = Path(path)
    _check_path(path)
    with native_stderr_silenced():
        _probe_rotation(path)
        times = _packet_times(path)
        reader = _PyAVReader(path)
    if not reader.fps > 0:
        raise VideoError(f"{path}: has no frame rate, so its frames cannot be timed")
    if times is None:  # packets without timestamps: the frames at the average rate
        times = np.arange(reader.total_frames) / reader.fps
    if not len(times):
        raise VideoError(f"{path}: has no video frames")
    return Timeline(times=times, video_fps=reader.fps)


# --- bounded decoding ---------------------------------------------------------------------------

# The worker is a fresh interpreter that imports this module and nothing of the caller's: a
# multiprocessing start method would re-run the caller's main module in it ("spawn", "forkserver"),
# which fails for a script without `if __name__ == "__main__":` or one fed on stdin, or fork a
# process whose threads (PyTorch's) may hold locks the child then waits on forever ("fork").
_WORKER_BOOTSTRAP = (
    "import pickle, sys; request = pickle.load(sys.stdin.buffer); sys.path[:] = request['sys_path']; "
    f"from {__name__} import _serve; _serve(request)"
)


def _serve(request: dict[str, Any]) -> None:
    """The worker's side: run the call asked for (`read_video` unless it names another function of the
    package) and write its pickled result (or the error) to stdout."""
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a native library printing to stdout must not corrupt the result
    path, what = request["path"], request.get("what", "decoding")
    try:
        # Unpickled only now that sys.path is the caller's, so the function's module can be imported.
        function = pickle.loads(request["function"]) if "function" in request else read_video
        result: object = function(path, **request["kwargs"])
    except (VideoError, ValueError, TypeError) as error:
        result = error
    except Exception as error:  # noqa: BLE001 - the parent must get a reason, not a dead pipe
        result = VideoError(f"{path}: {what} failed ({type(error).__name__}: {_describe(error)})")
    with results:
        pickle.dump(result, results, protocol=pickle.HIGHEST_PROTOCOL)


def _worker_failure(path: str | os.PathLike, returncode: int, stderr: bytes, what: str = "decoding") -> VideoError:
    """Why the worker ended without a result, in one line: its last words, else how it ended."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    if lines:
        cause = lines[-1][:200]
    elif returncode < 0:
        cause = f"killed by signal {-returncode}"
    else:
        cause = f"exit code {returncode}"
    return VideoError(f"{path}: the {what} process failed ({cause})")


def read_video_bounded(path: str | os.PathLike, *, timeout_s: float | None, **kw: Any) -> Frames:
    """`read_video` in a killable worker process, giving up after `timeout_s` seconds (which include
    the worker's start-up); with `timeout_s=None`, plain `read_video` in this process.

    Works from any caller (a script without a main guard, code fed on stdin, a notebook). Where no
    interpreter can be started (an embedded or frozen Python), it decodes in this process, unbounded.
    """
    return call_bounded(read_video, path, timeout_s=timeout_s, **kw)


def call_bounded(function: Callable[..., Any], path: str | os.PathLike, *, timeout_s: float | None,
                 what: str = "decoding", **kw: Any) -> Any:
    """`function(path, **kw)` as `read_video_bounded` runs `read_video`: in a killable worker process,
    for any module-level function of the package that reads a media file (`read_frames`,
    `video_timeline`, shot detection); `what` names the work in a timeout's or a crash's message."""
    if timeout_s is None:
        return function(path, **kw)
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive or None, got {timeout_s}")
    if not sys.executable or getattr(sys, "frozen", False):
        return function(path, **kw)
    call = {} if function is read_video else {"function": pickle.dumps(function), "what": what}
    request = pickle.dumps({"sys_path": sys.path, "path": os.fspath(path), "kwargs": kw, **call})
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER_BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        output, errors = worker.communicate(request, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise VideoError(f"{path}: {what} timed out after {timeout_s:g} s") from None
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    try:
        result = pickle.loads(output)
    except Exception:  # noqa: BLE001 - no answer, or half of one: the worker died
        raise _worker_failure(path, worker.returncode, errors, what) from None
    if isinstance(result, Exception):
        raise result
    return result
