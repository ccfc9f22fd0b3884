"""The `dytok` command end to end, as a user or a shell pipeline runs it: the installed script in a
fresh process where the process itself is checked (a silent stderr, a terminal, signals, exit status),
`cli.main` in this process (`dytok_here`) for what a command prints and exits with."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clips import write_audio_only, write_clip_pyav, write_text_file, write_truncated
from conftest import run_on_a_terminal, run_together

from dytok_cli.math.budget import total_budget

DYTOK = shutil.which("dytok")
pytestmark = pytest.mark.skipif(DYTOK is None, reason="the dytok script is not installed (pip install -e .)")

RECORD_KEYS = {
    "video", "question", "answer", "reasoning", "model", "prior_model", "method", "ratio", "dtype", "backend",
    "frames", "visual_tokens", "tokens_per_frame", "frame_size", "reused_frames", "reused_prefix_tokens", "subtitles", "whole",
    "timings", "error",
}
FRAME_KEYS = {"index", "frame", "timestamp", "weight", "budget", "dominant", "contextual"}
TIMING_KEYS = {"decode_s", "vision_s", "prior_s", "prefill_s", "generate_s", "total_s"}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", **(env or {})}
    environment.pop("DYTOK_MODEL", None)
    return subprocess.run(
        [DYTOK, *args], capture_output=True, text=True, env=environment, timeout=timeout, stdin=subprocess.DEVNULL
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dytok: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def answer_args(model_dir: Path, clip: Path) -> list[str]:
    return ["ask", str(clip), "what happens in the video?", "--model", str(model_dir), "--frames", "6", "--max-new-tokens", "8"]


@pytest.fixture(scope="module")
def piped_answer(tiny_llava_dir, clip) -> subprocess.CompletedProcess:
    """`dytok ask` with its answer read through a pipe, as a shell script reads it."""
    return run(*answer_args(tiny_llava_dir, clip))


def test_answer_on_stdout_and_nothing_else(piped_answer):
    result = piped_answer
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress animation or library noise when stderr is not a terminal
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1


def test_json_record(dytok_here, tiny_llava_dir, clip):
    result = dytok_here("ask", str(clip), "is there a dog?", "--model", str(tiny_llava_dir), "--frames", "6",
                 "--ratio", "0.5", "--max-new-tokens", "8", "--method", "dytok", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert set(record) == RECORD_KEYS
    assert record["video"] == str(clip) and record["question"] == "is there a dog?"
    assert isinstance(record["answer"], str) and record["error"] is None
    assert record["model"] == str(tiny_llava_dir) == record["prior_model"]
    assert record["method"] == "dytok" and record["ratio"] == 0.5 and record["backend"] == "decord"
    assert record["whole"] is None  # without --whole
    assert record["dtype"] in {"float32", "bfloat16"}  # --dtype auto on a CPU, resolved
    assert record["tokens_per_frame"] == 16 and record["frame_size"] == [32, 32]
    assert record["visual_tokens"] == {"full": 6 * 16, "kept": 48}
    assert set(record["timings"]) == TIMING_KEYS and all(v >= 0 for v in record["timings"].values())
    frames = record["frames"]
    assert [f["index"] for f in frames] == list(range(6))
    assert all(set(f) == FRAME_KEYS for f in frames)
    assert [f["frame"] for f in frames] == sorted(f["frame"] for f in frames)
    assert sum(f["weight"] for f in frames) == pytest.approx(1.0, abs=1e-5)
    assert sum(f["budget"] for f in frames) == 48
    assert all(f["dominant"] + f["contextual"] == f["budget"] for f in frames)
    timestamps = [f["timestamp"] for f in frames]
    assert timestamps == sorted(timestamps) and timestamps[0] == 0.0


def test_a_video_the_named_backend_cannot_decode_names_the_one_that_can(dytok_here, tiny_llava_dir, clip, monkeypatch):
    """As decord2 3.4.0 fails on a video of some widths on some CPUs only: `auto` goes on to PyAV, a named
    backend fails in one line that says which backend to name instead."""
    from dytok_cli.media import video

    def failing(path):
        raise RuntimeError("Check failed: from_size == to_size (24576 vs. 18432)")

    monkeypatch.setitem(video._READERS, "decord", failing)
    args = ["ask", str(clip), "--model", str(tiny_llava_dir), "--frames", "2", "--max-new-tokens", "2",
            "--decode-timeout", "0"]  # decoded in this process, where the failing reader is
    named = dytok_here(*args, "--backend", "decord")
    assert (named.returncode, named.stdout) == (2, "")  # the one video named could not be used: nothing was done
    assert named.stderr == (f"dytok: error: {clip}: could not be decoded with backend 'decord' (Check failed: "
                            "from_size == to_size (24576 vs. 18432)); backend 'pyav' decodes it: use backend 'pyav' "
                            "or 'auto'\n")
    auto = dytok_here(*args, "--json")
    assert auto.returncode == 0, auto.stderr
    assert json.loads(auto.stdout)["backend"] == "pyav"


def test_method_none_record_has_full_budgets(dytok_here, tiny_llava_dir, clip):
    result = dytok_here("ask", str(clip), "--model", str(tiny_llava_dir), "--frames", "4", "--method", "none",
                        "--max-new-tokens", "4", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["question"] == "Describe this video." and record["prior_model"] is None
    assert [f["budget"] for f in record["frames"]] == [16] * 4
    assert [f["weight"] for f in record["frames"]] == [0.25] * 4
    assert record["visual_tokens"] == {"full": 64, "kept": 64}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    valid = write_clip_pyav(folder / "valid.mp4", n_frames=30)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    no_videos = folder / "no-videos"
    no_videos.mkdir()
    (no_videos / "readme.txt").write_text("nothing to see")
    return {
        "missing": folder / "missing.mp4",
        "directory": no_videos,
        "not a video": write_text_file(folder / "notes.mp4"),
        "empty": empty,
        "truncated": write_truncated(valid, folder / "truncated.mp4", fraction=0.3),
        "audio-only": write_audio_only(folder / "audio.m4a"),
    }


@pytest.mark.parametrize("kind", ["missing", "directory", "not a video", "empty", "truncated", "audio-only"])
def test_bad_video_is_one_line_exit_2(dytok_here, bad_inputs, tiny_llava_dir, kind):
    path = bad_inputs[kind]
    result = dytok_here("ask", str(path), "what?", "--model", str(tiny_llava_dir))
    assert_one_line_error(result, 2, str(path))


def test_bad_video_with_json_still_yields_a_record(dytok_here, bad_inputs, tiny_llava_dir):
    path = bad_inputs["not a video"]
    result = dytok_here("ask", str(path), "what?", "--model", str(tiny_llava_dir), "--json")
    assert result.returncode == 2
    record = json.loads(result.stdout)
    assert set(record) == RECORD_KEYS and record["answer"] is None and record["dtype"] is None
    assert str(path) in record["error"] and "\n" not in record["error"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--ratio", "0"], "--ratio"),
        (["--ratio", "1.5"], "--ratio"),
        (["--ratio", "abc"], "--ratio"),
        (["--frames", "0"], "--frames"),
        (["--fps", "-1"], "--fps"),
        (["--method", "magic"], "--method"),
        (["--prior-layers", "x-y"], "--prior-layers"),
        (["--method", "dytok", "--prior-layers", "5-2"], "--prior-layers '5-2' is a reversed range: write 2-5"),
        (["--no-such-flag"], "--no-such-flag"),
        # A flag that would be silently ignored is refused instead.
        (["--method", "dytok", "--prune-layer", "2"], "--prune-layer only applies to --method dytok-fastv"),
        (["--method", "none", "--ratio", "0.5"], "--ratio does not apply to --method none"),
        (["--method", "visionzip", "--prior-layers", "1"], "--prior-layers only applies to --method dytok or dytok-fastv"),
        (["--method", "dytok-fastv", "--prior-model", "m"], "--prior-model only applies to --method dytok"),
        (["--max-frames", "4"], "--max-frames only applies with --fps"),
        (["--seed", "3"], "--seed only applies when sampling"),
        (["-0"], "-0/--null only applies to paths read from stdin (-)"),
    ],
)
def test_bad_flags_are_usage_errors(dytok_here, clip, args, fragment):
    assert_one_line_error(dytok_here("ask", str(clip), "what?", *args), 2, fragment)


def test_a_bad_method_names_the_valid_ones_plainly(dytok_here, clip):
    assert_one_line_error(dytok_here("ask", str(clip), "--method", "magic"), 2,
                          "'magic' is not one of 'dytok', 'visionzip', 'dytok-fastv', 'none'")


@pytest.mark.parametrize("arguments, fragment", [
    (["-q", "a", "what happens?"], "'what happens?' is not a video file, a directory or -; with -q"),
    (["what", "happens"], "'what' is not a video file, a directory or -; quote the question"),
])
def test_a_misplaced_question_is_a_usage_error_before_any_model_loads(dytok_here, clip, arguments, fragment):
    # The model named does not exist: reaching it would fail differently, and much later.
    assert_one_line_error(dytok_here("ask", str(clip), *arguments, "--model", "./no/such/model"), 2, fragment)


def test_a_question_longer_than_any_file_name_is_still_the_question(dytok_here, tiny_llava_dir, clip):
    """Asking whether it names a file must not fail on a text over the file system's 255-byte name limit."""
    question = "what happens " * 30
    result = dytok_here("ask", str(clip), question, "--model", str(tiny_llava_dir), "--frames", "2",
                        "--max-new-tokens", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["question"] == question
    assert_one_line_error(dytok_here("ask", str(clip), "-q", "a", question, "--model", "./no/such/model"), 2,
                          "is not a video file, a directory or -; with -q")


def test_prior_layers_beyond_the_model(dytok_here, tiny_llava_dir, clip):
    result = dytok_here("ask", str(clip), "--model", str(tiny_llava_dir), "--frames", "2", "--method", "dytok", "--prior-layers", "2-9")
    assert_one_line_error(result, 2, "--prior-layers", "0-3")


@pytest.mark.parametrize("model, code", [("./no/such/model/dir", 2), ("nobody-here/no-such-model", 3)])
def test_unknown_model(dytok_here, clip, model, code):
    """A directory that is not there is a bad argument; a hub id not in the cache, with HF_HUB_OFFLINE set as
    the suite sets it, is a model not to be had now (exit 3)."""
    result = dytok_here("ask", str(clip), "--model", model, "--frames", "2")
    assert_one_line_error(result, code, model, "--model PATH", "HF_HUB_OFFLINE")


def test_model_of_an_unsupported_family(dytok_here, tmp_path, clip):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1).save_pretrained(tmp_path)
    result = dytok_here("ask", str(clip), "--model", str(tmp_path), "--frames", "2")
    assert_one_line_error(result, 2, "qwen2", "llava_onevision")


def test_help_and_no_arguments(dytok_here):
    assert dytok_here("--help").returncode == 0
    assert "--ratio" in dytok_here("ask", "--help").stdout
    result = dytok_here()
    assert result.returncode == 2 and "Usage" in result.stderr


def test_help_reads_plainly(dytok_here):
    overview = dytok_here("-h")
    assert overview.returncode == 0 and overview.stdout == dytok_here("--help").stdout
    commands = overview.stdout.split("Commands:")[1].strip().splitlines()
    assert [line.split()[0] for line in commands] == ["ask", "inspect", "summarize", "find", "bench", "eval", "chat", "serve", "make-clip", "models"]
    assert not any(line.rstrip().endswith("...") for line in commands)  # summaries are whole sentences
    for command, usage in [("ask", "VIDEO... [QUESTION]"), ("inspect", "VIDEO [QUESTION]"), ("bench", "VIDEO"), ("eval", "DATA"),
                           ("summarize", "VIDEO..."), ("find", "VIDEO_OR_FOLDER QUERY"), ("chat", "VIDEO"), ("make-clip", "FILE")]:
        text = dytok_here(command, "-h").stdout
        assert f"Usage: dytok {command} [OPTIONS] {usage}\n" in text
        for internal in ("<list[", "<int", "<float", "<str>", "<path>", "{", "range>"):
            assert internal not in text, (command, internal)
    words = " ".join(dytok_here("ask", "-h").stdout.split())
    assert "the deepest third for dytok, up to --prune-layer for dytok-fastv" in words  # --prior-layers per method


def test_version():
    from importlib.metadata import version

    result = run("--version")
    assert (result.returncode, result.stdout) == (0, f"dytok {version('dytok-cli')}\n")


def wait_until_mapped(process: subprocess.Popen, library: str, timeout_s: float = 60) -> None:
    """Until `process` has a shared object whose path holds `library` in its memory: its import has begun.
    A fixed sleep cannot say that: on a busy machine Python's own start-up, before dytok's code runs (and its
    Ctrl-C handling with it), took longer than 0.2 s."""
    deadline = time.monotonic() + timeout_s
    while library not in Path(f"/proc/{process.pid}/maps").read_text():
        assert process.poll() is None and time.monotonic() < deadline, f"{library} never loaded"
        time.sleep(0.005)


# Ctrl-C as numpy's import begins, and a second after torch's began (how a Ctrl-C held during an import is
# delivered is tested in this process below).
@pytest.mark.parametrize("library, after_s", [("numpy", 0.0), ("libtorch", 1.0)], ids=["while-importing", "loading-or-answering"])
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_interrupt_exits_130_without_traceback(endless_model, clip, library, after_s):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(  # an answer that cannot end before the Ctrl-C, however quick the machine
        [DYTOK, "ask", str(clip), "--model", str(endless_model), "--max-new-tokens", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )
    wait_until_mapped(process, library)
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    # One line: "interrupted", or "interrupted after 0 of 1 answers" once the answering has begun.
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("dytok: error: interrupted"), stderr


@pytest.fixture
def interrupt_handlers():
    """The entry point's handlers of SIGINT and SIGALRM for one test, this process's own ones after it."""
    from dytok_cli.__main__ import hold_interrupts_while_importing

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGALRM)
    hold_interrupts_while_importing()
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGINT, saved[0])
    signal.signal(signal.SIGALRM, saved[1])


def test_a_ctrl_c_during_a_held_import_is_delivered_once_the_import_is_over(interrupt_handlers, tmp_path, monkeypatch):
    # A stand-in for numpy imported by torch's C extension, which swallows whatever that import raises.
    monkeypatch.setattr("dytok_cli.__main__._HELD_WHILE_IMPORTING", frozenset({"swallowing"}))
    (tmp_path / "swallowing.py").write_text(
        "import os, signal, time\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.3)\n"
        "    swallowed = False\n"
        "except BaseException:\n"
        "    swallowed = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    imported = None
    try:
        with pytest.raises(KeyboardInterrupt):
            import swallowing

            imported = swallowing
            time.sleep(5)  # without the hold, the Ctrl-C was swallowed above and this sleep runs to its end
    finally:
        sys.modules.pop("swallowing", None)
    assert imported is not None and imported.swallowed is False


def test_a_ctrl_c_outside_imports_interrupts_at_once(interrupt_handlers):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # a Ctrl-C that did nothing lets this sleep end, and the test fail


def test_answer_streams_to_a_terminal(piped_answer, tiny_llava_dir, clip):
    status, received = run_on_a_terminal([DYTOK, *answer_args(tiny_llava_dir, clip)], "stdout")
    assert status == 0
    assert received.replace("\r\n", "\n").strip() == piped_answer.stdout.strip()


def test_single_pass_json_records_for_two_questions(dytok_here, tiny_llava_dir, clip):
    result = dytok_here("ask", str(clip), "-q", "what happens in the video?", "-q", "is there a dog?",
                        "--model", str(tiny_llava_dir), "--method", "dytok-fastv", "--prune-layer", "1", "--ratio", "0.25",
                        "--frames", "6", "--max-new-tokens", "4", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["question"] for r in records] == ["what happens in the video?", "is there a dog?"]
    for record in records:
        assert record["method"] == "dytok-fastv" and record["error"] is None
        assert record["prior_model"] == str(tiny_llava_dir)
        budgets = [frame["budget"] for frame in record["frames"]]
        assert sum(budgets) == record["visual_tokens"]["kept"] == total_budget(0.25, 6, 16)
        assert record["timings"]["prior_s"] == 0 and record["timings"]["prefill_s"] > 0


# --- a hybrid decoder (Qwen3.5: full attention at layers 3 and 7 of the tiny model's 8) -------------


@pytest.mark.parametrize("args, fragments", [
    (["--prune-layer", "2"], ["--prune-layer 2 is not a full-attention layer", "choose among 3, 7"]),
    (["--prune-layer", "8"], ["--prune-layer 8 is outside the model's layers 0-7"]),
    (["--prune-layer", "7", "--prior-layers", "4-6"], ["--prior-layers '4-6' holds no full-attention layer", "choose among 3, 7"]),
    (["--prune-layer", "3", "--prior-layers", "4-7"], ["--prior-layers '4-7' must lie within 0-3 (--prune-layer)"]),
    (["--method", "dytok", "--prior-layers", "0-2"], ["--prior-layers '0-2' holds no full-attention layer", "choose among 3, 7"]),
    (["--method", "dytok", "--prior-layers", "2-9"], ["--prior-layers '2-9' is outside the prior model's layers 0-7"]),
])
def test_a_hybrids_bad_layer_choices_are_one_line_usage_errors(dytok_here, build_family, clip, args, fragments):
    result = dytok_here("ask", str(clip), "--model", str(build_family("qwen3_5")), "--frames", "4", *args)
    assert_one_line_error(result, 2, *fragments)


def test_linear_attention_fallback_warnings_only_with_verbose(build_family, clip):
    """Without flash-linear-attention and causal-conv1d the PyTorch kernels run, and transformers says so.
    Each run in a fresh process: transformers says it once per process."""
    if all(importlib.util.find_spec(package) for package in ("fla", "causal_conv1d")):
        pytest.skip("the fast kernels are installed: nothing falls back")
    arguments = [DYTOK, "ask", str(clip), "--model", str(build_family("qwen3_5")), "--frames", "4", "--max-new-tokens",
                 "2", "--decode-timeout", "0"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    (quiet, _), (verbose, _) = run_together((arguments, environment), ([*arguments, "--verbose"], environment))
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert quiet.stderr == ""
    assert "falling back to its reference PyTorch implementation" in verbose.stderr
    assert quiet.stdout == verbose.stdout
