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

from workload import dytok_script, timed, workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    dytok = dytok_script()

    with workload(args.videos) as (_, model, paths):
        clips = [str(path) for path in paths]
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
