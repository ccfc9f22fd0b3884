"""Many videos and questions in one process: one model load, per-video reuse, error isolation."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clips import write_audio_only, write_clip, write_text_file, write_truncated

from dytok_cli import cli, pipeline as pipeline_module
from dytok_cli.media import inputs
from dytok_cli.media.cache import VisualCache
from dytok_cli.config import Device, DType, Settings
from dytok_cli.errors import InputError
from dytok_cli.models.llava_onevision import LlavaOnevision
from dytok_cli.pipeline import Pipeline

DYTOK = shutil.which("dytok")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three good clips (one in a subdirectory) and one of every kind of broken input."""
    root = tmp_path_factory.mktemp("batch")
    write_clip(root / "a.mp4", n_frames=12)
    write_clip(root / "b.MOV", n_frames=16)
    (root / "sub").mkdir()
    write_clip(root / "sub" / "c.mkv", n_frames=10)
    (root / "notes.txt").write_text("not a video, and not a video name")
    return root


@pytest.fixture(scope="module")
def broken(tmp_path_factory, folder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "corrupt": write_truncated(folder / "a.mp4", root / "corrupt.mp4", fraction=0.4),
        "empty": empty,
        "not a video": write_text_file(root / "text.mp4"),
        "audio-only": write_audio_only(root / "audio.m4a"),
        "missing": root / "missing.mp4",
    }


def cli_args(model_dir: Path, *extra: str) -> list[str]:
    return [*extra, "--model", str(model_dir), "--frames", "4", "--max-new-tokens", "4", "--decode-timeout", "0"]


def run_cli(argv: list[str], capsys, monkeypatch, stdin: str = "") -> tuple[int, list[dict], str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = cli.main(argv)
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return status, records, captured.err


def test_split_arguments():
    assert inputs.split_arguments(["a.mp4", "what?"], []) == (["a.mp4"], ["what?"])
    assert inputs.split_arguments(["a.mp4"], []) == (["a.mp4"], ["Describe this video."])
    assert inputs.split_arguments(["a.mp4", "b.webm"], []) == (["a.mp4", "b.webm"], ["Describe this video."])
    assert inputs.split_arguments(["a.mp4", "-"], []) == (["a.mp4", "-"], ["Describe this video."])
    assert inputs.split_arguments(["a.mp4", "-"], ["q1", "q2"]) == (["a.mp4", "-"], ["q1", "q2"])
    # A question among the videos is refused before any work: with -q it is a misplaced question...
    with pytest.raises(InputError, match="'what happens\\?' is not a video file, a directory or -; with -q"):
        inputs.split_arguments(["a.mp4", "what happens?"], ["a"])
    # ... and without -q an unquoted one (only the last argument can be the question).
    with pytest.raises(InputError, match="'what' is not a video file, a directory or -; quote the question"):
        inputs.split_arguments(["a.mp4", "what", "happens"], [])


def test_a_misplaced_question_is_refused_before_torch_loads(tmp_path):
    """The arguments are checked by torch-free code first, so a typo is answered at once."""
    script = ("import sys\nfrom dytok_cli import cli\ncode = cli.main(['ask', 'a.mp4', 'what', 'happens'])\n"
              "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "is not a video file" in result.stderr and result.stderr.count("\n") == 1


def test_expand_inputs(folder):
    flat = list(inputs.expand_inputs([str(folder)], recursive=False, stdin=io.StringIO(), nul=False))
    assert flat == [str(folder / "a.mp4"), str(folder / "b.MOV")]
    deep = list(inputs.expand_inputs([str(folder)], recursive=True, stdin=io.StringIO(), nul=False))
    assert deep == [str(folder / "a.mp4"), str(folder / "b.MOV"), str(folder / "sub" / "c.mkv")]
    lines = list(inputs.expand_inputs(["x.mp4", "-"], recursive=False, stdin=io.StringIO("p 1.mp4\n\nq.mp4\n"), nul=False))
    assert lines == ["x.mp4", "p 1.mp4", "q.mp4"]
    nul = list(inputs.expand_inputs(["-"], recursive=False, stdin=io.StringIO("odd\nname.mp4\0q.mp4\0"), nul=True))
    assert nul == ["odd\nname.mp4", "q.mp4"]


def test_one_model_load_and_one_vision_pass_per_video(tiny_llava_dir, folder, capsys, monkeypatch):
    loads, encodes = [], []
    real_load, real_encode = pipeline_module.load_model, LlavaOnevision.encode
    monkeypatch.setattr(pipeline_module, "load_model", lambda name, **kw: loads.append(name) or real_load(name, **kw))
    monkeypatch.setattr(LlavaOnevision, "encode", lambda self, frames, *rest: encodes.append(len(frames.images)) or real_encode(self, frames, *rest))
    argv = cli_args(tiny_llava_dir, "ask", str(folder), "--recursive", "-q", "what happens?", "-q", "is there a dog?", "--jsonl")
    status, records, err = run_cli(argv, capsys, monkeypatch)
    assert status == 0, err
    assert loads == [str(tiny_llava_dir)]
    assert len(encodes) == 3  # one per video, not one per question
    assert [(Path(r["video"]).name, r["question"]) for r in records] == [
        (name, question) for name in ("a.mp4", "b.MOV", "c.mkv") for question in ("what happens?", "is there a dog?")
    ]
    assert all(r["error"] is None and isinstance(r["answer"], str) for r in records)
    second = records[1]["timings"]
    assert second["decode_s"] == 0 and second["vision_s"] == 0  # reused from the first question
    # and so is the LLM's work on the prompt up to the video's end (the default method's, to its prune layer)
    reused = [r["reused_prefix_tokens"] for r in records]
    assert reused[0::2] == [0, 0, 0] and all(count > 0 for count in reused[1::2])


def test_no_prefix_cache_recomputes_the_prefix_with_the_same_answers(tiny_llava_dir, folder, capsys, monkeypatch):
    released = []
    monkeypatch.setattr(Pipeline, "release", lambda self, real=Pipeline.release: released.append(1) or real(self))
    answers = {}
    for flag in ("--prefix-cache", "--no-prefix-cache"):
        argv = cli_args(tiny_llava_dir, "ask", str(folder / "a.mp4"), str(folder / "b.MOV"), "-q", "what happens?",
                        "-q", "is there a dog?", "--method", "none", "--jsonl", flag)
        status, records, err = run_cli(argv, capsys, monkeypatch)
        assert status == 0, err
        answers[flag] = [r["answer"] for r in records]
        reused = [r["reused_prefix_tokens"] for r in records]
        if flag == "--prefix-cache":
            assert reused[0::2] == [0, 0] and reused[1] == reused[3] > 0
        else:
            assert reused == [0, 0, 0, 0]
    assert answers["--prefix-cache"] == answers["--no-prefix-cache"]
    assert len(released) == 4  # after each video's questions, in both runs


def test_broken_files_do_not_stop_the_batch(tiny_llava_dir, folder, broken, capsys, monkeypatch):
    paths = [str(folder / "a.mp4"), *(str(p) for p in broken.values()), str(folder / "b.MOV")]
    status, records, err = run_cli(cli_args(tiny_llava_dir, "ask", *paths, "-q", "what?", "--jsonl"), capsys, monkeypatch)
    assert status == 1
    assert [r["video"] for r in records] == paths
    assert [r["error"] is None for r in records] == [True] + [False] * len(broken) + [True]
    for record in records[1:-1]:
        assert record["answer"] is None and record["video"] in record["error"] and "\n" not in record["error"]
    assert len(err.strip().splitlines()) == len(broken)  # one line per failed file on stderr
    assert "Traceback" not in err


def test_a_batch_of_unusable_videos_loads_no_model(folder, broken):
    """Each bad input gets its line and record, the run exits 1, and nothing loads: the fresh process that ran
    it has not imported torch. From stdin too, and for summarize."""
    bad = [str(broken[kind]) for kind in ("not a video", "empty", "audio-only", "corrupt", "missing")]
    runs = [
        (["ask", *bad, "-q", "what?"], ""),
        (["ask", "-", "-q", "what?", "--jsonl"], "".join(f"{path}\n" for path in bad)),
        (["summarize", *bad], ""),
    ]
    script = (
        "import io, json, sys\nfrom dytok_cli import cli\n"
        f"for argv, stdin in {runs!r}:\n"
        "    sys.stdin = io.StringIO(stdin)\n"
        "    code = cli.main(argv)\n"
        "    print(json.dumps([code, 'torch' in sys.modules]), flush=True)\n"
        "    print('--', file=sys.stderr, flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_COLOR": "1"})
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
    assert outcomes == [[1, False]] * len(runs), result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["video"], r["answer"]) for r in records] == [(path, None) for path in bad]
    for (argv, _), messages in zip(runs, result.stderr.split("--\n")[:-1], strict=True):
        lines = messages.splitlines()
        assert [line.split(": ")[2] for line in lines] == bad, (argv, messages)  # `dytok: error: PATH: why`
        assert all(line.startswith("dytok: error: ") for line in lines)


def test_unusable_videos_ahead_of_a_good_one_keep_their_places(tiny_llava_dir, folder, broken, capsys, monkeypatch):
    """They are refused before the model loads, and their records still come in input order."""
    events = []
    real_load = pipeline_module.load_model
    monkeypatch.setattr(pipeline_module, "load_model", lambda name, **kw: events.append("load") or real_load(name, **kw))
    paths = [str(broken["not a video"]), str(broken["empty"]), str(folder / "a.mp4"), str(broken["missing"])]
    argv = cli_args(tiny_llava_dir, "ask", *paths, "-q", "what?", "-q", "and then?", "--jsonl")
    argv[argv.index("--decode-timeout") + 1] = "60"  # the probes run in a worker, bounded, as decoding does
    monkeypatch.setattr("dytok_cli.render.write_json", lambda record, indent=2: events.append(record["video"]))
    status, _, err = run_cli(argv, capsys, monkeypatch)
    assert status == 1
    assert events == [paths[0]] * 2 + [paths[1]] * 2 + ["load"] + [paths[2]] * 2 + [paths[3]] * 2
    assert len(err.strip().splitlines()) == 6  # a line per failed pair


def test_questions_file_and_stdin(tiny_llava_dir, folder, tmp_path, capsys, monkeypatch):
    questions = tmp_path / "questions.txt"
    questions.write_text("what happens?\n\nhow many people?\n")
    stdin = f"{folder / 'b.MOV'}\n{folder / 'a.mp4'}\n"
    argv = cli_args(tiny_llava_dir, "ask", "-", "--questions", str(questions), "--jsonl")
    status, records, err = run_cli(argv, capsys, monkeypatch, stdin=stdin)
    assert status == 0, err
    assert [(Path(r["video"]).name, r["question"]) for r in records] == [
        ("b.MOV", "what happens?"), ("b.MOV", "how many people?"), ("a.mp4", "what happens?"), ("a.mp4", "how many people?")
    ]


def test_json_with_several_pairs_is_an_array(tiny_llava_dir, folder, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status = cli.main(cli_args(tiny_llava_dir, "ask", str(folder / "a.mp4"), str(folder / "b.MOV"), "--json"))
    records = json.loads(capsys.readouterr().out)
    assert status == 0 and [Path(r["video"]).name for r in records] == ["a.mp4", "b.MOV"]


def test_empty_directory_is_a_usage_error(tiny_llava_dir, tmp_path, capsys, monkeypatch):
    status, records, err = run_cli(cli_args(tiny_llava_dir, "ask", str(tmp_path), "-q", "x"), capsys, monkeypatch)
    assert status == 2 and records == [] and err.startswith("dytok: error: no video files in")


def test_decode_timeout_fails_each_video_alone(tiny_llava_dir, folder, capsys, monkeypatch):
    argv = cli_args(tiny_llava_dir, "ask", str(folder / "a.mp4"), str(folder / "b.MOV"), "-q", "x", "--jsonl")
    argv[argv.index("--decode-timeout") + 1] = "0.001"
    status, records, err = run_cli(argv, capsys, monkeypatch)
    assert status == 1 and len(records) == 2
    assert all("timed out" in r["error"] for r in records)


def test_cache_hit_answers_as_a_miss_without_the_vision_pass(tiny_llava, tiny_llava_dir, folder, tmp_path):
    """The cache's own contract (round trip, damaged entries) is tested without a model in test_cache.py."""
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32,
                        max_new_tokens=6, decode_timeout=None)
    cache = VisualCache(tmp_path / "cache")
    video = folder / "a.mp4"
    miss = Pipeline(settings, model=tiny_llava, cache=cache).ask(video, "what happens?")
    entries = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(entries) == 1
    encodes = []
    real_encode = tiny_llava.encode
    tiny_llava.encode = lambda frames: encodes.append(1) or real_encode(frames)
    try:
        hit = Pipeline(settings, model=tiny_llava, cache=cache).ask(video, "what happens?")
    finally:
        del tiny_llava.encode
    assert encodes == []  # served from disk
    assert hit.token_ids == miss.token_ids and hit.plan.budgets.tolist() == miss.plan.budgets.tolist()
    assert hit.plan.frames.indices == miss.plan.frames.indices


def test_closed_stdout_pipe_ends_quietly(tiny_llava_dir, folder):
    if DYTOK is None:
        pytest.skip("the dytok script is not installed")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [DYTOK, *cli_args(tiny_llava_dir, "ask", str(folder), "--recursive", "-q", "a?", "-q", "b?", "--jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
    )
    first = process.stdout.readline()
    process.stdout.close()  # `| head -1`
    stderr = process.stderr.read().decode()
    process.wait(timeout=120)
    assert json.loads(first)["error"] is None
    assert process.returncode == 0 and stderr == ""


def test_interrupt_mid_batch_summarises_and_exits_130(tiny_llava_dir, folder, capsys, monkeypatch):
    real_ask = Pipeline.ask
    calls = []

    def ask_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_ask(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "ask", ask_then_interrupt)
    argv = cli_args(tiny_llava_dir, "ask", str(folder / "a.mp4"), str(folder / "b.MOV"), "-q", "x", "--jsonl")
    status, records, err = run_cli(argv, capsys, monkeypatch)
    assert status == 130 and len(records) == 1  # the finished answer was already written
    assert err.strip().splitlines() == ["dytok: error: interrupted after 1 of 2 answers"]
