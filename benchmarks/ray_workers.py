"""The same batch on the local engine and on Ray with 1 and 2 workers, each a whole `dytok ask`
invocation (interpreter start, Ray start, model loads included), in one run on this machine.
A CPU worker gets one CPU and torch one thread in it, so the local engine is also run with one thread.

Runs on workload.py's small random LLaVA-OneVision (384 px frames, 196 tokens per frame) and test
clips; nothing is downloaded, and Ray runs locally. Needs `pip install -e ".[ray]"`.

    python benchmarks/ray_workers.py [--videos 8] [--frames 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import statistics

from workload import dytok_script, timed, workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case, interleaved; medians reported")
    args = parser.parse_args()
    dytok = dytok_script("python -m pip install -e '.[ray]'")

    cases = {  # name: (extra flags, extra environment)
        "local": ([], {}),
        "local, 1 torch thread": ([], {"OMP_NUM_THREADS": "1"}),
        "ray, 1 worker": (["--engine", "ray", "--workers", "1"], {}),
        "ray, 2 workers": (["--engine", "ray", "--workers", "2"], {}),
    }
    walls: dict[str, list[float]] = {name: [] for name in cases}
    answer_s: dict[str, list[float]] = {name: [] for name in cases}
    with workload(args.videos) as (_, model, paths):
        clips = [str(path) for path in paths]
        common = ["ask", *clips, "-q", "what happens?", "--model", str(model), "--frames", str(args.frames),
                  "--max-new-tokens", "16", "--jsonl"]
        answers = None
        for _ in range(args.repeat):
            for name, (extra, environment) in cases.items():
                wall, output = timed([dytok, *common, *extra], environment)
                records = [json.loads(line) for line in output.splitlines()]
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
