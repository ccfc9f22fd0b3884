"""What a person reads on stderr: errors naming a video once, a Ctrl-C below a streamed answer, a
prompt before reading stdin, "Loading…" while torch imports, a progress line that fits, the note
when --max-frames thins an --fps sample, and one way to install an optional extra."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import run_on_a_terminal
from rich.console import Console

from dytok_cli import cli, render
from dytok_cli import pipeline as pipeline_module

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency there
    import tomli as tomllib

DYTOK = shutil.which("dytok")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_cli(argv: list[str], capsys, monkeypatch, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", stdin or io.StringIO(""))
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def model_args(model_dir) -> list[str]:
    return ["--model", str(model_dir), "--frames", "2", "--max-new-tokens", "2", "--decode-timeout", "0"]


def test_a_failed_video_is_named_once(tiny_llava_dir, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["ask", str(clip), "./missing.mp4", "-q", "what?", "--jsonl", *model_args(tiny_llava_dir)]
    status, out, err = run_cli(argv, capsys, monkeypatch)
    assert status == 1
    failed = json.loads(out.splitlines()[1])
    assert failed["error"] == "./missing.mp4: no such file"
    assert err.strip().splitlines() == ["dytok: error: ./missing.mp4: no such file"]


def test_interrupt_after_a_partly_streamed_answer_starts_a_new_line(tiny_llava_dir, clip, capsys, monkeypatch):
    def cut_short(self, video, question, on_text=None, **kwargs):
        on_text("The dog")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_module.Pipeline, "ask", cut_short)
    monkeypatch.setattr(render, "stdout_is_terminal", lambda: True)
    status, out, err = run_cli(["ask", str(clip), "what?", *model_args(tiny_llava_dir)], capsys, monkeypatch)
    assert status == 130
    assert out == "The dog\n"
    assert err.strip().splitlines() == ["dytok: error: interrupted after 0 of 1 answers"]


class TerminalStdin(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reading_paths_from_a_terminal_says_so_first(tiny_llava_dir, capsys, monkeypatch):
    status, out, err = run_cli(["ask", "-", *model_args(tiny_llava_dir)], capsys, monkeypatch, TerminalStdin(""))
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "reading video paths from stdin" in lines[0] and "one per line" in lines[0]
    assert lines[1] == "dytok: error: no video paths on stdin"


def test_empty_stdin_from_a_pipe_is_one_line(tiny_llava_dir, capsys, monkeypatch):
    status, out, err = run_cli(["ask", "-", *model_args(tiny_llava_dir)], capsys, monkeypatch)
    assert status == 2 and err.strip().splitlines() == ["dytok: error: no video paths on stdin"]


def test_fps_thinned_by_max_frames_says_how(tiny_llava_dir, clip, capsys, monkeypatch):
    # The clip: 24 frames at 8 fps (3 s); --fps 4 picks every other one (12), --max-frames 3 keeps the
    # first, middle and last of those: frames 0, 12 and 22, 1.375 s apart on average.
    argv = ["ask", str(clip), "what?", "--json", "--fps", "4", "--max-frames", "3", *model_args(tiny_llava_dir)]
    status, out, err = run_cli(argv, capsys, monkeypatch)
    assert status == 0, err
    assert [frame["timestamp"] for frame in json.loads(out)["frames"]] == [0.0, 1.5, 2.75]
    assert err.strip().splitlines() == [
        f"{clip}: --fps picks 12 frames of this 3.0 s video; --max-frames keeps 3 of them, about one every 1.38 s"
    ]


def test_fps_within_max_frames_says_nothing(tiny_llava_dir, clip, capsys, monkeypatch):
    argv = ["ask", str(clip), "what?", "--json", "--fps", "1", "--max-frames", "3", *model_args(tiny_llava_dir)]
    status, out, err = run_cli(argv, capsys, monkeypatch)
    assert status == 0 and err == ""


@pytest.mark.skipif(DYTOK is None, reason="the dytok script is not installed")
def test_loading_shows_on_a_terminal(tiny_llava_dir, clip):
    status, shown = run_on_a_terminal([DYTOK, "ask", str(clip), "what?", *model_args(tiny_llava_dir)], "stderr")
    assert status == 0
    assert "Loading…" in shown


def test_progress_line_keeps_count_and_eta_at_80_columns(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=screen, width=80, force_terminal=True, color_system=None))
    with render.BatchProgress(12) as progress:
        progress.start_video("/media/phone/DCIM/Camera/VID_20240501_183512_a_very_long_descriptive_name.mp4")
        progress.stage("Loading /home/someone/models/llava-hf/llava-onevision-qwen2-0.5b-ov-hf")
        for _ in range(3):
            progress.advance()
        progress._progress.refresh()
    frames = [ANSI.sub("", part) for part in re.split(r"[\r\n]", screen.getvalue())]
    line = next(part for part in reversed(frames) if " 3/12" in part)
    assert len(line.rstrip()) <= 80
    assert re.search(r"\d:\d\d:\d\d|-:--:--", line)  # the ETA
    assert "VID_2024" in line and "…" in line  # the name, shortened in the middle


def test_a_progress_line_is_one_plain_line_where_nothing_is_animated(monkeypatch):
    """Piped: the whole line, unwrapped however long, no colour or cursor codes; on a terminal nothing, as
    the live display says it there."""
    message = "summarize: /media/phone/DCIM/Camera/VID_20240501_183512.mp4: window 3/12 (0:40-1:00) described in 12.3 s"
    for terminal, shown in [(False, message + "\n"), (True, "")]:
        screen = io.StringIO()
        monkeypatch.setattr(render, "console", Console(file=screen, width=80, force_terminal=terminal))
        render.progress_line(message)
        assert screen.getvalue() == shown


def test_shorten_keeps_both_ends():
    assert render.shorten("short.mp4", 20) == "short.mp4"
    shortened = render.shorten("a_very_long_video_file_name.mp4", 16)
    assert len(shortened) == 16 and shortened.startswith("a_very_") and shortened.endswith("ame.mp4")


ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
EXTRAS = set(OPTIONAL)
# What each extra brings, by name: a hint never names these itself, so that every hint is the same command.
BROUGHT = {re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
           for requirements in OPTIONAL.values() for requirement in requirements if not requirement.startswith("dytok-cli")}


def install_commands() -> list[tuple[str, list[str]]]:
    """Every `pip install` in the package's code, the README and docs/: where, and the words it installs
    (up to a backtick, a bracket that closes it, a comment or the next command)."""
    found = []
    for path in [*sorted((ROOT / "src").rglob("*.py")), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        if path.suffix == ".md":
            text = " ".join(text.split())  # a command may wrap in prose
        for match in re.finditer(r"pip install([^`)#\n]*?)(?=&&|[`)#\n]|$)", text):
            words, skip = [], False
            for word in match.group(1).split():
                if not skip and not word.startswith("-"):
                    words.append(word.strip("'\""))
                skip = word in ("--index-url", "--extra-index-url")
            found.append((f"{path.relative_to(ROOT)}: {match.group(0)}", words))
    return found


def test_every_install_hint_adds_an_extra_of_the_distribution():
    """One way to add an optional part, everywhere: `python -m pip install 'dytok-cli[EXTRA]'` (`install_hint`),
    EXTRA one that pyproject.toml defines; never the packages an extra brings, named by hand."""
    hints = [name for path in (ROOT / "src").rglob("*.py") for name in re.findall(r"install_hint\(['\"]([^'\"]+)", path.read_text())]
    assert sorted(set(hints)) == ["plot", "ray", "serve"] and set(hints) <= EXTRAS
    commands = install_commands()
    assert len(commands) > 10
    for where, words in commands:
        for word in words:
            if "{" in word:  # install_hint's own template
                continue
            if extra := re.fullmatch(r"dytok-cli\[(.+)\]", word):
                assert extra.group(1) in EXTRAS, where
            elif word.startswith("."):  # a checkout installs itself only in the set-up, with the test extra
                assert word in (".", ".[test]"), where
            else:
                assert re.match(r"[A-Za-z0-9._-]+", word).group(0).lower() not in BROUGHT, where
    added = {extra.group(1) for _, words in commands for word in words if (extra := re.fullmatch(r"dytok-cli\[(\w[^]]*)\]", word))}
    assert added == {"lmms-eval", "plot", "ray", "serve"}  # every extra a user adds is named where it is needed
