"""A newcomer's first minutes: a clip made here, `--random-weights` on every command that loads a model,
errors that name the real cause at once (before torch loads where no model is needed), and a --help that
lists what a person uses first, first."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer
from conftest import modes, plain_modes

from dytok_cli import cli, render
from dytok_cli.apps.eval import manifest
from dytok_cli.config import Settings, preset_names
from dytok_cli.media.video import read_video

NOTE = "--random-weights: the model's weights are random, so its answers and budgets are noise"


@pytest.fixture(scope="module")
def made_clip(tmp_path_factory):
    from dytok_cli.apps.make_clip import make_clip

    path = tmp_path_factory.mktemp("made") / "clip.mp4"
    make_clip(path, seconds=1.0, width=64, height=48, force=False)
    return path


def test_make_clip_writes_a_video_every_backend_reads(dytok_here, tmp_path):
    path = tmp_path / "clip.mp4"
    # 128 wide, not 96: decord2 3.4.0 fails on videos 32, 48, 96 or 144 pixels wide on some CPUs (an AMD
    # EPYC with AVX-512; 64, 80, 112, 128 and 160 decode there) and reads 96 on others (CI's).
    result = dytok_here("make-clip", str(path), "--seconds", "2", "--size", "128x96")
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr == f"wrote {path}: 16 frames, 128x96, 2 s\n"
    for backend in ("decord", "pyav", "opencv"):
        frames = read_video(path, num_frames=16, backend=backend)
        assert list(frames.indices) == list(range(16)) and frames.images[0].shape == (96, 128, 3)
        assert frames.timestamps[1] == pytest.approx(1 / 8)
    first, last = read_video(path, num_frames=16).images[[0, -1]]
    assert (first > 240).all(axis=-1).sum() == 0 and (last > 240).all(axis=-1).sum() > 0  # the square, from the middle on


def test_make_clip_gives_the_clip_the_mode_open_would(dytok_here, tmp_path, umask):
    path = tmp_path / "clip.mp4"
    assert dytok_here("make-clip", str(path), "--seconds", "0.5", "--size", "64x48").returncode == 0
    assert modes(path) == plain_modes(path, umask) and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


@pytest.mark.parametrize("args, fragment", [
    ([], "exists (use --force to replace it)"),
    (["--size", "320x241"], "--size is WIDTHxHEIGHT in pixels, even numbers"),
    (["--seconds", "0"], "--seconds must be more than 0"),
])
def test_make_clip_refuses_to_overwrite_or_a_bad_shape(dytok_here, tmp_path, args, fragment):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"mine")
    result = dytok_here("make-clip", str(path), *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr
    assert path.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_random_weights_ask_answers_offline_and_says_the_answers_are_noise(dytok_here, tiny_llava_dir, made_clip):
    result = dytok_here("ask", str(made_clip), "what?", "--model", str(tiny_llava_dir), "--random-weights",
                        "--frames", "2", "--max-new-tokens", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [NOTE + " (its speed and memory are the real shape's)"]
    record = json.loads(result.stdout)
    assert record["error"] is None and record["answer"].startswith("token ids ")  # no tokenizer: the ids
    assert len(record["answer"].split()) == 2 + 3


def test_random_weights_answer_reaches_a_terminal_whole(dytok_here, tiny_llava_dir, made_clip, monkeypatch):
    """Streaming needs a tokenizer's words; a random-weight answer comes whole once generated."""
    monkeypatch.setattr(render, "stdout_is_terminal", lambda: True)
    result = dytok_here("ask", str(made_clip), "what?", "--model", str(tiny_llava_dir), "--random-weights",
                        "--frames", "2", "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"token ids( \d+){3}\n", result.stdout)


def test_random_weights_inspect(dytok_here, tiny_llava_dir, made_clip):
    result = dytok_here("inspect", str(made_clip), "where is the ball?", "--model", str(tiny_llava_dir),
                        "--random-weights", "--frames", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(NOTE) and json.loads(result.stdout)["visual_tokens"]["full"] == 32


def test_an_eval_run_with_random_weights_is_not_resumed_as_a_real_one(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("")
    real, noise = (manifest(data, [Settings(model="qwen3.5-0.8b", random_weights=random)], None)
                   for random in (False, True))
    assert noise["settings"] == {**real["settings"], "random_weights": True}
    assert "random_weights" not in real["settings"]  # a run made before the flag still resumes


def test_random_weights_with_a_cache_dir_is_refused(dytok_here, made_clip, tmp_path):
    result = dytok_here("ask", str(made_clip), "--random-weights", "--model", "qwen3.5-0.8b", "--cache-dir", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--random-weights draws new weights every run: drop one of them" in result.stderr


# Each of these is answered by torch-free code, in one line: they run in one fresh process, which then
# tells whether torch was imported.
BEFORE_TORCH = [
    (["ask", "missing.mp4"], "missing.mp4: no such file"),
    (["ask", "a.mp4", "-r", "25%"], "--ratio is a fraction of the visual tokens in (0, 1]: write 0.25, not '25%'"),
    (["ask", "a.mp4", "--frames", "many"], "--frames: not a whole number"),
    (["ask", "a.mp4", "--model", "qwen3.5-08b", "--random-weights"],
     "--model 'qwen3.5-08b' is not a preset; did you mean qwen3.5-0.8b? presets: " + ", ".join(preset_names())),
    (["inspect", "a.mp4", "--random-weights", "--prior-model", "tiny", "--method", "dytok"],
     "--prior-model 'tiny' is not a preset; presets: "),
    (["bench", "fake.mp4"], "fake.mp4: is not a video file (no known container format)"),
    # A file that is no video is refused before a model (or torch) loads, by every command that loads one.
    (["ask", "fake.mp4", "what?"], "fake.mp4: is not a video file (no known container format)"),
    (["ask", "fake.mp4", "--json"], "fake.mp4: is not a video file (no known container format)"),
    (["inspect", "fake.mp4"], "fake.mp4: is not a video file (no known container format)"),
    (["chat", "fake.mp4"], "fake.mp4: is not a video file (no known container format)"),
    (["summarize", "fake.mp4"], "fake.mp4: is not a video file (no known container format)"),
    (["bench", "emptydir"], "emptydir: is a directory; bench measures one video file"),
    (["bench", "missing.mp4"], "missing.mp4: no such file"),
]


def test_errors_that_need_no_model_are_one_line_before_torch_loads(tmp_path):
    (tmp_path / "fake.mp4").write_text("not a video")
    (tmp_path / "emptydir").mkdir()
    script = (
        "import sys, json\nfrom dytok_cli import cli\n"
        f"for argv in {[argv for argv, _ in BEFORE_TORCH]!r}:\n"
        "    code = cli.main(argv)\n"
        "    print(json.dumps([code, 'torch' in sys.modules]), flush=True)\n"
        "    print('--', file=sys.stderr, flush=True)\n"
        "cli.main(['ask', '--help'])\n"
        "print(json.dumps([0, 'torch' in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**__import__("os").environ, "NO_COLOR": "1", "COLUMNS": "1000"})
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
    assert outcomes == [[2, False]] * len(BEFORE_TORCH) + [[0, False]], result.stderr
    messages = result.stderr.split("--\n")[:-1]
    for (argv, expected), message in zip(BEFORE_TORCH, messages, strict=True):
        assert message.count("\n") == 1 and message.startswith(f"dytok: error: {expected}"), (argv, message)


def test_a_torchvision_built_for_another_torch_is_named(dytok_here, monkeypatch):
    """transformers reports the failed import of torchvision's operators as a missing PreTrainedModel."""

    def failing_import(*args, **kwargs):
        try:
            raise RuntimeError("operator torchvision::nms does not exist")
        except RuntimeError as cause:
            raise ModuleNotFoundError("Could not import module 'PreTrainedModel'. Are this object's requirements "
                                      "defined correctly?") from cause

    versions = {"torch": "2.14.1+cpu", "torchvision": "0.24.0"}
    monkeypatch.setattr("importlib.metadata.version", versions.__getitem__)
    monkeypatch.setattr("dytok_cli.media.inputs.split_arguments", failing_import)
    result = dytok_here("ask", "a.mp4")
    assert result.returncode == 1
    assert result.stderr == (
        "dytok: error: torchvision 0.24.0 was not built for torch 2.14.1+cpu (operator torchvision::nms does not "
        "exist): install the one that was, python -m pip install 'torchvision==0.29.*' --index-url "
        "https://download.pytorch.org/whl/cpu\n")


def all_options():
    group = typer.main.get_command(cli.app)
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                yield name, param


def test_every_option_names_a_help_panel():
    misplaced = [(command, param.opts[0], getattr(param, "rich_help_panel", None)) for command, param in all_options()
                 if getattr(param, "rich_help_panel", None) not in cli.HELP_PANELS]
    assert misplaced == []


def test_ask_help_lists_what_is_used_first_first(dytok_here):
    text = dytok_here("ask", "--help").stdout
    headings = [line.rstrip(":") for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings == ["Arguments", *(panel for panel in cli.HELP_PANELS if panel != cli.SERVER)]
    flags = [line.split()[0].rstrip(",") for line in text.splitlines() if line.startswith("  -")]
    assert flags.index("-q") < flags.index("-m") < flags.index("--method") < flags.index("-n") < flags.index("--json")
    ray = ["--workers", "--gpus-per-worker", "--ray-address", "--output", "--format", "--force"]
    assert flags[-len(ray):] == ray  # Ray's flags come last
    assert len(text.splitlines()) <= 90  # a screen and a bit, not a manual: docs/ask.md has the rest
    assert all(len(line) <= 80 for line in text.splitlines())
