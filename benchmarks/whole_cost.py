"""What whole-video questions (`ask --whole`) cost on one video: a first question (every window decoded,
encoded and scored) and later ones (every window read back from the vision cache), with the model's real
shape and random weights, in one process, so that the cache holds features of the same weights (across
processes `--random-weights` and `--cache-dir` exclude each other). Peak memory is the process's; run one
video per process to compare lengths.

    python benchmarks/whole_cost.py VIDEO [--model qwen3.5-0.8b] [--questions 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

from dytok_cli import Pipeline, Settings
from dytok_cli.config import Device, DType
from dytok_cli.media.cache import VisualCache
from dytok_cli.models import load_random_model
from dytok_cli.windowed import Segmentation, ask_whole, scan_layers, whole_video

QUESTIONS = ["what happens?", "is there a clock?", "what colour is the ball?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--model", default="qwen3.5-0.8b")
    parser.add_argument("--questions", type=int, default=2)
    args = parser.parse_args()
    model = load_random_model(args.model, device=Device.cpu, dtype=DType.auto)
    with tempfile.TemporaryDirectory() as cache:
        # The weights are passed in, the same for every question here: the cache is sound within this process.
        pipeline = Pipeline(Settings(model=args.model, max_new_tokens=8), model=model, prior=model,
                            cache=VisualCache(cache))
        for question in QUESTIONS[: args.questions]:
            started = time.perf_counter()
            whole = whole_video(pipeline, args.video, question, Segmentation(), scan_layers(pipeline),
                                pipeline.settings.frames)
            scanned = time.perf_counter()
            answer = ask_whole(pipeline, whole, question)
            finished = time.perf_counter()
            found = whole.scan
            print(json.dumps({
                "question": question, "duration_s": round(found.duration_s, 1), "windows": len(found.windows),
                "cached_windows": sum(window.cached for window in found.windows),
                "scan": {key: round(value, 2) for key, value in found.timings.items()},
                "scan_s": round(scanned - started, 2), "answer_s": round(finished - scanned, 2),
                "answer_vision_s": round(answer.plan.timings.get("vision_s", 0.0), 2),
                "total_s": round(finished - started, 2),
                "per_minute_s": round((finished - started) / (found.duration_s / 60), 2),
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            }), flush=True)


if __name__ == "__main__":
    main()
