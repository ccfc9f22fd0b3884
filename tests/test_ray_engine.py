"""Runs the Ray engine's tests (`ray_cases.py`) where nothing can leave the machine.

Ray's head process tries a cloud metadata address (169.254.169.254) and resolves metadata.google.internal
when it starts, whatever its settings; traffic to any address but this machine's is not allowed here.
So the cases run under `unshare --net`, in a network namespace with only a loopback interface, where
such an attempt fails at once inside the sandbox.

That run is a pytest of its own, mostly processes starting (Ray, its actors) and importing torch, one core
at a time: `start_early` begins it as soon as the suite is collected, so it runs beside the other tests,
and the test here waits for it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_run: subprocess.Popen | None = None
_output = tempfile.TemporaryFile("w+")  # the run's output: a file, as nobody reads it until the test


def _isolation_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


RAY_INSTALLED = importlib.util.find_spec("ray") is not None


def start_early() -> None:
    """Start the isolated run (called by conftest once collection is done, or by the test)."""
    global _run
    if _run is None and RAY_INSTALLED and _isolation_works():
        command = (f"ip link set lo up && exec {sys.executable} -m pytest {HERE / 'ray_cases.py'} -q -p no:cacheprovider "
                   f"-o addopts='' --rootdir {HERE.parent}")
        # Not a pipe: a full one would stall the run until the test reads it.
        _run = subprocess.Popen(["unshare", "--net", "sh", "-c", command], stdout=_output,
                                stderr=subprocess.STDOUT, cwd=HERE.parent, env=os.environ, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        atexit.register(_stop, _run)


def _stop(run: subprocess.Popen) -> None:
    """A suite that ends before the test waited for the run (-x, Ctrl-C) leaves nothing of it behind."""
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.skipif(not RAY_INSTALLED, reason="ray is not installed (python -m pip install 'ray[data]>=2.60')")
@pytest.mark.skipif(not _isolation_works(), reason="no network namespace can be made here (unshare --net needs root)")
def test_ray_engine_cases_in_an_isolated_network():
    start_early()
    assert _run is not None
    _run.wait(timeout=900)
    _output.seek(0)
    output = _output.read()
    assert _run.returncode == 0, output[-8000:]
    assert " passed" in output and " failed" not in output, output[-2000:]
