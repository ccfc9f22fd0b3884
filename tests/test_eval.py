"""`dytok eval`: items, letters, the run over (method, ratio) pairs, resume, isolation and the outputs."""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

import pytest
from clips import write_clip, write_text_file
from conftest import modes, plain_modes

from dytok_cli import cli
from dytok_cli.apps import eval as evaluation
from dytok_cli.prefill import prior_pass
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.errors import InputError
from dytok_cli.apps.eval import Item

OPTIONS = ["a dog runs", "a cat sits", "the sky is blue", "a man opens the door"]
PREDICTION_KEYS = {"id", "method", "ratio", "prediction", "answer", "correct", "error", "visual_tokens", "timings", "response",
                   "reasoning"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-videos")
    write_clip(root / "a.mp4", n_frames=12)
    write_clip(root / "b.mp4", n_frames=16)
    write_clip(root / "fFjv93ACGo8.MP4", n_frames=10)  # VideoMME's naming, with its upper-case suffix
    write_text_file(root / "broken.mp4")
    return root


def ours(identifier: str, video: str, answer: str = "B", category: str | None = "counting") -> dict:
    return {"id": identifier, "video": video, "question": "what happens in the video?", "options": OPTIONS,
            "answer": answer, "category": category, "duration": "short"}


VIDEOMME = {
    "video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
    "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
    "task_type": "Counting Problem", "question": "How many kinds of fruit are there?",
    "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
    "answer": "C",
}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def settings(model_dir: Path, **overrides) -> Settings:
    values = dict(model=str(model_dir), frames=4, device=Device.cpu, dtype=DType.float32, max_new_tokens=3,
                  decode_timeout=None)
    return Settings(**{**values, **overrides})


def lettered_replies(monkeypatch, model) -> None:
    """Replies that name a letter picked by the tokens the model really generated: the tiny model's
    vocabulary has no letters, and every method and ratio still answers in its own way."""
    formats = ["{}", "({})", "The answer is {}.", "{}. some text"]
    monkeypatch.setattr(
        model, "decode", lambda ids: formats[int(ids.sum()) % 4].format("ABCD"[int((ids * 7).sum()) % 4])
    )


def counting(monkeypatch, model, name: str) -> list:
    calls = []
    original = getattr(model, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, name, wrapper)
    return calls


def read_predictions(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / evaluation.PREDICTIONS).read_text().splitlines()]


def compared(run_settings: Settings, cases) -> list[Settings]:
    """`run_settings`' flags for each method of `cases`, as the command line gives them to `eval`."""
    fields = {name: value for name, value in dataclasses.asdict(run_settings).items() if name not in ("method", "ratio")}
    return Settings.for_methods(list(dict.fromkeys(case.method for case in cases)), **fields)


def evaluate(items, cases, run_settings, directory, model, prior=None, data: Path | None = None) -> tuple[int, evaluation.RunDirectory]:
    data = data or write_jsonl(directory.parent / f"{directory.name}.jsonl", [])
    run_dir = evaluation.RunDirectory(directory, evaluation.manifest(data, [run_settings], None), force=False)
    work = evaluation.pending(items, cases, run_dir.records)
    failed = evaluation.run(work, cases, compared(run_settings, cases), run_dir, model=model, prior=prior) if work else 0
    return failed, run_dir


def item(identifier: str, video: Path, answer: str = "B", category: str | None = "counting") -> Item:
    return Item(identifier, str(video), "what happens in the video?", tuple(OPTIONS), answer, category, "short")


# --- letters and prompt -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("B", "B"), ("B.", "B"), ("(B)", "B"), ("B. a cat sits", "B"), ("C) the sky", "C"), ("**D**", "D"),
        ("[A]", "A"), ("The answer is B", "B"), ("The answer is B.", "B"), ("Answer: (C)", "C"),
        ("The best option is D", "D"), ("I think (B) fits best", "B"), ("a cat sits", "B"), ("A cat sits.", "B"),
        ("It shows that a man opens the door.", "D"), ("\n  b  \n", None), ("", None), ("I don't know", None),
        ("E", None), ("The answer is E", None), ("A man walks in", None), ("a dog runs and a cat sits", None),
        ("(A) or (B)", "A"), ("options are hard", None), ("Because it rains", None),
    ],
)
def test_letter_extraction(reply, letter):
    assert evaluation.extract_letter(reply, OPTIONS) == letter


def test_prompt_is_lmms_evals_videomme_prompt():
    videomme = Item("1", "v.mp4", "How many?", ("Apples.", "Candles.", "Berries.", "Same."), "C")
    # lmms-eval's tasks/videomme/utils.py: option_prompt + "\n" + question + "\n" + options + "\n" + post_prompt,
    # post_prompt "\nAnswer with the option's letter from the given choices directly."
    assert evaluation.prompt(videomme) == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "How many?\nA. Apples.\nB. Candles.\nC. Berries.\nD. Same.\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert "(A or B)" in evaluation.prompt(Item("2", "v.mp4", "Yes?", ("yes", "no"), "A"))


def test_grid_runs_none_once_and_every_other_method_at_each_ratio():
    cases = evaluation.grid([Method.none, Method.dytok, Method.none, Method.visionzip], [0.5, 0.25, 0.5])
    assert [(case.method, case.ratio) for case in cases] == [
        (Method.none, 1.0), (Method.dytok, 0.5), (Method.dytok, 0.25), (Method.visionzip, 0.5), (Method.visionzip, 0.25),
    ]


# --- items --------------------------------------------------------------------------------------------------


def test_our_items_and_videomme_columns_load(tmp_path, videos):
    data = write_jsonl(tmp_path / "items.jsonl", [ours("q1", "a.mp4"), ours("q2", str(videos / "b.mp4"), category=None), VIDEOMME])
    loaded = evaluation.load_items(data, video_dir=videos)
    # Relative paths resolve against --video-dir when given, else the data file's folder.
    assert loaded[0] == Item("q1", str(videos / "a.mp4"), "what happens in the video?", tuple(OPTIONS), "B", "counting", "short")
    assert loaded[1].video == str(videos / "b.mp4") and loaded[1].category is None
    assert loaded[2] == Item(
        "001-1", str(videos / "fFjv93ACGo8.MP4"), "How many kinds of fruit are there?",
        ("Apples.", "Candles.", "Berries.", "The three kinds are of the same number."), "C", "Counting Problem", "short",
    )
    data = write_jsonl(tmp_path / "ours.jsonl", [ours("q1", "a.mp4")])
    assert evaluation.load_items(data)[0].video == str(tmp_path / "a.mp4")


def test_json_array_items_are_reported_by_the_line_they_start_on(tmp_path):
    good = ours("q1", "a.mp4")
    text = "[\n" + json.dumps(good, indent=2) + ",\n" + json.dumps({**good, "id": "q2", "answer": "F"}, indent=2) + "\n]\n"
    data = tmp_path / "items.json"
    data.write_text(text)
    second = 2 + json.dumps(good, indent=2).count("\n") + 1
    with pytest.raises(evaluation.ItemsError) as error:
        evaluation.load_items(data)
    assert error.value.problems == [f"{data}:{second}: 'answer' 'F' is not one of the letters A-D"]
    data.write_text(text.replace('"F"', '"d"'))
    assert [loaded.answer for loaded in evaluation.load_items(data)] == ["B", "D"]


def test_bad_items_are_reported_each_on_its_line_before_any_model_loads(dytok_here, tmp_path):
    good = ours("q1", "a.mp4")
    lines = [
        json.dumps(good),
        json.dumps({key: value for key, value in good.items() if key != "answer"} | {"id": "q2"}),
        "",
        json.dumps({**good, "id": "q3", "answer": "E"}),
        '{"id": "q4", "video": ',
        json.dumps(good),
        json.dumps({**good, "id": "q6", "options": ["A. one", "C. two"], "question": ""}),
        json.dumps({"question_id": "q7", "videoID": "x", "question": "?", "options": OPTIONS, "answer": "A"}),
    ]
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    result = dytok_here("eval", str(data), "--output", str(output), "--model", str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"dytok: error: {data}:2: missing 'answer'",
        f"dytok: error: {data}:4: 'answer' 'E' is not one of the letters A-D",
        f"dytok: error: {data}:5: not valid JSON (Expecting value, column 23)",
        f"dytok: error: {data}:6: id 'q1' repeats the id of the item on line 1",
        f"dytok: error: {data}:7: 'question' must be a non-empty string; option 'C. two' should read 'B. text', "
        "lettered in order like the first",
        f"dytok: error: {data}:8: 'videoID' needs --video-dir, the folder holding the videos",
    ]
    assert not output.exists()


# --- the run ------------------------------------------------------------------------------------------------


def test_summary_agrees_with_the_predictions(tiny_llava, tiny_llava_dir, videos, tmp_path, monkeypatch):
    lettered_replies(monkeypatch, tiny_llava)
    encodes = counting(monkeypatch, tiny_llava, "encode")
    items = [item("q1", videos / "a.mp4", "A"), item("q2", videos / "b.mp4", "B", "colour"),
             item("q3", videos / "a.mp4", "C"), item("q4", videos / "b.mp4", "D", None)]
    cases = evaluation.grid([Method.none, Method.dytok, Method.dytok_fastv], [0.5, 0.25])
    failed, run_dir = evaluate(items, cases, settings(tiny_llava_dir, method=Method.dytok), tmp_path / "run", tiny_llava)
    assert failed == 0
    assert len(encodes) == len(items)  # one vision pass per item serves all five pairs

    records = read_predictions(tmp_path / "run")
    assert len(records) == len(items) * len(cases) and all(set(record) == PREDICTION_KEYS for record in records)
    assert sum(record["correct"] for record in records) > 0 and not all(record["correct"] for record in records)
    for record in records:
        # Each pair counts its item's vision pass in full, whichever method ran first.
        first = next(r for r in records if r["id"] == record["id"])
        assert record["timings"]["vision_s"] == first["timings"]["vision_s"] > 0

    summary = evaluation.summarise(items, cases, run_dir.records, run_dir.manifest)
    by_case = {(result["method"], result["ratio"]): result for result in summary["results"]}
    assert list(by_case) == [("none", 1.0), ("dytok", 0.5), ("dytok", 0.25), ("dytok-fastv", 0.5), ("dytok-fastv", 0.25)]
    category = {entry.id: entry.category for entry in items}
    none_total = statistics.fmean(r["timings"]["total_s"] for r in records if r["method"] == "none")
    none_prefill = statistics.fmean(r["timings"]["prefill_s"] for r in records if r["method"] == "none")
    for (method, ratio), result in by_case.items():
        mine = [r for r in records if (r["method"], r["ratio"]) == (method, ratio)]
        right = [r["prediction"] == r["answer"] for r in mine]
        assert (result["items"], result["answered"], result["errors"]) == (4, 4, 0)
        assert result["accuracy"] == pytest.approx(sum(right) / 4)
        counting_marks = [ok for r, ok in zip(mine, right) if category[r["id"]] == "counting"]
        assert result["by_category"]["counting"] == {"answered": 2, "accuracy": pytest.approx(sum(counting_marks) / 2)}
        assert set(result["by_category"]) == {"counting", "colour"} and result["by_duration"]["short"]["answered"] == 4
        assert result["visual_tokens"] == 4 * 16 * ratio  # 4 frames of 16 tokens
        total = statistics.fmean(r["timings"]["total_s"] for r in mine)
        assert result["total_s"] == pytest.approx(total)
        assert result["speedup_total"] == pytest.approx(none_total / total)
        assert result["speedup_prefill"] == pytest.approx(none_prefill / statistics.fmean(r["timings"]["prefill_s"] for r in mine))


def test_dytok_pairs_take_the_prior_models_encoding(tiny_llava, tiny_llava_dir, tiny_llava_assistant_dir, videos, tmp_path, monkeypatch):
    from dytok_cli.models import load_model

    assistant = load_model(str(tiny_llava_assistant_dir), device=Device.cpu, dtype=DType.float32, trust_remote_code=False)
    encodings = []
    original = assistant.encode
    monkeypatch.setattr(assistant, "encode", lambda *a, **k: encodings.append(original(*a, **k)) or encodings[-1])
    priors = []
    keyframe_prior = prior_pass.keyframe_prior
    monkeypatch.setattr(prior_pass, "keyframe_prior", lambda model, encoded, *rest, **options: priors.append((model, encoded)) or keyframe_prior(model, encoded, *rest, **options))
    run_settings = settings(tiny_llava_dir, method=Method.dytok, prior_model=str(tiny_llava_assistant_dir), prior_layers="1-2")
    cases = evaluation.grid([Method.none, Method.dytok, Method.visionzip], [0.5])
    failed, run_dir = evaluate([item("q1", videos / "a.mp4")], cases, run_settings, tmp_path / "run", tiny_llava, assistant)
    assert failed == 0
    assert len(encodings) == 1 and priors == [(assistant, encodings[0])]


def test_resume_does_no_repeated_work(tiny_llava, tiny_llava_dir, videos, tmp_path, monkeypatch):
    items = [item("q1", videos / "a.mp4"), item("q2", videos / "b.mp4")]
    cases = evaluation.grid([Method.none, Method.visionzip], [0.5])
    run_settings = settings(tiny_llava_dir, method=Method.none)
    data = write_jsonl(tmp_path / "items.jsonl", [])
    evaluate(items, cases, run_settings, tmp_path / "run", tiny_llava, data=data)
    predictions = tmp_path / "run" / evaluation.PREDICTIONS
    first = predictions.read_bytes()
    # A crash in the middle of writing the last pair: its line is cut short.
    predictions.write_bytes(first[: first.rfind(b"\n", 0, len(first) - 1) + 20])

    generates = counting(monkeypatch, tiny_llava, "generate")
    encodes = counting(monkeypatch, tiny_llava, "encode")
    evaluate(items, cases, run_settings, tmp_path / "run", tiny_llava, data=data)
    assert (len(generates), len(encodes)) == (1, 1)  # only q2's visionzip pair again
    untimed = lambda lines: [{**json.loads(line), "timings": None} for line in lines.splitlines()]  # noqa: E731
    assert untimed(predictions.read_bytes()) == untimed(first)  # the cut line replaced by its pair, answered alike
    evaluate(items, cases, run_settings, tmp_path / "run", tiny_llava, data=data)
    assert (len(generates), len(encodes)) == (1, 1)


def test_a_foreign_or_other_run_directory_is_refused_without_force(tmp_path, tiny_llava_dir):
    data = write_jsonl(tmp_path / "items.jsonl", [ours("q1", "a.mp4")])
    run_settings = settings(tiny_llava_dir)
    manifest = evaluation.manifest(data, [run_settings], None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a dytok eval run; use --force"):
        evaluation.RunDirectory(foreign, manifest, force=False)
    forced = evaluation.RunDirectory(foreign, manifest, force=True)
    forced.start()
    forced.close()
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / evaluation.MANIFEST).exists()

    evaluation.RunDirectory(foreign, manifest, force=False)  # now a run of this data and these settings
    other = evaluation.manifest(data, [settings(tiny_llava_dir, frames=8)], None)
    with pytest.raises(InputError, match="other settings \\(frames 4, now 8\\); use --force"):
        evaluation.RunDirectory(foreign, other, force=False)
    data.write_text(data.read_text() + "\n")
    with pytest.raises(InputError, match="holds a run of other data;"):
        evaluation.RunDirectory(foreign, evaluation.manifest(data, [run_settings], None), force=False)


def test_eval_command_isolates_an_unreadable_video(tiny_llava_dir, videos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot has a test of its own
    data = write_jsonl(tmp_path / "items.jsonl",
                       [ours("q1", "a.mp4"), ours("bad", "broken.mp4"), VIDEOMME, ours("q2", "b.mp4", category="colour")])
    output = tmp_path / "out"
    argv = ["eval", str(data), "--output", str(output), "--video-dir", str(videos), "--model", str(tiny_llava_dir),
            "--frames", "4", "--max-new-tokens", "3", "--decode-timeout", "0", "--method", "none",
            "--method", "dytok-fastv", "--ratios", "0.5"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"dytok: error: bad: {videos / 'broken.mp4'}: is not a video file (no known container format)",
        "no pareto.png: matplotlib is not installed (python -m pip install 'dytok-cli[plot]')",
    ]
    assert "dytok-fastv" in captured.out and "none" in captured.out

    records = read_predictions(output)
    assert sorted((r["id"], r["method"]) for r in records) == sorted(
        (identifier, method) for identifier in ("q1", "bad", "001-1", "q2") for method in ("none", "dytok-fastv")
    )
    failed = [r for r in records if r["error"]]
    assert {r["id"] for r in failed} == {"bad"} and all(r["prediction"] is None and not r["correct"] for r in failed)
    summary = json.loads((output / evaluation.SUMMARY).read_text())
    assert [(r["answered"], r["errors"]) for r in summary["results"]] == [(3, 1), (3, 1)]
    assert set(summary["results"][0]["by_category"]) == {"counting", "Counting Problem", "colour"}

    # Again: only the failed pairs are tried again, and they fail again.
    assert cli.main(argv) == 1
    assert len(read_predictions(output)) == len(records) + 2


def test_pareto_plot_is_a_png_of_the_stated_size(tmp_path):
    from PIL import Image

    pytest.importorskip("matplotlib")
    result = lambda method, ratio, accuracy, seconds, tokens: {  # noqa: E731
        "method": method, "ratio": ratio, "accuracy": accuracy, "total_s": seconds, "visual_tokens": tokens,
    }
    summary = {
        "items": 10, "settings": {"model": "tiny", "frames": 4},
        "results": [result("none", 1.0, 0.5, 2.0, 64), result("dytok", 0.5, 0.5, 1.2, 32),
                    result("dytok", 0.25, 0.4, 0.9, 16), result("visionzip", 0.25, None, None, None)],
    }
    evaluation.plot_pareto(summary, tmp_path / "pareto.png")
    with Image.open(tmp_path / "pareto.png") as image:
        image.load()
        assert image.format == "PNG" and image.size == evaluation.PARETO_SIZE
    assert [path.name for path in tmp_path.iterdir()] == ["pareto.png"]  # no temporary file left


def test_finished_run_rebuilds_its_summary_without_a_model_or_matplotlib(tiny_llava_dir, videos, tmp_path, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "items.jsonl", [ours("q1", "a.mp4")])
    output = tmp_path / "out"
    argv = ["eval", str(data), "--output", str(output), "--video-dir", str(videos), "--model", str(tiny_llava_dir),
            "--frames", "4", "--max-new-tokens", "3", "--decode-timeout", "0", "--method", "visionzip", "--ratios",
            "0.25", "--json"]
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    (output / evaluation.SUMMARY).unlink()
    (output / evaluation.PARETO).unlink(missing_ok=True)

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run loads no model")

    monkeypatch.setattr("dytok_cli.pipeline.load_model", no_loading)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == first == json.loads((output / evaluation.SUMMARY).read_text())
    assert captured.err == "no pareto.png: matplotlib is not installed (python -m pip install 'dytok-cli[plot]')\n"
    assert not (output / evaluation.PARETO).exists()


def test_every_output_gets_the_mode_open_would(tiny_llava_dir, videos, tmp_path, umask):
    pytest.importorskip("matplotlib")
    data = write_jsonl(tmp_path / "items.jsonl", [ours("q1", "a.mp4")])
    output = tmp_path / "out"
    assert cli.main(["eval", str(data), "--output", str(output), "--video-dir", str(videos), "--model",
                     str(tiny_llava_dir), "--frames", "4", "--max-new-tokens", "3", "--decode-timeout", "0",
                     "--method", "dytok", "--ratios", "0.5"]) == 0
    assert sorted(path.name for path in output.iterdir()) == sorted(evaluation.OUTPUTS)
    assert modes(output) == plain_modes(output, umask)


def test_eval_refuses_a_foreign_output_directory(tmp_path, tiny_llava_dir, capsys):
    data = write_jsonl(tmp_path / "items.jsonl", [ours("q1", "a.mp4")])
    (tmp_path / "a.mp4").write_bytes(b"")
    output = tmp_path / "out"
    output.mkdir()
    (output / "thesis.tex").write_text("keep me")
    assert cli.main(["eval", str(data), "--output", str(output), "--model", str(tmp_path / "no-such-model")]) == 2
    assert capsys.readouterr().err == (
        f"dytok: error: --output {output}: not empty and not a dytok eval run; use --force to write into it anyway, "
        "or another directory\n"
    )
    assert sorted(path.name for path in output.iterdir()) == ["thesis.tex"]


def test_a_data_set_none_of_whose_videos_can_be_read_loads_no_model(tmp_path, capsys):
    data = write_jsonl(tmp_path / "items.jsonl", [ours("q1", "a.mp4"), ours("q2", "a.mp4")])
    (tmp_path / "a.mp4").write_text("not a video")
    output = tmp_path / "out"
    # The model named does not exist: reaching it would fail differently.
    assert cli.main(["eval", str(data), "--output", str(output), "--model", str(tmp_path / "no-such-model")]) == 2
    assert capsys.readouterr().err == (f"dytok: error: none of the 1 videos that exist can be read (first: {tmp_path / 'a.mp4'}: "
                                       "is not a video file (no known container format))\n")
    assert not output.exists()
