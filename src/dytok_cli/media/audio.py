"""The audio track of a video as speech recognition takes it: mono float32 samples at 16 kHz, sample 0 at the
video stream's start (the time the frames' timestamps count from).

Decoded with PyAV, already what the video decoding probes with: FFmpeg's decoders and its resampler
(`av.AudioResampler` mixes the channels down and converts the rate). Torch-free, like the video decoding, so
the bounded worker process does not load torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from .video import VideoError, call_bounded, native_stderr_silenced

RATE = 16000  # what Whisper's feature extractor takes
# A track whose loudest sample stays below this is silence: recorded speech peaks far above it (about
# -30 to -10 dBFS) and a quiet room's noise floor sits near it, while Whisper, given silence, invents text.
SILENT_DBFS = -60.0


def read_audio(path: str | os.PathLike, rate: int = RATE) -> np.ndarray | None:
    """(N,) float32 samples of the first audio stream at `rate`, mono, aligned so that sample 0 is where
    the video stream starts; None when the file has no audio stream. Decoding that fails part-way keeps
    what came before; a file that cannot be opened is a VideoError."""
    with native_stderr_silenced():
        try:
            container = av.open(os.fspath(path))
        except av.error.FFmpegError as error:
            raise VideoError(f"{path}: its audio cannot be read ({error.strerror})") from None
        with container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            video = container.streams.video[0] if container.streams.video else None
            origin = float(video.start_time * video.time_base) if video and video.start_time is not None else 0.0
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pieces: list[np.ndarray] = []
            first: float | None = None
            try:
                for frame in container.decode(stream):
                    if first is None and frame.time is not None:
                        first = frame.time
                    pieces.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
            except av.error.FFmpegError:
                pass  # a damaged or cut stream: the audio before the damage is still good
            pieces.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    samples = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)
    shift = round(((first or 0.0) - origin) * rate)  # audio that starts after the video starts is preceded by silence
    if shift > 0:
        return np.concatenate([np.zeros(shift, np.float32), samples])
    return samples[-shift:]


def read_audio_bounded(path: str | os.PathLike, *, timeout_s: float | None, rate: int = RATE) -> np.ndarray | None:
    """`read_audio` in a killable worker process, given up after `timeout_s` seconds with a VideoError (as
    `video.read_video_bounded` decodes frames); with `timeout_s=None` (or where no interpreter can be
    started), in this process, unbounded."""
    return call_bounded(read_audio, Path(path), timeout_s=timeout_s, what="decoding its audio", rate=rate)


def is_silent(samples: np.ndarray) -> bool:
    """Whether `samples` (floats in [-1, 1]) hold nothing louder than SILENT_DBFS, or nothing at all."""
    return samples.size == 0 or float(np.abs(samples).max()) < 10 ** (SILENT_DBFS / 20)
