"""The same batch on the local engine and on Ray with 1 and 2 workers, each a whole `dytok ask`
invocation (interpreter start, Ray start, model loads included), in one run on this machine.
A CPU worker gets one CPU and torch one thread in it, so the local engine is also run with one thread.

Builds the small random LLaVA-OneVision of batch_reuse.py (384 px frames, 196 tokens per frame) and
writes test clips; nothing is downloaded, and Ray runs locally. Needs `pip install -e ".[ray]"`.

    python benchmarks/ray_workers.py [--videos 8] [--frames 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clips import write_clip  # noqa: E402
from tiny_models import build_llava_onevision  # noqa: E402


def timed(command: list[str], environment: dict[str, str]) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **environment})
    return time.perf_counter() - started, [json.loads(line) for line in result.stdout.splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case, interleaved; medians reported")
    args = parser.parse_args()
    dytok = shutil.which("dytok")
    if dytok is None:
        sys.exit("install the package first: python -m pip install -e '.[ray]'")

    cases = {  # name: (extra flags, extra environment)
        "local": ([], {}),
        "local, 1 torch thread": ([], {"OMP_NUM_THREADS": "1"}),
        "ray, 1 worker": (["--engine", "ray", "--workers", "1"], {}),
        "ray, 2 workers": (["--engine", "ray", "--workers", "2"], {}),
    }
    walls: dict[str, list[float]] = {name: [] for name in cases}
    answer_s: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_llava_onevision(root / "model", image_size=384, patch_size=14, text_layers=8, hidden=256, heads=4)
        clips = [str(write_clip(root / f"clip{i}.mp4", n_frames=60, size=(320, 240), fps=15.0)) for i in range(args.videos)]
        common = ["ask", *clips, "-q", "what happens?", "--model", str(model), "--frames", str(args.frames),
                  "--max-new-tokens", "16", "--jsonl"]
        answers = None
        for _ in range(args.repeat):
            for name, (extra, environment) in cases.items():
                wall, records = timed([dytok, *common, *extra], environment)
                walls[name].append(wall)
                answer_s[name].append(sum(record["timings"]["total_s"] for record in records))
                texts = [record["answer"] for record in records]
                assert answers in (None, texts), f"{name} answered differently"
                answers = texts

    base = statistics.median(walls["local"])
    print(f"| `dytok ask` on {args.videos} videos, {args.frames} frames each | wall | answering (sum of total_s) | vs local |")
    print("| --- | --- | --- | --- |")
    for name in cases:
        wall = statistics.median(walls[name])
        print(f"| {name} | {wall:.1f} s | {statistics.median(answer_s[name]):.1f} s | {wall / base:.2f}x the time |")


if __name__ == "__main__":
    main()
