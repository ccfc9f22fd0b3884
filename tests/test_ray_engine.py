"""Runs the Ray engine's tests (`ray_cases.py`) where nothing can leave the machine.

Ray's head process tries a cloud metadata address (169.254.169.254) and resolves metadata.google.internal
when it starts, whatever its settings; traffic to any address but this machine's is not allowed here.
So the cases run under `unshare --net`, in a network namespace with only a loopback interface, where
such an attempt fails at once inside the sandbox.

That run is a pytest of its own, mostly processes starting (Ray, its actors) and importing torch, one core
at a time: `start_early` begins it as soon as the suite is collected, so it runs beside the other tests,
and the test here waits for it. Under pytest-xdist every worker collects the whole suite: the first to get
here starts the run, and the test, in whichever worker, reads its result from files they share.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUN_TIMEOUT_S = 900
_run: subprocess.Popen | None = None  # in the process that started the run


def _isolation_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


RAY_INSTALLED = importlib.util.find_spec("ray") is not None


# The test session's id, which all its xdist workers share; a session of one process makes its own.
_SESSION = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex


def _shared_folder() -> Path:
    """One folder per test session, the same for all its workers."""
    folder = Path(tempfile.gettempdir()) / f"dytok-ray-cases-{_SESSION}"
    folder.mkdir(exist_ok=True)
    return folder


def start_early() -> None:
    """Start the isolated run once per test session (called by conftest once collection is done, or by the test)."""
    global _run
    if not (RAY_INSTALLED and _isolation_works()):
        return
    folder = _shared_folder()
    try:
        os.close(os.open(folder / "started", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return  # this process or another worker started it
    pytest_run = (f"{shlex.quote(sys.executable)} -m pytest {shlex.quote(str(HERE / 'ray_cases.py'))} -q "
                  f"-p no:cacheprovider -o addopts='' --rootdir {shlex.quote(str(HERE.parent))}")
    status = shlex.quote(str(folder / "returncode"))
    # The exit status is written last, through a rename: a test that sees the file sees the whole output.
    command = f"ip link set lo up && {pytest_run}; echo $? > {status}.part && mv {status}.part {status}"
    with open(folder / "output", "w") as output:  # not a pipe: a full one would stall the run
        _run = subprocess.Popen(["unshare", "--net", "sh", "-c", command], stdout=output, stderr=subprocess.STDOUT,
                                cwd=HERE.parent, env=os.environ, stdin=subprocess.DEVNULL, start_new_session=True)
    atexit.register(_stop)


def finish_early(stopped: bool) -> None:
    """At the end of this process's session: a worker that started the run outlives it, as the test waiting
    for it may be in another worker; a session stopped early (Ctrl-C, -x) leaves nothing of it behind."""
    if _run is not None and not stopped:
        _run.wait(timeout=RUN_TIMEOUT_S)
    _stop()


def _stop() -> None:
    if _run is not None and _run.poll() is None:
        os.killpg(_run.pid, signal.SIGKILL)
        _run.wait()


@pytest.mark.skipif(not RAY_INSTALLED, reason="ray is not installed (python -m pip install 'dytok-cli[ray]')")
@pytest.mark.skipif(not _isolation_works(), reason="no network namespace can be made here (unshare --net needs root)")
def test_ray_engine_cases_in_an_isolated_network():
    start_early()
    folder = _shared_folder()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (folder / "returncode").exists():
        assert time.monotonic() < deadline, "the Ray cases did not end in time"
        assert _run is None or _run.poll() is None or (folder / "returncode").exists(), "the Ray run was killed"
        time.sleep(0.5)
    returncode = int((folder / "returncode").read_text())
    output = (folder / "output").read_text()
    assert returncode == 0, output[-8000:]
    assert " passed" in output and " failed" not in output, output[-2000:]
