"""What the end-to-end benchmarks run the installed `dytok` script on: a small random LLaVA-OneVision of
the real classes (384 px frames, so 196 tokens per frame as in the real model, with a small vision tower
and LLM) and generated test clips, in a scratch folder; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clips import write_clip  # noqa: E402
from tiny_models import build_llava_onevision  # noqa: E402


def dytok_script(install: str = "python -m pip install -e .") -> str:
    """The installed `dytok` script's path; exits with how to install it when there is none."""
    dytok = shutil.which("dytok")
    if dytok is None:
        sys.exit(f"install the package first: {install}")
    return dytok


@contextmanager
def workload(videos: int) -> Iterator[tuple[Path, Path, list[Path]]]:
    """(scratch folder, model directory, clips clip0.mp4 ... in the scratch folder), removed on exit."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_llava_onevision(root / "model", image_size=384, patch_size=14, text_layers=8, hidden=256, heads=4)
        clips = [write_clip(root / f"clip{i}.mp4", n_frames=60, size=(320, 240), fps=15.0) for i in range(videos)]
        yield root, model, clips


def timed(command: list[str], environment: dict[str, str] | None = None) -> tuple[float, str]:
    """Seconds a command took, offline, and its stdout."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(environment or {})})
    return time.perf_counter() - started, result.stdout
