"""What is said in a video's audio track, transcribed by Whisper through `transformers`' own
automatic-speech-recognition pipeline, with the segment timestamps it returns.

Audio longer than 30 seconds goes through Whisper's own long-form algorithm, which the pipeline runs for it:
30-second windows, each starting where the last complete segment of the one before ended, timestamps
counted from the start of the audio. A transcript is kept in the `--cache-dir` cache, keyed by the file's
bytes and the speech model, so a video is transcribed once.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Device, DType
from ..errors import ModelError, ModelUnavailable
from ..models import fetch_failed, model_source, resolve_device, resolve_dtype
from ..types import Line, Transcript
from . import subtitles
from .audio import RATE, is_silent, read_audio_bounded
from .cache import VisualCache
from .video import VideoError

FRAMES_ALONE = "answering from the frames alone"
# Greedy decoding, not the pipeline's default of 5 beams: measured 2.7 times cheaper per minute of audio on a
# CPU (whisper-base's shape, docs/subtitles.md), cheaper than whisper-tiny with 5 beams, for a transcript that
# only goes beside the video.
DECODING = {"num_beams": 1}


def lines_from_chunks(chunks: list[dict[str, Any]], seconds: float) -> tuple[Line, ...]:
    """The pipeline's timestamped chunks as lines within audio of `seconds`: text on one line, empty chunks
    dropped, a last chunk left open (no end time) ending with the audio, in time order."""
    lines = []
    for chunk in chunks:
        start, end = chunk["timestamp"]
        text = " ".join(chunk["text"].split())
        if text and start is not None:
            end = seconds if end is None else end
            if end > start:
                lines.append(Line(float(start), float(end), text))
    return subtitles.clip(sorted(lines, key=lambda line: line.start), seconds)


def audio_track(video: str | Path, decode_timeout: float | None) -> tuple[np.ndarray | None, str | None]:
    """`video`'s audio track as speech is taken from it (`audio.read_audio`), or None and why not: no audio
    track, silence, audio that cannot be decoded."""
    try:
        samples = read_audio_bounded(video, timeout_s=decode_timeout)
    except VideoError as error:
        return None, str(error).removeprefix(f"{video}: ")
    if samples is None:
        return None, "no audio track"
    if is_silent(samples):
        return None, "its audio track is silent"
    return samples, None


class Transcriber:
    """Transcribes videos with one Whisper checkpoint, loaded on first use."""

    def __init__(self, name: str, *, device: Device, dtype: DType, decode_timeout: float | None,
                 cache: VisualCache | None = None) -> None:
        self.name = name
        self.device = device
        self.dtype = dtype
        self.decode_timeout = decode_timeout
        self.cache = cache
        self.source = f"speech ({name})"

    @cached_property
    def recognizer(self) -> Any:
        """The `automatic-speech-recognition` pipeline over the checkpoint (safetensors weights only)."""
        from transformers import AutoConfig, AutoProcessor, WhisperForConditionalGeneration, pipeline

        source, local_only = model_source(self.name, flag="--speech-model")
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=local_only)
            if config.model_type != "whisper":
                raise ModelError(f"--speech-model {self.name!r} is a {config.model_type!r} model, not a Whisper checkpoint")
            processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
            target = resolve_device(self.device)
            model = WhisperForConditionalGeneration.from_pretrained(
                source, dtype=resolve_dtype(self.dtype, target), use_safetensors=True, local_files_only=local_only
            )
        except (OSError, ValueError) as error:
            failure = ModelUnavailable if fetch_failed(error) else ModelError
            raise failure(f"cannot load speech model {self.name!r}: {str(error).splitlines()[0]}") from error
        return pipeline(
            "automatic-speech-recognition", model=model.to(target).eval(), tokenizer=processor.tokenizer,
            feature_extractor=processor.feature_extractor, device=target,
        )

    def _identity(self) -> dict[str, Any]:
        model = self.recognizer.model
        return {"speech_model": self.name, "dtype": str(model.dtype), "device": model.device.type, "decoding": DECODING}

    def transcribe(self, video: str | Path) -> Transcript:
        """What is said in `video`'s audio track: its lines, or no lines and a note saying why (no audio
        track, silence, audio that cannot be decoded, nothing recognised). From the cache when it has it."""
        key = self.cache.key(video, self._identity()) if self.cache is not None else None
        if key is not None and (kept := self.cache.load_transcript(key)) is not None:
            return kept
        transcript = self._transcribe(video)
        if key is not None:
            self.cache.store_transcript(key, transcript)
        return transcript

    def _transcribe(self, video: str | Path) -> Transcript:
        samples, note = audio_track(video, self.decode_timeout)
        if samples is None:
            return Transcript(None, (), f"{note}; {FRAMES_ALONE}")
        result = self.recognizer({"raw": samples, "sampling_rate": RATE}, return_timestamps=True, generate_kwargs=DECODING)
        lines = lines_from_chunks(result.get("chunks") or [], samples.size / RATE)
        if not lines:
            return Transcript(None, (), f"no speech recognised in its audio track; {FRAMES_ALONE}")
        return Transcript(self.source, lines)

