"""--subtitles and --speech on the commands that answer (ask, inspect, eval) and through the lmms-eval plugin: the
record, the notes, and the usage errors."""

from __future__ import annotations

import json
import shutil

import pytest
from speech_helpers import one_thread, silence, tiny_whisper_dir, tone, write_clip_with_audio  # noqa: F401

from dytok_cli.apps import eval as evaluation
from dytok_cli.apps.lmms_eval.plugin import Answerer, Request
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.pipeline import Pipeline
from dytok_cli.types import Question

HEADER = "This video's subtitles are listed below: \n"
SRT = ("1\n00:00:00,000 --> 00:00:01,000\nthe dog is red\n\n2\n00:00:01,800 --> 00:00:02,000\na man walks\n\n"
       "3\n00:00:02,000 --> 00:00:02,500\nbetween two frames\n")


@pytest.fixture
def talk(tmp_path, clip):
    """A copy of the clip with subtitles beside it."""
    video = tmp_path / "talk.mp4"
    shutil.copy(clip, video)
    (tmp_path / "talk.en.srt").write_text(SRT)
    return video


def ask(model_dir, *args):
    return ["ask", *args, "--model", str(model_dir), "--frames", "4", "--max-new-tokens", "4", "--decode-timeout", "0"]


def test_ask_with_the_subtitles_beside_the_video(dytok_here, tiny_llava_dir, talk):
    result = dytok_here(*ask(tiny_llava_dir, str(talk), "what happens?", "--subtitles", "auto", "--json"))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    said = record["subtitles"]
    # Four frames of 24 at 8 fps: 0, 1, 1.875 and 2.875 s; the first line ends as the second frame shows.
    assert [frame["timestamp"] for frame in record["frames"]] == [0.0, 1.0, 1.875, 2.875]
    assert said["lines"] == [{"start": 0.0, "end": 1.0, "text": "the dog is red"},
                             {"start": 1.8, "end": 2.0, "text": "a man walks"}]
    assert said["source"] == str(talk.parent / "talk.en.srt") and said["tokens"] > 0 and said["note"] is None
    assert record["visual_tokens"]["kept"] < record["visual_tokens"]["full"]  # the ratio counts visual tokens only
    assert result.stderr == ""


def test_without_the_flags_the_record_says_nothing_of_subtitles(dytok_here, tiny_llava_dir, talk):
    result = dytok_here(*ask(tiny_llava_dir, str(talk), "what happens?", "--json"))
    assert result.returncode == 0 and json.loads(result.stdout)["subtitles"] is None


def test_a_file_that_does_not_parse_is_a_note_not_an_error(dytok_here, tiny_llava_dir, talk):
    (talk.parent / "notes.srt").write_text("no cues in here\n")
    result = dytok_here(*ask(tiny_llava_dir, str(talk), "what happens?", "--subtitles", str(talk.parent / "notes.srt"), "--json"))
    assert result.returncode == 0, result.stderr
    note = f"{talk.parent / 'notes.srt'}: not SRT or WebVTT (no cue timings); answering from the frames alone"
    assert result.stderr == f"{talk}: {note}\n"
    said = json.loads(result.stdout)["subtitles"]
    assert said == {"source": None, "speech": None, "lines": [], "tokens": 0, "note": note, "speech_s": said["speech_s"]}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--subtitles", "missing.srt"], "--subtitles missing.srt: no such file or directory (or give auto)"),
        (["--speech-model", "openai/whisper-tiny"], "--speech-model only applies with --speech"),
        (["--subtitles", ""], "--subtitles must name a file, a directory or auto"),
    ],
)
def test_usage_errors(dytok_here, tiny_llava_dir, talk, extra, message):
    result = dytok_here(*ask(tiny_llava_dir, str(talk), "what happens?", *extra))
    assert result.returncode == 2 and result.stderr == f"dytok: error: {message}\n" and result.stdout == ""


def test_one_subtitle_file_for_several_videos_is_refused(dytok_here, tiny_llava_dir, talk, clip):
    srt = str(talk.parent / "talk.en.srt")
    result = dytok_here(*ask(tiny_llava_dir, str(talk), str(clip), "-q", "what?", "--subtitles", srt))
    assert result.returncode == 2
    assert result.stderr == f"dytok: error: --subtitles {srt} is one video's subtitles; for several videos give a directory or auto\n"


def test_eval_takes_a_folder_or_auto_not_one_file(dytok_here, talk, tmp_path):
    srt = str(talk.parent / "talk.en.srt")
    result = dytok_here("eval", str(tmp_path / "items.jsonl"), "--output", str(tmp_path / "out"), "--subtitles", srt)
    assert result.returncode == 2
    assert result.stderr == f"dytok: error: --subtitles {srt} is one video's subtitles; for several videos give a directory or auto\n"


def test_speech_end_to_end(dytok_here, tiny_llava_dir, tiny_whisper_dir, tmp_path, one_thread):
    whisper = tiny_whisper_dir
    loud = write_clip_with_audio(tmp_path / "loud.mp4", tone(3.0))
    quiet = write_clip_with_audio(tmp_path / "quiet.mp4", silence(3.0))
    cache = tmp_path / "cache"
    args = ["--speech", "--speech-model", str(whisper), "--cache-dir", str(cache), "--jsonl"]
    result = dytok_here(*ask(tiny_llava_dir, str(loud), str(quiet), "-q", "what?", *args))
    assert result.returncode == 0, result.stderr
    heard, silent = (json.loads(line)["subtitles"] for line in result.stdout.splitlines())
    assert heard["source"] == f"speech ({whisper})" and heard["speech_s"] > 0
    assert silent["lines"] == [] and silent["note"] == "its audio track is silent; answering from the frames alone"
    assert result.stderr == f"{quiet}: its audio track is silent; answering from the frames alone\n"
    again = dytok_here(*ask(tiny_llava_dir, str(loud), "what?", *args))
    assert json.loads(again.stdout)["subtitles"]["lines"] == heard["lines"]  # from the cache
    assert len(list(cache.glob("*.transcript.json"))) == 2


def test_inspect_with_subtitles(dytok_here, tiny_llava_dir, talk):
    result = dytok_here("inspect", str(talk), "what happens?", "--model", str(tiny_llava_dir), "--frames", "4",
                        "--decode-timeout", "0", "--method", "dytok", "--subtitles", "auto", "--json")
    assert result.returncode == 0, result.stderr
    assert [line["text"] for line in json.loads(result.stdout)["subtitles"]["lines"]] == ["the dog is red", "a man walks"]


def spy_questions(monkeypatch) -> list[Question]:
    """The questions answers are generated for, with what goes beside the video."""
    asked = []
    original = Pipeline.answer

    def answer(self, plan, *args, **kwargs):
        asked.append(plan.question)
        return original(self, plan, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "answer", answer)
    return asked


def test_eval_with_video_mmes_subtitle_folder(tiny_llava, tiny_llava_dir, talk, tmp_path, monkeypatch):
    data_dir, subtitle_dir = tmp_path / "data", tmp_path / "subtitle"
    data_dir.mkdir()
    subtitle_dir.mkdir()
    shutil.copy(talk, data_dir / "fFjv93ACGo8.mp4")
    (subtitle_dir / "fFjv93ACGo8.srt").write_text(SRT)
    item = {"question_id": "001-1", "videoID": "fFjv93ACGo8", "question": "How many?", "options": ["A. one", "B. two"],
            "answer": "B"}
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps(item) + "\n")
    items = evaluation.load_items(data, data_dir)
    run_settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32,
                            max_new_tokens=3, decode_timeout=None, subtitles=str(subtitle_dir))
    manifest = evaluation.manifest(data, [run_settings], data_dir)
    assert manifest["settings"]["subtitles"] == str(subtitle_dir.resolve()) and "speech" not in manifest["settings"]
    asked = spy_questions(monkeypatch)
    cases = evaluation.grid([Method.none], [1.0])
    run_dir = evaluation.RunDirectory(tmp_path / "out", manifest, force=False)
    compared = Settings.for_methods([Method.none], **{k: v for k, v in run_settings.__dict__.items() if k not in ("method", "ratio")})
    assert evaluation.run(evaluation.pending(items, cases, []), cases, compared, run_dir, model=tiny_llava) == 0
    # lmms-eval's videomme_w_subtitle prompt: its header, the lines, then the question's own prompt.
    assert [question.first_turn_text() for question in asked] == [
        f"{HEADER}the dog is red\na man walks\n{evaluation.prompt(items[0])}"]


def test_the_plugin_leaves_a_tasks_own_subtitles_alone(tiny_llava, tiny_llava_dir, talk, monkeypatch):
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32, max_new_tokens=3,
                        decode_timeout=None, method=Method.none, subtitles="auto")
    given = f"{HEADER}what the task says\nSelect the best answer."
    asked = spy_questions(monkeypatch)
    Answerer(settings, model=tiny_llava).answer([Request(str(talk), "Select the best answer.", None, 0.0, ()),
                                                 Request(str(talk), given, None, 0.0, ())])
    assert [question.first_turn_text() for question in asked] == [
        f"{HEADER}the dog is red\na man walks\nSelect the best answer.",  # ours, from the file beside the video
        given,  # the task's, as it wrote them, with nothing of ours added
    ]
