"""--speech: a video's audio track decoded with PyAV (within --decode-timeout) and transcribed by a tiny random
Whisper of the real classes through `transformers`' own automatic-speech-recognition pipeline. Random weights
transcribe noise, so what is checked is the plumbing, against the pipeline's own output on the same samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from speech_helpers import RATE, one_thread, tiny_whisper_dir, silence, speech_like, tone, write_clip_with_audio  # noqa: F401

from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.media import audio, subtitles, video
from dytok_cli.media.cache import VisualCache
from dytok_cli.media.speech import Transcriber, lines_from_chunks
from dytok_cli.media.video import VideoError
from dytok_cli.pipeline import Pipeline
from dytok_cli.types import Line

SECONDS = 3.0  # the clips: 24 frames at 8 fps


@pytest.fixture(autouse=True)
def on_one_thread(one_thread):
    pass


@pytest.fixture
def whisper_dir(tiny_whisper_dir):
    return tiny_whisper_dir


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("talks")
    return {
        "tone": write_clip_with_audio(folder / "tone.mp4", tone(SECONDS)),
        "speech": write_clip_with_audio(folder / "speech.mp4", speech_like(SECONDS), rate=44100, channels=2),
        "silence": write_clip_with_audio(folder / "silence.mp4", silence(SECONDS)),
        "mute": write_clip_with_audio(folder / "mute.mp4", None),
    }


def transcriber(whisper_dir, cache=None) -> Transcriber:
    return Transcriber(str(whisper_dir), device=Device.cpu, dtype=DType.float32, decode_timeout=None, cache=cache)


# --- the audio track ------------------------------------------------------------------------------------


def test_the_audio_track_as_whisper_takes_it(clips):
    samples = audio.read_audio(clips["tone"])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / RATE - SECONDS) < 0.1  # AAC pads to whole 1024-sample frames
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.fft.rfftfreq(samples.size, 1 / RATE)[spectrum.argmax()] - 440) < 2
    assert not audio.is_silent(samples)
    # Stereo at 44.1 kHz comes back mono at 16 kHz (the speech-like noise was written at 44.1 kHz: 3 s of it
    # at that rate is SECONDS * 16000 / 44100 s long).
    stereo = audio.read_audio(clips["speech"])
    assert abs(stereo.size / RATE - SECONDS * RATE / 44100) < 0.1 and not audio.is_silent(stereo)


def test_no_audio_track_and_silence(clips):
    assert audio.read_audio(clips["mute"]) is None
    assert audio.is_silent(audio.read_audio(clips["silence"]))
    assert audio.is_silent(np.zeros(0, np.float32))


def test_audio_decoding_is_bounded(clips, monkeypatch):
    bounded = audio.read_audio_bounded(clips["tone"], timeout_s=60)
    assert np.array_equal(bounded, audio.read_audio(clips["tone"]))
    assert audio.read_audio_bounded(clips["mute"], timeout_s=60) is None
    monkeypatch.setattr(video, "_WORKER_BOOTSTRAP", "import time; time.sleep(30)")
    with pytest.raises(VideoError, match=r"tone\.mp4: decoding its audio timed out after 0\.5 s"):
        audio.read_audio_bounded(clips["tone"], timeout_s=0.5)


def test_audio_that_starts_after_the_video_is_preceded_by_silence(tmp_path):
    import av
    from fractions import Fraction

    from clips import frame_pattern

    path = tmp_path / "late.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 8)
        sound = container.add_stream("aac", rate=RATE)
        sound.layout = "mono"
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        beep = tone(1.0)
        for start in range(0, beep.size, 1024):
            frame = av.AudioFrame.from_ndarray(beep[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate = RATE
            frame.pts = RATE + start  # one second in
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
    samples = audio.read_audio(path)
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert abs(loud[0] / RATE - 1.0) < 0.05


# --- transcription ---------------------------------------------------------------------------------------


def own_chunks(whisper_dir, samples: np.ndarray) -> list[dict]:
    """The pipeline's own output for `samples`, nothing of ours involved."""
    from transformers import AutoProcessor, WhisperForConditionalGeneration, pipeline

    processor = AutoProcessor.from_pretrained(whisper_dir)
    recognizer = pipeline("automatic-speech-recognition", model=WhisperForConditionalGeneration.from_pretrained(whisper_dir),
                          tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor)
    # Decoded greedily, as dytok asks it to.
    return recognizer({"raw": samples, "sampling_rate": RATE}, return_timestamps=True,
                      generate_kwargs={"num_beams": 1})["chunks"]


@pytest.mark.parametrize("name", ["tone", "speech"])
def test_the_transcript_is_the_pipelines_own_chunks(whisper_dir, clips, name):
    samples = audio.read_audio(clips[name])
    chunks = own_chunks(whisper_dir, samples)
    said = transcriber(whisper_dir).transcribe(clips[name])
    seconds = samples.size / RATE
    # Each chunk with text, on one line, within the audio: the random model's timestamps run past its end.
    expected = [Line(start, min(end if end is not None else seconds, seconds), " ".join(chunk["text"].split()))
                for chunk in chunks for start, end in [chunk["timestamp"]]
                if chunk["text"].strip() and start < seconds]
    assert expected, "the tiny Whisper says nothing within the clip: the check would be empty"
    assert list(said.lines) == sorted(expected, key=lambda line: line.start)
    assert said.source == f"speech ({whisper_dir})" and said.note is None


def test_transcribing_in_bfloat16(whisper_dir, clips):
    heard = Transcriber(str(whisper_dir), device=Device.cpu, dtype=DType.bfloat16, decode_timeout=None)
    assert heard.transcribe(clips["tone"]).lines and heard.recognizer.model.dtype == torch.bfloat16


def test_chunks_to_lines():
    chunks = [{"timestamp": (1.0, 2.0), "text": " later "}, {"timestamp": (0.0, 1.0), "text": " first\n line"},
              {"timestamp": (2.0, 2.5), "text": "  "}, {"timestamp": (3.0, None), "text": "open"},
              {"timestamp": (9.0, 10.0), "text": "past the end"}]
    assert lines_from_chunks(chunks, 5.0) == (Line(0.0, 1.0, "first line"), Line(1.0, 2.0, "later"), Line(3.0, 5.0, "open"))


def test_nothing_to_hear_leaves_the_model_unloaded(whisper_dir, clips):
    heard = transcriber(whisper_dir)
    assert heard.transcribe(clips["mute"]).note == "no audio track; answering from the frames alone"
    silent = heard.transcribe(clips["silence"])
    assert silent.lines == () and silent.note == "its audio track is silent; answering from the frames alone"
    assert "recognizer" not in heard.__dict__


def test_a_video_is_transcribed_once(whisper_dir, clips, tmp_path, monkeypatch):
    cache = VisualCache(tmp_path / "cache")
    first = transcriber(whisper_dir, cache).transcribe(clips["tone"])
    again = transcriber(whisper_dir, cache)
    monkeypatch.setattr(audio, "read_audio", lambda *args, **kwargs: pytest.fail("decoded again"))
    again.recognizer.__class__  # loaded (its identity keys the cache); then never called
    monkeypatch.setattr(type(again.recognizer), "__call__", lambda *args, **kwargs: pytest.fail("transcribed again"))
    assert again.transcribe(clips["tone"]) == first
    assert len(list((tmp_path / "cache").glob("*.transcript.json"))) == 1


def test_a_speech_model_that_is_not_whisper(tiny_llava_dir, clips):
    from dytok_cli.errors import ModelError

    with pytest.raises(ModelError, match="not a Whisper checkpoint"):
        transcriber(tiny_llava_dir).transcribe(clips["tone"])


# --- in the prompt -----------------------------------------------------------------------------------------


def settings(model_dir, **overrides) -> Settings:
    options = dict(model=str(model_dir), frames=6, device=Device.cpu, dtype=DType.float32, max_new_tokens=8,
                   decode_timeout=None, method=Method.dytok_fastv)
    return Settings(**{**options, **overrides})


def test_speech_reaches_the_prompt_by_the_same_rule(tiny_llava_dir, tiny_llava, whisper_dir, clips):
    pipeline = Pipeline(settings(tiny_llava_dir, speech=True, speech_model=str(whisper_dir)), model=tiny_llava)
    visual = pipeline.prepare(clips["tone"])
    heard = transcriber(whisper_dir).transcribe(clips["tone"])
    assert visual.transcript.lines == subtitles.clip(heard.lines, visual.frames.duration_s)
    plan = pipeline.plan(visual, "what happens?")
    assert plan.subtitles == subtitles.covering(visual.transcript.lines, visual.frames.timestamps) != ()
    assert plan.question.context == "This video's subtitles are listed below: \n" + "\n".join(line.text for line in plan.subtitles)
    assert plan.timings["speech_s"] > 0


def test_subtitles_first_then_speech(tiny_llava_dir, tiny_llava, whisper_dir, clips, tmp_path):
    (tmp_path / "broken.srt").write_text("not subtitles\n")
    options = dict(speech=True, speech_model=str(whisper_dir))
    pipeline = Pipeline(settings(tiny_llava_dir, subtitles=str(tmp_path / "broken.srt"), **options), model=tiny_llava)
    said = pipeline.transcript(clips["tone"], SECONDS)
    assert said.source == f"speech ({whisper_dir})" and said.lines
    assert said.note == f"{tmp_path / 'broken.srt'}: not SRT or WebVTT (no cue timings); transcribed its audio instead"
    (tmp_path / "good.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nthe dog\n")
    pipeline = Pipeline(settings(tiny_llava_dir, subtitles=str(tmp_path / "good.srt"), **options), model=tiny_llava)
    assert pipeline.transcript(clips["tone"], SECONDS).source == str(tmp_path / "good.srt")
    assert "transcriber" not in pipeline.__dict__
    pipeline = Pipeline(settings(tiny_llava_dir, subtitles="auto", **options), model=tiny_llava)
    said = pipeline.transcript(clips["silence"], SECONDS)
    assert said.lines == () and said.note == ("no subtitle file found; its audio track is silent; "
                                              "answering from the frames alone")
