"""Shared fixtures: tiny models of the real classes and small clips, built offline once per session."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

# Test helper modules (clips, tiny_models) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

# Nothing in the suite may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# One torch thread per process (this one and every dytok it starts), set before torch loads. The tiny
# models' operations are too small to gain from a second thread, and a thread that waits for another
# spins: on a 2-core machine shared with other jobs (load average 8-9), tests/test_batch.py,
# test_bench.py and test_visionzip.py took 46 s of wall time with one thread against 134-179 s with two
# (user CPU 18.5 s against 62-82 s). OMP_NUM_THREADS set beforehand wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from tiny_models import FAMILIES  # noqa: E402

# A smaller, differently initialised model of the same family: a stand-in for a 0.5B assistant.
ASSISTANT = dict(seed=1, text_layers=3, hidden=32, heads=2, kv_heads=1)


_STARTED_EARLY: list = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """A test module may define `start_early()`: work that runs beside the rest of the suite (in processes
    of its own) starts as soon as it is known that the module's tests will run; and `finish_early(stopped)`,
    called when this process's session ends (`stopped`: by Ctrl-C, -x or a failure that stops it)."""
    for module in {item.module for item in session.items if isinstance(item, pytest.Function)}:
        if callable(getattr(module, "start_early", None)):
            module.start_early()
            _STARTED_EARLY.append(module)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stopped = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop or session.shouldfail)
    for module in _STARTED_EARLY:
        if callable(getattr(module, "finish_early", None)):
            module.finish_early(stopped)


@pytest.fixture(scope="session")
def build_family(tmp_path_factory: pytest.TempPathFactory):
    """build_family(model_type, **options) -> the saved tiny model's directory, built once per session."""
    built: dict[tuple, Path] = {}

    def build(model_type: str, **options) -> Path:
        key = (model_type, *sorted(options.items()))
        if key not in built:
            folder = tmp_path_factory.mktemp("models") / model_type
            built[key] = FAMILIES[model_type](folder, **options)
        return built[key]

    return build


@pytest.fixture(scope="session")
def load_family(build_family):
    """load_family(model_type, dtype=float32, **options) -> its adapter, loaded through `from_pretrained` once per
    session."""
    from dytok_cli.config import Device, DType
    from dytok_cli.models import load_model

    loaded: dict[tuple[Path, DType], object] = {}

    def load(model_type: str, dtype: DType = DType.float32, **options):
        key = (build_family(model_type, **options), dtype)
        if key not in loaded:
            loaded[key] = load_model(str(key[0]), device=Device.cpu, dtype=dtype, trust_remote_code=False)
        return loaded[key]

    return load


@pytest.fixture(params=sorted(FAMILIES))
def family(request, build_family, load_family) -> SimpleNamespace:
    """Each supported family in turn: its name, tiny model directory and loaded adapter."""
    return SimpleNamespace(name=request.param, dir=build_family(request.param), adapter=load_family(request.param))


@pytest.fixture(scope="session")
def tiny_llava_dir(build_family) -> Path:
    return build_family("llava_onevision")


@pytest.fixture(scope="session")
def tiny_llava_assistant_dir(build_family) -> Path:
    return build_family("llava_onevision", **ASSISTANT)


@pytest.fixture(scope="session")
def tiny_llava(load_family):
    return load_family("llava_onevision")


@pytest.fixture(scope="session")
def tiny_qwen_dir(build_family) -> Path:
    return build_family("qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen(load_family):
    return load_family("qwen2_5_vl")


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clips import write_clip

    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", n_frames=24, size=(64, 48), fps=8.0)


@pytest.fixture(params=[0o022, 0o027], ids=lambda mask: f"umask{mask:03o}")
def umask(request) -> int:
    """The process's umask while the test runs (put back after). A file dytok leaves should then have the mode a
    plain open() gives a new file, 0o666 & ~umask: 0644 under the usual 022 (not tempfile's private 0600), and
    0640 under 027, which shows the mode follows the umask rather than being 0644 written down."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Every file and directory under `root` (and `root` itself if it is a file): path relative to `root`'s
    parent -> permission bits."""
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    return {str(path.relative_to(root.parent)): path.stat().st_mode & 0o7777 for path in paths}


def plain_modes(root: Path, umask: int) -> dict[str, int]:
    """What `modes(root)` should be: files as a plain open() makes them, directories as a plain mkdir()."""
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    return {str(path.relative_to(root.parent)): (0o777 if path.is_dir() else 0o666) & ~umask for path in paths}


@pytest.fixture
def dytok_here(capfd, monkeypatch):
    """dytok_here(*args, env=None) -> the `CompletedProcess` of `dytok args` run by `cli.main` in this
    process, as the script is run (no stdin, NO_COLOR, no DYTOK_MODEL): for what a command says and
    exits with; the installed script in a fresh process is for what only a process shows (a silent
    stderr, a terminal, signals), as it costs the imports every time."""
    from dytok_cli import cli

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        monkeypatch.delenv("DYTOK_MODEL", raising=False)
        for name, value in {"NO_COLOR": "1", **(env or {})}.items():
            monkeypatch.setenv(name, value)
        capfd.readouterr()
        status = cli.main(list(args))
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["dytok", *args], status, out, err)

    return run


def dytok_in_this_process(*args: str) -> subprocess.CompletedProcess:
    """`dytok ARGS` run by `cli.main` in this process, for a run a module's tests share (where the
    function-scoped `dytok_here` cannot serve): what it writes through Python's stdout and stderr, no stdin."""
    import contextlib

    from dytok_cli import cli

    out, err, stdin = io.StringIO(), io.StringIO(), sys.stdin
    sys.stdin = io.StringIO("")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(list(args))
    finally:
        sys.stdin = stdin
    return subprocess.CompletedProcess(["dytok", *args], status, out.getvalue(), err.getvalue())


def run_together(*runs: tuple[list[str], dict[str, str]], timeout: float = 120) -> list[tuple[subprocess.CompletedProcess, float]]:
    """Run each (argv, environment) in a process of its own, all at once, and return each one's result and
    seconds: fresh processes spend most of their time importing, one core each, so on a machine with
    cores to spare they take little longer together than the slowest alone."""
    from concurrent.futures import ThreadPoolExecutor

    def one(run: tuple[list[str], dict[str, str]]) -> tuple[subprocess.CompletedProcess, float]:
        argv, environment = run
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        return result, time.monotonic() - started

    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(one, runs))


def run_on_a_terminal(argv: list[str], stream: str) -> tuple[int, str]:
    """Run `argv` offline with its `stream` ("stdout" or "stderr") on a pseudo-terminal and the other
    piped: its exit status and what the terminal showed."""
    import pty

    controller, terminal = pty.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: terminal}
    process = subprocess.Popen(argv, **streams, stdin=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"})
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is done writing
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    process.communicate(timeout=120)
    return process.returncode, shown.decode(errors="replace")


@pytest.fixture
def endless_model(tiny_llava_dir, tmp_path) -> Path:
    """The tiny model without an end-of-sequence token: it answers until --max-new-tokens, so an answer
    is still running when Ctrl-C comes."""
    folder = tmp_path / "endless"
    shutil.copytree(tiny_llava_dir, folder)
    generation = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": None}))
    return folder
