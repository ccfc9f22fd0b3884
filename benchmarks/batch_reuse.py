"""What one process saves over many: N videos in one `dytok ask` vs N separate invocations, and the
second question on a video vs the first (which also pays for decoding and the vision encoder).

Builds a small random LLaVA-OneVision of the real classes (384 px frames, so 196 tokens per frame as
in the real model, with a small vision tower and LLM) and writes test clips; nothing is downloaded.
Ratios are measured in one run on this machine; absolute times are not comparable across machines.

    python benchmarks/batch_reuse.py [--videos 4] [--frames 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clips import write_clip  # noqa: E402
from tiny_models import build_llava_onevision  # noqa: E402


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    dytok = shutil.which("dytok")
    if dytok is None:
        sys.exit("install the package first: python -m pip install -e .")

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_llava_onevision(root / "model", image_size=384, patch_size=14, text_layers=8, hidden=256, heads=4)
        clips = [str(write_clip(root / f"clip{i}.mp4", n_frames=60, size=(320, 240), fps=15.0)) for i in range(args.videos)]
        common = ["--model", str(model), "--frames", str(args.frames), "--max-new-tokens", "16", "--jsonl"]

        separate = sum(timed([dytok, "ask", clip, "-q", "what happens?", *common])[0] for clip in clips)
        together, _ = timed([dytok, "ask", *clips, "-q", "what happens?", *common])
        _, output = timed([dytok, "ask", clips[0], "-q", "what happens?", "-q", "is there a person?", *common])
        first, second = (json.loads(line)["timings"]["total_s"] for line in output.splitlines())

    print(f"| measurement ({args.videos} videos, {args.frames} frames each) | value |")
    print("| --- | --- |")
    print(f"| {args.videos} separate invocations | {separate:.1f} s |")
    print(f"| one invocation, {args.videos} videos | {together:.1f} s |")
    print(f"| one process vs separate | {together / separate:.2f}x the time ({separate / together:.1f}x faster) |")
    print(f"| first question on a video (total_s) | {first:.2f} s |")
    print(f"| second question, vision reused (total_s) | {second:.2f} s |")
    print(f"| second vs first | {second / first:.2f}x the time ({first / second:.1f}x faster) |")


if __name__ == "__main__":
    main()
