"""The bounded decoder from any caller: a script without a main guard, code on stdin, the library's
`Settings`; and the cause when its worker fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dytok_cli
from dytok_cli.media import video
from dytok_cli.config import Settings
from dytok_cli.pipeline import Pipeline
from dytok_cli.media.video import VideoError, read_video, read_video_bounded

# What a user's first script looks like: top-level code, no `if __name__ == "__main__":`.
SCRIPT = """
from dytok_cli.media.video import read_video_bounded
frames = read_video_bounded({path!r}, timeout_s=60, num_frames=3)
print(list(frames.indices), frames.images.shape)
"""


def python(arguments: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    source = str(Path(dytok_cli.__file__).resolve().parents[1])  # this tree's `src`, not an installed copy
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *arguments], input=stdin, capture_output=True, text=True,
                          env=environment, timeout=120)


def expected(clip: Path) -> str:
    frames = read_video(clip, num_frames=3)
    return f"{list(frames.indices)} {frames.images.shape}"


def test_from_a_script_without_a_main_guard(clip, tmp_path):
    script = tmp_path / "first_try.py"
    script.write_text(textwrap.dedent(SCRIPT.format(path=str(clip))))
    result = python([str(script)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected(clip)


def test_from_code_on_stdin(clip):
    result = python(["-"], stdin=textwrap.dedent(SCRIPT.format(path=str(clip))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected(clip)


def test_a_failing_worker_says_why(clip, monkeypatch):
    monkeypatch.setattr(video, "_WORKER_BOOTSTRAP", "import sys; sys.exit('ImportError: libavcodec.so.61 not found')")
    with pytest.raises(VideoError) as error:
        read_video_bounded(clip, timeout_s=60, num_frames=2)
    message = str(error.value)
    assert str(clip) in message and "libavcodec.so.61 not found" in message and "\n" not in message


def test_a_killed_worker_says_by_what(clip, monkeypatch):
    monkeypatch.setattr(video, "_WORKER_BOOTSTRAP", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(VideoError, match="killed by signal 9"):
        read_video_bounded(clip, timeout_s=60, num_frames=2)


def test_without_an_interpreter_to_start_it_decodes_here(clip, monkeypatch):
    monkeypatch.setattr(sys, "executable", "")
    monkeypatch.setattr(subprocess, "Popen", None)  # any attempt to start a worker would fail
    assert read_video_bounded(clip, timeout_s=60, num_frames=2).indices == read_video(clip, num_frames=2).indices


def test_settings_decode_timeout_zero_decodes_in_process(clip, monkeypatch):
    settings = Settings(decode_timeout=0)
    assert settings.decode_timeout is None
    monkeypatch.setattr(subprocess, "Popen", None)
    assert Pipeline(settings).read(clip).indices == read_video(clip, num_frames=settings.frames).indices
    with pytest.raises(ValueError, match="--decode-timeout"):
        Settings(decode_timeout=-1)
