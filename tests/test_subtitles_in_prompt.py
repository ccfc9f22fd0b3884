"""What is said reaches every family's prompt as Video-MME's subtitle setting places it: exactly the lines the
rule selects, after the video and before the question, as the model's own chat template and processor write
them; budgets stay on the visual tokens, and nothing to say leaves the answer as it was."""

from __future__ import annotations

import json

import pytest
import torch

from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.pipeline import Pipeline
from dytok_cli.record import plan_record

QUESTION = "what happens in the video?"
HEADER = "This video's subtitles are listed below: \n"  # lmms-eval's words, written out here as the oracle


def settings(model_dir, **overrides) -> Settings:
    options = dict(model=str(model_dir), frames=6, device=Device.cpu, dtype=DType.float32, max_new_tokens=8,
                   decode_timeout=None, method=Method.none)
    return Settings(**{**options, **overrides})


def srt_time(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    assert abs(milliseconds - seconds * 1000) < 1e-6, "frame times must be whole milliseconds for this file"
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02}:{minutes:02}:{rest // 1000:02},{rest % 1000:03}"


def subtitles_around(times: tuple[float, ...]) -> tuple[str, list[tuple[float, float, str]]]:
    """An SRT file whose cues sit just inside and just outside the sampled frames' times, and the lines the
    rule keeps, in order, worked out by hand: a cue covers [start, end)."""
    t = times
    cues = [
        (t[0], t[0] + 0.05, "<i>the dog is red</i>", True),  # starts at a frame
        (t[1] + 0.01, t[2], "a man walks", False),  # ends exactly at a frame: past it; no frame between
        (t[2], t[2] + 0.01, "one car", True),
        (t[2] - 0.05, t[3] + 0.01, "the cat sits", True),  # overlaps the one before, starts earlier
        (t[-1] + 0.01, t[-1] + 0.5, "after the last frame", False),
        (t[-1] + 60, t[-1] + 61, "past the end of the video", False),
    ]
    text = "".join(f"{i}\r\n{srt_time(a)} --> {srt_time(b)}\r\n{words}\r\n\r\n" for i, (a, b, words, _) in enumerate(cues, 1))
    kept = sorted((a, b, words.replace("<i>", "").replace("</i>", "")) for a, b, words, keep in cues if keep)
    return "\ufeff" + text, kept


def own_inputs(adapter, frames, first_turn_text: str):
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": first_turn_text}]}]
    prompt = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True)
    metadata = {"total_num_frames": frames.total_frames, "fps": frames.video_fps, "frames_indices": list(frames.indices),
                "duration": frames.duration_s}
    return adapter.processor(text=prompt, videos=[frames.images], video_metadata=[metadata], do_sample_frames=False,
                             return_tensors="pt")


def test_the_prompt_holds_exactly_the_lines_the_rule_selects(family, clip, tmp_path):
    plain = Pipeline(settings(family.dir), model=family.adapter)
    frames = plain.read(clip)
    text, kept = subtitles_around(frames.timestamps)
    (tmp_path / "subs.srt").write_text(text, encoding="utf-8", newline="")
    pipeline = Pipeline(settings(family.dir, subtitles=str(tmp_path / "subs.srt")), model=family.adapter)
    plan = pipeline.plan(clip, QUESTION)

    context = HEADER + "\n".join(words for _, _, words in kept)
    inputs = own_inputs(family.adapter, frames, f"{context}\n{QUESTION}")
    ours = family.adapter.build_inputs(plan.question, plan.encoded.all_tokens(), video=plan.encoded)["input_ids"]
    assert torch.equal(ours, inputs["input_ids"])  # what the model answers from, whatever the method: see the contract tests

    record = json.loads(json.dumps(plan_record(plan, pipeline.settings, None)))
    said = record["subtitles"]
    assert [(line["start"], line["end"], line["text"]) for line in said["lines"]] == [
        (round(a, 3), round(b, 3), words) for a, b, words in kept]
    assert said["source"] == str(tmp_path / "subs.srt") and said["note"] is None
    without = own_inputs(family.adapter, frames, QUESTION)["input_ids"]
    assert said["tokens"] == inputs["input_ids"].shape[1] - without.shape[1] > 0
    # The visual tokens are counted apart, all there at ratio 1; the lines add none.
    assert record["visual_tokens"]["kept"] == record["visual_tokens"]["full"]
    assert int((ours == family.adapter.video_token_id()).sum()) == plan.visual_tokens.shape[0]


def test_an_empty_subtitle_file_prompts_as_none(family, clip, tmp_path):
    """Every family's prompt is the one without subtitles; the answers that follow, with question-aware
    budgets, are the next test's."""
    (tmp_path / "empty.srt").write_bytes(b"")
    without = Pipeline(settings(family.dir), model=family.adapter).plan(clip, QUESTION)
    empty = Pipeline(settings(family.dir, subtitles=str(tmp_path / "empty.srt")), model=family.adapter).plan(clip, QUESTION)
    assert empty.question == without.question
    prompt = family.adapter.build_inputs(empty.question, empty.encoded.all_tokens(), video=empty.encoded)["input_ids"]
    assert torch.equal(prompt, family.adapter.build_inputs(QUESTION, without.encoded.all_tokens(), video=without.encoded)["input_ids"])
    assert empty.subtitles == () and empty.subtitle_tokens == 0
    assert empty.transcript.note == f"{tmp_path / 'empty.srt'} has no subtitle lines within the video; answering from the frames alone"


@pytest.mark.parametrize("method", [Method.dytok, Method.dytok_fastv])
def test_an_empty_subtitle_file_gives_the_same_answer_as_none(tiny_llava_dir, tiny_llava, clip, tmp_path, method):
    (tmp_path / "empty.srt").write_bytes(b"")
    without = Pipeline(settings(tiny_llava_dir, method=method, ratio=0.5), model=tiny_llava).ask(clip, QUESTION)
    empty = Pipeline(settings(tiny_llava_dir, method=method, ratio=0.5, subtitles=str(tmp_path / "empty.srt")),
                     model=tiny_llava).ask(clip, QUESTION)
    assert empty.token_ids == without.token_ids
    assert torch.equal(empty.plan.budgets, without.plan.budgets)


def test_compressed_budgets_count_visual_tokens_only(tiny_llava_dir, tiny_llava, clip, tmp_path):
    """The lines are never pruned: the kept visual tokens are the ratio's share whatever the text beside them."""
    frames = Pipeline(settings(tiny_llava_dir), model=tiny_llava).read(clip)
    text, _ = subtitles_around(frames.timestamps)
    (tmp_path / "subs.srt").write_text(text, encoding="utf-8")
    for method in (Method.dytok, Method.dytok_fastv):  # the prior read beside the lines, and pruning among them
        plain = Pipeline(settings(tiny_llava_dir, method=method, ratio=0.25), model=tiny_llava).plan(clip, QUESTION)
        said = Pipeline(settings(tiny_llava_dir, method=method, ratio=0.25, subtitles=str(tmp_path / "subs.srt")),
                        model=tiny_llava).plan(clip, QUESTION)
        assert said.kept_tokens == plain.kept_tokens and said.subtitle_tokens > 0, method


def test_a_question_with_its_own_context_keeps_it(tiny_llava_dir, tiny_llava, clip, tmp_path):
    from dytok_cli.types import Question

    frames = Pipeline(settings(tiny_llava_dir), model=tiny_llava).read(clip)
    (tmp_path / "subs.srt").write_text(subtitles_around(frames.timestamps)[0], encoding="utf-8")
    pipeline = Pipeline(settings(tiny_llava_dir, subtitles=str(tmp_path / "subs.srt")), model=tiny_llava)
    plan = pipeline.plan(clip, Question(QUESTION, context="the dog is red"))
    assert plan.question.context == "the dog is red" and plan.subtitles == () and plan.subtitle_tokens == 0
