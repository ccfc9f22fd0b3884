"""`dytok chat`: questions from a pipe (in this process), and the prompt on a real terminal (a fresh process
on a pseudo-terminal): streamed answers, /commands, \"\"\" input, Ctrl-C stopping an answer and leaving."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import select
import shutil
import signal
import time
from pathlib import Path

import pytest
from clips import write_clip

from dytok_cli import cli
from dytok_cli.config import Method, Settings
from dytok_cli.pipeline import Pipeline
from dytok_cli.types import Question

DYTOK = shutil.which("dytok")
ARGS = ["--method", "none", "--frames", "4", "--max-new-tokens", "6", "--device", "cpu", "--dtype", "float32",
        "--decode-timeout", "0"]


@pytest.fixture
def chat_here(capfd, monkeypatch, tiny_llava_dir):
    """chat_here(stdin_text, *args) -> (status, stdout, stderr) of `dytok chat` in this process, stdin a pipe."""

    def run(stdin: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        monkeypatch.setenv("NO_COLOR", "1")
        capfd.readouterr()
        status = cli.main(["chat", *args, "--model", str(tiny_llava_dir), *ARGS])
        out, err = capfd.readouterr()
        return status, out, err

    return run


def expected_answers(model, video: Path, turns: list[str]) -> list[str]:
    """What the pipeline answers to `turns` asked in a row, each after the earlier ones."""
    pipeline = Pipeline(Settings(model=model.name, method=Method.none, frames=4, max_new_tokens=6,
                                 device="cpu", dtype="float32", decode_timeout=0), model=model)
    history: list[tuple[str, str]] = []
    for text in turns:
        history.append((text, pipeline.ask(video, Question(text, history=tuple(history))).text))
    return [answer for _, answer in history]


def test_questions_from_a_pipe_are_one_conversation(chat_here, tiny_llava, clip):
    status, out, err = chat_here("what happens?\n\nand then?\n/clear\nwhat happens?\n", str(clip), "--jsonl")
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    first, second = expected_answers(tiny_llava, clip, ["what happens?", "and then?"])
    assert [(r["question"], r["answer"], r["turn"]) for r in records] == [
        ("what happens?", first, 1), ("and then?", second, 2), ("what happens?", first, 1)]
    # The video's prefix is computed for the first question only.
    assert records[0]["reused_prefix_tokens"] == 0 and records[1]["reused_prefix_tokens"] > 0
    assert records[2]["reused_prefix_tokens"] == records[1]["reused_prefix_tokens"]
    assert records[0]["timings"]["decode_s"] > 0 and records[1]["timings"]["decode_s"] == 0


def test_commands_and_multiline_input_from_a_pipe(chat_here, tiny_llava, clip, tmp_path):
    other = write_clip(tmp_path / "other.mp4", n_frames=12, size=(64, 48), fps=8.0)
    typed = f'"""what\nhappens?"""\n/nonsense\n/video {tmp_path}/missing.mp4\n/video {other}\n"""\nwhat happens?\n"""\n/quit\nnever asked\n'
    status, out, err = chat_here(typed, str(clip))
    assert status == 1  # two lines failed; everything else was answered
    assert out.splitlines() == [*expected_answers(tiny_llava, clip, ["what\nhappens?"]),
                                *expected_answers(tiny_llava, other, ["what happens?"])]
    errors = err.strip().splitlines()
    assert len(errors) == 2 and "unknown command /nonsense" in errors[0] and "missing.mp4" in errors[1]
    assert all(line.startswith("dytok: error: ") for line in errors) and "Traceback" not in err


def test_a_video_that_cannot_be_read_is_a_usage_error(chat_here, tmp_path):
    status, out, err = chat_here("what?\n", str(tmp_path / "none.mp4"))
    assert status == 2 and not out and err.strip().splitlines() == [f"dytok: error: {tmp_path / 'none.mp4'}: no such file"]


# --- on a terminal ------------------------------------------------------------------------------


class Terminal:
    """`dytok` in a fresh process whose stdin, stdout and stderr are a pseudo-terminal it controls, so
    Ctrl-C typed there is a SIGINT to it, as in a shell."""

    def __init__(self, argv: list[str]) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec, never return into pytest
            try:
                os.environ.update(HF_HUB_OFFLINE="1", NO_COLOR="1", TERM="dumb")
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.shown = ""
        self.exit_code: int | None = None

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait_for(self, fragment: str, after: int, timeout: float = 120) -> int:
        """Read until `fragment` shows after position `after`; where it ends."""
        deadline = time.monotonic() + timeout
        while fragment not in self.shown[after:]:
            assert time.monotonic() < deadline, f"{fragment!r} never shown; the terminal shows:\n{self.shown}"
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    self.shown += os.read(self.fd, 4096).decode(errors="replace").replace("\r\n", "\n")
                except OSError:
                    break
        return self.shown.index(fragment, after) + len(fragment)

    def status(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                self.exit_code = os.waitstatus_to_exitcode(status)
                return self.exit_code
            ready, _, _ = select.select([self.fd], [], [], 0.1)  # a bare read would wait forever on a live child
            if ready:
                try:
                    self.shown += os.read(self.fd, 4096).decode(errors="replace").replace("\r\n", "\n")
                except OSError:
                    time.sleep(0.1)
        raise AssertionError(f"dytok chat did not exit; the terminal shows:\n{self.shown}")

    def close(self) -> None:
        """End the process if it is still running (a failed test)."""
        if self.exit_code is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)


@pytest.mark.skipif(DYTOK is None, reason="the dytok script is not installed (pip install -e .)")
def test_the_prompt_on_a_terminal(endless_model, clip, tmp_path):
    other = write_clip(tmp_path / "other.mp4", n_frames=12, size=(64, 48), fps=8.0)
    terminal = Terminal([DYTOK, "chat", str(clip), "--model", str(endless_model), "--method", "none", "--frames", "4",
                         "--max-new-tokens", "4000", "--device", "cpu", "--dtype", "float32", "--decode-timeout", "0"])
    try:
        at = terminal.wait_for(">>> ", 0)
        assert "/help for commands" in terminal.shown
        terminal.type("/help\n")
        at = terminal.wait_for(">>> ", terminal.wait_for("/clear", at))
        terminal.type("what happens?\n")
        # Streamed: words show while the answer (4000 tokens) is far from done; Ctrl-C stops it.
        terminal.wait_for(" ", terminal.wait_for("what happens?\n", at) + 1)
        terminal.type("\x03")
        at = terminal.wait_for(">>> ", terminal.wait_for("stopped", at))
        terminal.type(f"/video {other}\n")
        at = terminal.wait_for(">>> ", terminal.wait_for("a new conversation", at))
        terminal.type("/clear\n")
        at = terminal.wait_for(">>> ", terminal.wait_for("conversation cleared", at))
        # CPython's readline loses a SIGINT that lands between its prompt and its wait for a key, as a
        # person's could not; give it a moment to be waiting.
        time.sleep(0.5)
        terminal.type("\x03")  # at the prompt: leave
        status = terminal.status()
    finally:
        terminal.close()
    assert status == 130, terminal.shown
    assert "Traceback" not in terminal.shown and "dytok: error: interrupted" in terminal.shown


def test_an_answer_stops_between_two_tokens(tiny_llava, clip):
    """`Pipeline.answer`'s stop: set while the answer streams, it ends the answer after the token being
    generated; what came until then is the unstopped answer's beginning."""
    import threading

    pipeline = Pipeline(Settings(model=tiny_llava.name, method=Method.none, frames=4, max_new_tokens=12,
                                 device="cpu", dtype="float32", decode_timeout=0), model=tiny_llava)
    visual = pipeline.prepare(clip)
    whole = pipeline.ask(visual, "what happens?", force_length=True)
    stop = threading.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 2:
            stop.set()

    stopped = pipeline.ask(visual, "what happens?", on_text=on_text, force_length=True, stop=stop)
    assert stopped.stopped and not whole.stopped
    assert 2 <= len(stopped.token_ids) < len(whole.token_ids) == 12
    assert stopped.token_ids == whole.token_ids[: len(stopped.token_ids)]


# --- a thinking model ----------------------------------------------------------------------------


@pytest.fixture
def thinking_model(build_family, load_family):
    """A tiny Qwen3.5 whose template answers directly unless `enable_thinking` (as Qwen3.5 0.8B's)."""
    options = {"thinking": "direct", "text_layers": 4}
    return build_family("qwen3_5", **options), load_family("qwen3_5", **options)


THINKING_ARGS = ["--method", "none", "--frames", "4", "--max-new-tokens", "4", "--max-reasoning-tokens", "5",
                 "--device", "cpu", "--dtype", "float32", "--decode-timeout", "0", "--think"]


def test_with_think_the_conversation_holds_the_answers_alone(thinking_model, clip):
    """Each turn reasons, the reasoning is kept out of the answer, and the next turn is asked after the
    earlier answers only: as a pipeline asked with those answers as the history answers it."""
    from dytok_cli.apps.chat import Conversation

    model_dir, adapter = thinking_model
    settings = Settings(model=str(model_dir), method=Method.none, frames=4, max_new_tokens=4, max_reasoning_tokens=5,
                        think=True, device="cpu", dtype="float32", decode_timeout=0)
    conversation = Conversation(Pipeline(settings, model=adapter), clip)
    shown: list[str] = []
    first = conversation.ask("what happens?", on_reasoning=shown.append)
    second = conversation.ask("and then?")
    assert first.reasoning and "".join(shown).strip() == first.reasoning and first.reasoning not in first.text
    assert conversation.history == [("what happens?", first.text), ("and then?", second.text)]
    fresh = Pipeline(dataclasses.replace(settings, prefix_cache=False), model=adapter)
    expected = fresh.ask(clip, Question("and then?", history=(("what happens?", first.text),)))
    assert (second.token_ids, second.reasoning) == (expected.token_ids, expected.reasoning)


def test_with_think_a_pipe_gets_answers_and_show_reasoning_puts_the_reasoning_on_stderr(
        thinking_model, clip, capfd, monkeypatch):
    model_dir, _ = thinking_model

    def chat(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO("what happens?\nand then?\n"))
        monkeypatch.setenv("NO_COLOR", "1")
        capfd.readouterr()
        status = cli.main(["chat", str(clip), "--model", str(model_dir), *THINKING_ARGS, *args])
        out, err = capfd.readouterr()
        return status, out, err

    status, out, err = chat("--jsonl")
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert all(record["reasoning"] and record["reasoning"] not in record["answer"] for record in records)
    status, out, err = chat("--show-reasoning")
    assert status == 0 and out.splitlines() == [record["answer"] for record in records]
    assert all(record["reasoning"] in err for record in records)
    status, out, quiet = chat()
    assert status == 0 and out.splitlines() == [record["answer"] for record in records]
    assert not any(record["reasoning"] in quiet for record in records)
