"""`dytok summarize` end to end on videos with hard cuts at known times, with tiny models of the real classes:
cuts found, chapters on window boundaries whatever the model writes, frames released window by window,
true frame times in the prompt, resume after Ctrl-C, outputs that are written whole, and bad input."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import weakref
from pathlib import Path

import pytest
from clips import write_audio_only, write_empty_video, write_shots, write_text_file
from conftest import modes, plain_modes, run_on_a_terminal

from dytok_cli.apps import summarize as summarizing
from dytok_cli.math.windows import MIN_CHAPTER_S
from dytok_cli.pipeline import Pipeline

CUTS = [12.5, 25.0, 41.0]
DURATION = 60.0
# Small and quick: a frame every 4 s, one-token texts, decoding in this process.
FAST = ["--fps", "0.25", "--max-new-tokens", "1", "--decode-timeout", "0"]
# The families (their MoE variants differ only in the decoder's MLP).
FAMILIES = ["llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "internvl", "smolvlm", "gemma4"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("summarize")
    return {
        "shots": write_shots(folder / "shots.mp4", CUTS, DURATION, fps=4),
        "two": write_shots(folder / "two.mp4", [12.0], 24.0, fps=4),
        "short": write_shots(folder / "short.mp4", [], 4.0, fps=4),
        "text": write_text_file(folder / "notes.mp4"),
        "empty": write_empty_video(folder / "empty.mkv"),
        "audio": write_audio_only(folder / "voice.m4a"),
    }


@pytest.fixture
def scripted_model(monkeypatch):
    """The model's text steps answer from a script (its window descriptions are still its own): what it
    names as chapter starts, then a title with every character a chapter file escapes. Returns the
    (prompt, max_new_tokens) of every text step, in order."""
    asked: list[tuple[str, int | None]] = []

    def complete(self, prompt, force_length=False, max_new_tokens=None):
        asked.append((prompt, max_new_tokens))
        if "Which parts begin a new chapter?" in prompt:
            return "New chapters at 00:00:14 and 14:00, after 7.5 s, in part 3 and part 99.", 0.0
        return "Title: The = Part; # of \\ it\nIt shows things.", 0.0

    monkeypatch.setattr(Pipeline, "complete", complete)
    return asked


def progress_lines(stderr: str, video: str) -> list[str]:
    """The progress lines for `video` in a non-terminal stderr, each window's seconds as S."""
    return [re.sub(r"in \d+\.\d s$", "in S s", line) for line in stderr.splitlines()
            if line.startswith(f"summarize: {video}: ")]


def summarize_json(dytok_here, *args: str) -> dict:
    result = dytok_here("summarize", *args, "--format", "json", *FAST)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_chapters_on_window_boundaries(record: dict) -> None:
    windows, chapters = record["windows"], record["chapters"]
    starts = [window["start"] for window in windows]
    assert windows[0]["start"] == 0 and windows[-1]["end"] == record["duration_s"]
    assert all(a["end"] == b["start"] for a, b in zip(windows, windows[1:]))
    assert chapters[0]["start"] == 0 and chapters[-1]["end"] == record["duration_s"]
    assert all(a["end"] == b["start"] for a, b in zip(chapters, chapters[1:]))
    for chapter in chapters:
        first, last = chapter["windows"]
        assert chapter["start"] == windows[first]["start"] and chapter["end"] == windows[last]["end"]
        assert chapter["start"] in starts
        assert chapter["end"] - chapter["start"] >= MIN_CHAPTER_S


def test_the_cuts_are_found_and_chapters_start_where_windows_do_whatever_the_model_writes(
    tiny_llava_dir, videos, dytok_here, scripted_model
):
    """The model names times that are no boundary (14:00, 0:14), a decimal, part 3 and a part that does not
    exist: only part 3 counts, and its chapter starts exactly where window 3 does. Stderr, not a terminal
    here, has a plain line per window and per step after them, and stdout the record alone."""
    video = str(videos["shots"])
    result = dytok_here("summarize", video, "-m", str(tiny_llava_dir), "--format", "json", *FAST)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    cuts = record["segmentation"]["cuts"]
    assert len(cuts) == len(CUTS) and all(abs(found - true) <= 0.5 for found, true in zip(cuts, CUTS))
    assert [window["start"] for window in record["windows"]] == [0.0, *cuts]
    assert [window["opens"] for window in record["windows"]] == ["start", "cut", "cut", "cut"]
    assert_chapters_on_window_boundaries(record)
    assert record["chapters_from"] == "model"
    third = record["windows"][2]["start"]
    assert [(c["start"], c["end"]) for c in record["chapters"]] == [(0.0, third), (third, DURATION)]
    assert record["chapters"][0]["title"] == "The = Part; # of \\ it"
    assert [(c["description"], c["description_from"]) for c in record["chapters"]] == [("It shows things.", "model")] * 2
    assert record["summary_from"] == "model"
    spans = [(window["start"], window["end"]) for window in record["windows"]]
    clock = [f"{int(start) // 60}:{int(start) % 60:02d}-{int(end) // 60}:{int(end) % 60:02d}" for start, end in spans]
    assert progress_lines(result.stderr, video) == [
        f"summarize: {video}: finding shots",
        *[f"summarize: {video}: window {k}/4 ({span}) described in S s" for k, span in enumerate(clock, start=1)],
        f"summarize: {video}: choosing chapters",
        f"summarize: {video}: writing chapter 1/2",
        f"summarize: {video}: writing chapter 2/2",
        f"summarize: {video}: summarising",
    ]
    assert clock[0] == "0:00-0:12" and "\x1b" not in result.stderr
    # The passes: the chapter choice, a title and paragraph for each chapter of two windows, the summary.
    assert [cap for _, cap in scripted_model] == [None] * 4
    for window in record["windows"]:  # frames that start inside the window, at their true times
        assert window["timestamps"] and all(window["start"] <= t < window["end"] for t in window["timestamps"])


@pytest.mark.parametrize("model_type", FAMILIES)
def test_every_family_describes_windows_at_their_true_times(model_type, build_family, videos, dytok_here, monkeypatch,
                                                            scripted_model):
    """Each window described by the model from its own frames (the text steps after it are scripted here;
    `test_text_alone_is_answered_as_the_model_answers_it` checks them against the model)."""
    seen: list[tuple[tuple[float, ...], tuple[float, ...]]] = []
    encode = Pipeline.encode

    def spying(self, video, frames, on_stage=None):
        visual = encode(self, video, frames, on_stage)
        seen.append((frames.timestamps, visual.encoded.timestamps))
        return visual

    monkeypatch.setattr(Pipeline, "encode", spying)
    record = summarize_json(dytok_here, str(videos["two"]), "-m", str(build_family(model_type)), "--window", "12")
    assert [(w["start"], w["end"], w["opens"]) for w in record["windows"]] == [(0.0, 12.0, "start"), (12.0, 24.0, "fixed")]
    assert record["segmentation"] == {"mode": "fixed", "window_s": 12.0, "cuts": None}
    assert_chapters_on_window_boundaries(record)
    assert record["settings"]["method"] == "dytok-fastv" and record["settings"]["ratio"] == 0.25
    assert len(seen) == 2
    for (frame_times, prompt_times), window in zip(seen, record["windows"]):
        assert list(frame_times) == window["timestamps"] == [window["start"] + 4 * k for k in range(3)]
        assert 0 < window["visual_tokens"]["kept"] < window["visual_tokens"]["full"]
        if model_type in ("qwen3_vl", "qwen3_5"):
            # Each temporal patch of two frames is written into the prompt at the mean of its frames' times
            # in the video (an odd count repeats the last frame).
            pairs = [frame_times[i : i + 2] for i in range(0, len(frame_times), 2)]
            assert list(prompt_times) == pytest.approx([sum(pair) / len(pair) for pair in pairs])
        if model_type in ("smolvlm", "gemma4"):  # each frame is written into the prompt at its own time in the video
            assert prompt_times == frame_times


def test_the_two_pass_method(tiny_llava_dir, videos, dytok_here):
    record = summarize_json(dytok_here, str(videos["two"]), "-m", str(tiny_llava_dir), "--method", "dytok", "--window", "12")
    assert record["settings"]["method"] == "dytok" and len(record["windows"]) == 2
    assert all(0 < window["visual_tokens"]["kept"] < window["visual_tokens"]["full"] for window in record["windows"])
    assert_chapters_on_window_boundaries(record)


def test_each_window_is_given_the_lines_said_within_it(tiny_llava_dir, videos, dytok_here, tmp_path, monkeypatch,
                                                      scripted_model):
    """--subtitles: a window's prompt holds, after its frames, the lines that overlap its time range, in order
    (a line across a boundary in both windows); the record lists them per window; a line past the end is not
    said in any."""
    subtitle_file = tmp_path / "two.srt"
    subtitle_file.write_text("1\n00:00:01,000 --> 00:00:03,000\nhello from the start\n\n"
                             "2\n00:00:11,000 --> 00:00:13,000\nacross the <i>cut</i>\n\n"
                             "3\n00:00:20,000 --> 00:00:22,000\nthe end is near\n\n"
                             "4\n00:00:30,000 --> 00:00:31,000\nafter the video\n")
    contexts: list[str] = []
    plan = Pipeline.plan

    def spying(self, video, question, on_stage=None):
        ids = self.model.prompt_ids(question)[0]
        bare = self.model.prompt_ids(dataclasses.replace(question, context=""))[0]
        video_at = int((ids == self.model.video_token_id()).nonzero()[0])
        first_difference = next(i for i, (a, b) in enumerate(zip(ids.tolist(), bare.tolist())) if a != b)
        assert len(ids) > len(bare) and video_at < first_difference  # the words come after the frames
        contexts.append(question.context)
        return plan(self, video, question, on_stage)

    monkeypatch.setattr(Pipeline, "plan", spying)
    record = summarize_json(dytok_here, str(videos["two"]), "-m", str(tiny_llava_dir), "--window", "12",
                            "--subtitles", str(subtitle_file))
    said = [[line["text"] for line in window["subtitles"]] for window in record["windows"]]
    assert said == [["hello from the start", "across the cut"], ["across the cut", "the end is near"]]
    assert record["windows"][0]["subtitles"][0] == {"start": 1.0, "end": 3.0, "text": "hello from the start"}
    assert record["subtitles"] == {"source": str(subtitle_file), "lines": 3, "note": None}
    assert [context.splitlines()[-len(lines):] for context, lines in zip(contexts, said)] == said


def test_a_video_with_nothing_said_is_summarised_from_its_frames_with_a_note(tiny_llava_dir, videos, dytok_here,
                                                                             tmp_path, scripted_model):
    (tmp_path / "empty.srt").write_text("")
    result = dytok_here("summarize", str(videos["two"]), "-m", str(tiny_llava_dir), "--window", "12", "--format", "json",
                        "--subtitles", str(tmp_path / "empty.srt"), *FAST)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert all(window["subtitles"] == [] for window in record["windows"])
    assert record["subtitles"]["lines"] == 0 and "frames alone" in record["subtitles"]["note"]
    assert "frames alone" in result.stderr


def test_frames_and_visual_tokens_are_released_window_by_window(tiny_llava_dir, tmp_path, dytok_here, monkeypatch,
                                                               scripted_model):
    """A 20-minute video in 10 windows: when a window is encoded, no earlier window's frames or visual
    tokens are alive (freed by reference counting, without a garbage collection)."""
    long_video = write_shots(tmp_path / "long.mp4", [300.0, 700.0], 1200.0, fps=1, size=(32, 32))
    alive: list[weakref.ref] = []
    encode = Pipeline.encode

    def watching(self, video, frames, on_stage=None):
        assert [ref for ref in alive if ref() is not None] == [], "an earlier window is still in memory"
        visual = encode(self, video, frames, on_stage)
        alive.extend([weakref.ref(frames), weakref.ref(frames.images), weakref.ref(visual.encoded),
                      weakref.ref(visual.encoded.features)])
        return visual

    monkeypatch.setattr(Pipeline, "encode", watching)
    result = dytok_here("summarize", str(long_video), "-m", str(tiny_llava_dir), "--window", "120", "--fps", "0.025",
                        "--max-new-tokens", "1", "--decode-timeout", "0", "--format", "json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert len(record["windows"]) == 10 and len(alive) == 4 * 10
    assert all(len(window["frames"]) == 3 for window in record["windows"])
    assert_chapters_on_window_boundaries(record)


def test_bad_videos_fail_alone_with_one_line_each(tiny_llava_dir, videos, dytok_here, tmp_path):
    """And a video shorter than one window is one window and one chapter, not an error."""
    bad = [str(tmp_path / "missing.mp4"), str(videos["text"]), str(videos["empty"]), str(videos["audio"])]
    result = dytok_here("summarize", *bad, str(videos["short"]), "-m", str(tiny_llava_dir), "--jsonl", *FAST)
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["video"] for record in records] == [*bad, str(videos["short"])]
    reasons = ["no such file", "not a video file", "no decodable video frames", "has no video stream"]
    for record, reason in zip(records, reasons):
        assert reason in record["error"] and "\n" not in record["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("dytok: error:")]
    assert len(errors) == 4 and all(reason in line for line, reason in zip(errors, reasons))
    assert "Traceback" not in result.stderr
    single = dytok_here("summarize", str(videos["text"]), "-m", str(tiny_llava_dir), *FAST)
    assert single.returncode == 2 and single.stdout == ""
    assert single.stderr.strip().splitlines() == [f"dytok: error: {videos['text']}: is not a video file (no known container format)"]
    short = records[-1]
    assert short["error"] is None and short["chapters_from"] == "one window" and short["summary"]
    assert [(w["start"], w["end"]) for w in short["windows"]] == [(0.0, 4.0)]
    assert [(c["start"], c["end"]) for c in short["chapters"]] == [(0.0, 4.0)]



def test_a_video_of_one_window_runs_only_the_passes_whose_answer_is_not_known(tiny_llava_dir, videos, dytok_here,
                                                                              monkeypatch):
    """One window is one chapter: the window's description (one pass), then its title alone (one pass of at
    most TITLE_TOKENS); no pass rewrites the description and none writes a summary, which is that
    description. Every text runs to its cap here (as random weights of a real shape run theirs), so a title
    given the whole --max-new-tokens would show."""
    asked, completed, lengths = [], [], []
    ask, complete, generate = Pipeline.ask, Pipeline.complete, Pipeline._generate

    def asking(self, *args, **kwargs):
        asked.append(args[1])
        return ask(self, *args, **kwargs)

    def completing(self, prompt, force_length=False, max_new_tokens=None):
        completed.append(prompt)
        return complete(self, prompt, force_length, max_new_tokens)

    def full_length(self, inputs, force_length=False, *rest, **kwargs):
        token_ids = generate(self, inputs, True, *rest, **kwargs)
        lengths.append(len(token_ids))
        return token_ids

    monkeypatch.setattr(Pipeline, "ask", asking)
    monkeypatch.setattr(Pipeline, "complete", completing)
    monkeypatch.setattr(Pipeline, "_generate", full_length)
    video = str(videos["short"])
    result = dytok_here("summarize", video, "-m", str(tiny_llava_dir), "--format", "json", "--fps", "0.25",
                        "--max-new-tokens", "40", "--decode-timeout", "0")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    (window,), (chapter,) = record["windows"], record["chapters"]
    assert len(asked) == 1 and len(completed) == 1 and lengths == [40, summarizing.TITLE_TOKENS]
    assert completed[0].startswith("This part of a video makes one chapter") and "title only" in completed[0]
    assert window["description"] in completed[0]
    assert record["chapters_from"] == "one window" and chapter["windows"] == [0, 0] and chapter["title"]
    assert chapter["description"] == window["description"] != "" and chapter["description_from"] == "window"
    assert record["summary"] == chapter["description"] and record["summary_from"] == "chapter"
    assert progress_lines(result.stderr, video) == [f"summarize: {video}: finding shots",
                                                    f"summarize: {video}: window 1/1 (0:00-0:04) described in S s",
                                                    f"summarize: {video}: writing chapter 1/1"]


@pytest.mark.skipif(shutil.which("dytok") is None, reason="the dytok script is not installed")
def test_a_terminal_gets_the_live_display_and_not_the_lines_for_a_log(tiny_llava_dir, videos):
    status, shown = run_on_a_terminal(["dytok", "summarize", str(videos["two"]), "-m", str(tiny_llava_dir), "--window", "12",
                                       "--format", "json", *FAST], "stderr")
    assert status == 0, shown
    assert "2/2" in shown  # windows done of the total, live
    assert "summarize: " not in shown and "described in" not in shown


def test_in_the_bounded_worker(tiny_llava_dir, videos, dytok_here):
    """The default --decode-timeout: frame times, shot detection and each window's frames are read in a worker
    process that can be killed; what it finds, and why it fails, are the same."""
    result = dytok_here("summarize", str(videos["two"]), "-m", str(tiny_llava_dir), "--fps", "0.25", "--max-new-tokens", "1",
                        "--format", "json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["segmentation"]["cuts"] == [12.0]
    assert [(w["start"], w["end"], w["opens"]) for w in record["windows"]] == [(0.0, 12.0, "start"), (12.0, 24.0, "cut")]
    assert [w["frames"] for w in record["windows"]] == [[0, 16, 32], [48, 64, 80]]


def test_output_is_written_whole_and_never_replaced_without_force(tiny_llava_dir, videos, dytok_here, tmp_path,
                                                                  scripted_model):
    target = tmp_path / "chapters.vtt"
    target.write_text("keep me")
    args = [str(videos["short"]), "-m", str(tiny_llava_dir), *FAST]
    refused = dytok_here("summarize", *args, "--format", "vtt", "-o", str(target))
    assert refused.returncode == 2 and "exists; use --force" in refused.stderr and target.read_text() == "keep me"
    done = dytok_here("summarize", *args, "--format", "vtt", "-o", str(target), "--force")
    assert done.returncode == 0 and done.stdout == ""
    assert target.read_text() == "WEBVTT\n\n1\n00:00:00.000 --> 00:00:04.000\nThe = Part; # of \\ it\n"
    assert [path.name for path in tmp_path.iterdir()] == ["chapters.vtt"]  # no temporary file left

    folder, other = tmp_path / "out", tmp_path / "other.mp4"
    other.write_bytes(videos["short"].read_bytes())
    several = dytok_here("summarize", str(videos["short"]), str(other), "-m", str(tiny_llava_dir),
                         "--format", "youtube", "-o", str(folder), *FAST)
    assert several.returncode == 0, several.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["other.youtube.txt", "short.youtube.txt"]
    assert (folder / "short.youtube.txt").read_text() == "0:00 The = Part; # of \\ it\n"
    assert f"{videos['short']}: YouTube shows chapters only when there are at least 3; this video has 1" in several.stderr

    usage = dytok_here("summarize", str(videos["short"]), str(videos["two"]), "--format", "srt")
    assert usage.returncode == 2 and "give --output DIR" in usage.stderr

    new = tmp_path / "new"  # a directory that does not exist yet, named as one by its trailing slash
    into = dytok_here("summarize", *args, "--format", "vtt", "-o", f"{new}/")
    assert into.returncode == 0, into.stderr
    assert [path.name for path in new.iterdir()] == ["short.vtt"]


@pytest.mark.parametrize("fmt", ["vtt", "json"])
def test_the_chapters_and_the_resume_store_get_the_mode_open_would(tiny_llava_dir, videos, dytok_here, tmp_path,
                                                                   scripted_model, umask, fmt):
    target, cache = tmp_path / f"chapters.{fmt}", tmp_path / "cache"
    done = dytok_here("summarize", str(videos["two"]), "-m", str(tiny_llava_dir), "--format", fmt, "-o", str(target),
                      "--cache-dir", str(cache), *FAST)
    assert done.returncode == 0, done.stderr
    stored = sorted(path.name.split("-")[0] for path in cache.rglob("*.json"))
    assert stored == ["cuts", "window", "window"]  # the resume store: the shot cuts, each window described
    assert modes(target) == plain_modes(target, umask) and modes(cache) == plain_modes(cache, umask)


def test_ctrl_c_leaves_nothing_half_written_and_the_rerun_resumes(tiny_llava_dir, videos, dytok_here, tmp_path,
                                                                  monkeypatch, scripted_model):
    cache, target = tmp_path / "cache", tmp_path / "summary.json"
    args = ["summarize", str(videos["two"]), "-m", str(tiny_llava_dir), "-o", str(target), "--format", "json",
            "--cache-dir", str(cache), "--window", "8", *FAST]
    describe = summarizing.describe
    calls: list[float] = []

    def interrupted_on_the_third(pipeline, video, line, index, window, *rest):
        calls.append(window.start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return describe(pipeline, video, line, index, window, *rest)

    monkeypatch.setattr(summarizing, "describe", interrupted_on_the_third)
    stopped = dytok_here(*args)
    assert stopped.returncode == 130 and "resumes from --cache-dir" in stopped.stderr
    assert list(tmp_path.iterdir()) == [cache]  # no output, not even part of one

    calls.clear()
    monkeypatch.setattr(summarizing, "describe", lambda *arguments: calls.append(arguments[4].start) or describe(*arguments))
    resumed = dytok_here(*args)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads(target.read_text())
    assert calls == [16.0]  # the window not finished, and only that
    assert [window["resumed"] for window in record["windows"]] == [True, True, False]
    assert_chapters_on_window_boundaries(record)


class ScriptedPipeline:
    """What the text stages use of a pipeline: a model without a tokenizer (4 characters a token) and a
    `complete` that answers from `reply(prompt)`, keeping every prompt it was given and its cap."""

    def __init__(self, reply):
        self.model = type("Model", (), {"tokenizer": None})()
        self.prompts: list[str] = []
        self.caps: list[int | None] = []
        self.reply = reply

    def complete(self, prompt, max_new_tokens=None):
        self.prompts.append(prompt)
        self.caps.append(max_new_tokens)
        return self.reply(prompt), 0.0


def described(count: int, seconds: float = 20.0, text: str = "a person talks " * 10) -> list:
    from dytok_cli.math.windows import fixed_windows

    return [summarizing.DescribedWindow(index=i, window=w, frames=(i,), timestamps=(w.start,), description=text,
                                        visual_tokens={"full": 1, "kept": 1}, timings={}, signature=[1.0, float(i)])
            for i, w in enumerate(fixed_windows(count * seconds, seconds))]


def test_too_many_windows_for_one_prompt_are_chaptered_group_by_group(monkeypatch):
    monkeypatch.setattr(summarizing, "PROMPT_BUDGET", 100)  # about 2 part lines a prompt
    pipeline = ScriptedPipeline(lambda prompt: "3, 4, 6")
    starts, chosen_by = summarizing.chapter(pipeline, described(6), 120.0, summarizing._Quiet())
    assert len(pipeline.prompts) == 3 and chosen_by == "model"
    assert ["Part 1 always does" in p for p in pipeline.prompts] == [True, False, False]
    assert ["Part 3 (" in p for p in pipeline.prompts] == [False, True, False]
    # Each group may only open chapters at its own parts: "3, 4" count in the group of parts 3-4, "6" in 5-6.
    assert starts == [0, 2, 3, 5]


def test_a_video_too_short_for_two_chapters_is_not_asked_where_chapters_begin():
    """Three 6-second windows: no boundary leaves 10 s on both sides, so there is one chapter whatever a model
    would answer, and it is not asked."""
    pipeline = ScriptedPipeline(lambda prompt: "2, 3")
    assert summarizing.chapter(pipeline, described(3, seconds=6.0), 18.0, summarizing._Quiet()) == ([0], "too short")
    assert pipeline.prompts == []
    assert summarizing.chapter(pipeline, described(3, seconds=10.0), 30.0, summarizing._Quiet()) == ([0, 1, 2], "model")


def test_a_long_summary_is_a_summary_of_summaries(monkeypatch):
    monkeypatch.setattr(summarizing, "PROMPT_BUDGET", 120)

    def reply(prompt: str) -> str:
        if prompt.startswith("These consecutive parts"):  # a chapter: a title and a long paragraph
            return "A title\n" + "it goes on " * 20
        return "in short"

    pipeline = ScriptedPipeline(reply)
    windows = described(8)
    spans = summarizing.chapter_spans([item.window for item in windows], [0, 2, 4, 6])
    written = summarizing.write_up(pipeline, windows, spans, summarizing._Quiet())
    assert written.summary == "in short" and [c.title for c in written.chapters] == ["A title"] * 4
    assert written.descriptions_from == ["model"] * 4 and written.summary_from == "model"
    groups = [p for p in pipeline.prompts if p.startswith("These are consecutive parts of a video")]
    final = pipeline.prompts[-1]
    assert groups and final.startswith("These are the chapters of a video")
    assert "Parts 1-" in final and "it goes on" not in final


def test_a_chapter_of_one_window_keeps_its_description_and_is_asked_for_a_title_alone():
    """Three chapters, the middle one a single window: its description is the window's as it is, and its one
    pass asks for the title alone, capped at TITLE_TOKENS (what else the model writes is not used); the
    others are written by the model; the summary from the three."""

    def reply(prompt: str) -> str:
        if prompt.startswith("This part of a video"):
            return "Title: Alone\nand a paragraph nobody asked for"
        return "Two parts\nThey talk." if prompt.startswith("These consecutive parts") else "in short"

    pipeline = ScriptedPipeline(reply)
    windows = [dataclasses.replace(item, description=f" window {item.index} shows a dog\n") for item in described(5)]
    spans = summarizing.chapter_spans([item.window for item in windows], [0, 2, 3])
    written = summarizing.write_up(pipeline, windows, spans, summarizing._Quiet())
    assert [c.title for c in written.chapters] == ["Two parts", "Alone", "Two parts"]
    assert [c.description for c in written.chapters] == ["They talk.", "window 2 shows a dog", "They talk."]
    assert written.descriptions_from == ["model", "window", "model"]
    assert pipeline.caps == [None, summarizing.TITLE_TOKENS, None, None]
    assert pipeline.prompts[1] == summarizing.WINDOW_TITLE_PROMPT.format(
        parts="Part 3 (0:00:40-0:01:00): window 2 shows a dog")
    assert written.summary == "in short" and written.summary_from == "model"


def test_a_video_of_one_chapter_is_summarised_by_its_description_without_a_pass():
    """Two windows in one chapter: one pass, for its title and paragraph; the summary is the paragraph. When
    the model writes a title alone (random weights write no line break), the description is its windows'
    descriptions in order, so it is not empty."""
    windows = [dataclasses.replace(item, description=text) for item, text in zip(described(2), ["a dog\n runs", "it sits"])]
    for reply, description, source in [("A title\nThe paragraph.", "The paragraph.", "model"),
                                       ("Just a title", "a dog runs it sits", "windows")]:
        pipeline = ScriptedPipeline(lambda prompt: reply)
        written = summarizing.write_up(pipeline, windows, [range(0, 2)], summarizing._Quiet())
        assert len(pipeline.prompts) == 1 and pipeline.prompts[0].startswith("These consecutive parts")
        (chapter,) = written.chapters
        assert chapter.description == description and written.descriptions_from == [source]
        assert written.summary == description and written.summary_from == "chapter"


@pytest.mark.parametrize("model_type", FAMILIES)
def test_text_alone_is_answered_as_the_model_answers_it(model_type, build_family, load_family):
    """`Pipeline.complete` (chapter titles, the summary) == the model's own `generate` on its processor's chat
    template for the same text, token for token (greedy, float32)."""
    import torch

    from dytok_cli.config import Settings

    model = load_family(model_type)
    prompt = "describe this video : one man walks , then a dog runs"
    pipeline = Pipeline(Settings(model=str(build_family(model_type)), max_new_tokens=6), model=model)
    text, _ = pipeline.complete(prompt)
    inputs = model.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": prompt}]}], add_generation_prompt=True, tokenize=True,
        return_dict=True, return_tensors="pt")
    with torch.inference_mode():
        output = model.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    expected = model.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert text == expected and text
    # A cap (a chapter title's) shortens the reply to its first tokens; one above --max-new-tokens does not lengthen it.
    shorter = model.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:][:2], skip_special_tokens=True).strip()
    assert pipeline.complete(prompt, max_new_tokens=2)[0] == shorter != text
    assert pipeline.complete(prompt, max_new_tokens=100)[0] == text


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "0"], "--window must be a positive number of seconds"),
    (["--max-window", "15"], "--max-window (15 s) must be at least twice --min-window (10 s)"),
    (["--window", "30", "--min-window", "5"], "--window makes fixed ones"),
    (["--jsonl", "--format", "md"], "--jsonl prints JSON records"),
    (["--force"], "--force: only used with --output"),
    (["--format", "nope"], "'nope' is not one of 'md', 'json', 'vtt', 'srt', 'youtube', 'ffmetadata'"),
    (["--workers", "2", "--ray-address", "auto"], "--workers, --ray-address: only used with --engine ray"),
    (["--engine", "ray", "--workers", "0"], "--workers must be at least 1, not 0"),
    (["--engine", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must be 0 or more, not -1"),
    (["--random-weights", "--cache-dir", "cache"], "--random-weights draws new weights every run: drop one of them"),
])
def test_usage_errors_say_which_flag(videos, dytok_here, args, message):
    result = dytok_here("summarize", str(videos["short"]), *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_one_subtitle_file_for_several_videos_is_refused(videos, dytok_here, tmp_path):
    (tmp_path / "talk.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    result = dytok_here("summarize", str(videos["short"]), str(videos["two"]), "--subtitles", str(tmp_path / "talk.srt"))
    assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "is one video's subtitles; for several videos give a directory or auto" in result.stderr


def test_without_ray_the_ray_engine_says_what_to_install(videos, dytok_here, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = dytok_here("summarize", str(videos["short"]), "--engine", "ray")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "dytok: error: --engine ray needs Ray: python -m pip install 'dytok-cli[ray]'\n"


def test_a_misplaced_argument_is_refused_before_anything_runs(dytok_here):
    result = dytok_here("summarize", "what happens?")
    assert result.returncode == 2 and "'what happens?' is not a video file, a directory or -" in result.stderr
