"""Runs the Ray engine's tests (`ray_cases.py`) where nothing can leave the machine.

Ray's head process tries a cloud metadata address (169.254.169.254) and resolves metadata.google.internal
when it starts, whatever its settings; traffic to any address but this machine's is not allowed here.
So the cases run under `unshare --net`, in a network namespace with only a loopback interface, where
such an attempt fails at once inside the sandbox.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _isolation_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (python -m pip install 'ray[data]>=2.60')")
@pytest.mark.skipif(not _isolation_works(), reason="no network namespace can be made here (unshare --net needs root)")
def test_ray_engine_cases_in_an_isolated_network():
    command = (f"ip link set lo up && exec {sys.executable} -m pytest {HERE / 'ray_cases.py'} -q -p no:cacheprovider "
               f"-o addopts='' --rootdir {HERE.parent}")
    result = subprocess.run(["unshare", "--net", "sh", "-c", command], capture_output=True, text=True,
                            cwd=HERE.parent, env=os.environ, timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout, result.stdout[-2000:]
