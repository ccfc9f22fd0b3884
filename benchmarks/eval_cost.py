"""What `dytok eval` costs per item, per method: one run over generated clips with a small random
LLaVA-OneVision of the real classes (384 px frames, so 196 tokens per frame as in the real model, with a
small vision tower and LLM); nothing is downloaded. Absolute times are this machine's; the shares and
ratios are what carries over.

    python benchmarks/eval_cost.py [--videos 4] [--questions 2] [--frames 8] [--ratios 0.5,0.25]
"""

from __future__ import annotations

import argparse
import json
import statistics

from workload import dytok_script, timed, workload

METHODS = ("none", "visionzip", "dytok", "dytok-fastv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--questions", type=int, default=2, help="questions per video")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--ratios", default="0.5,0.25")
    args = parser.parse_args()
    dytok = dytok_script()

    with workload(args.videos) as (root, model, clips):
        items = [
            {"id": f"{video}-{question}", "video": clip.name, "question": f"what happens {question}?",
             "options": ["a dog runs", "a cat sits", "the sky is blue", "a man opens the door"], "answer": "A"}
            for video, clip in enumerate(clips) for question in range(args.questions)
        ]
        data = root / "items.jsonl"
        data.write_text("".join(json.dumps(item) + "\n" for item in items))
        command = [dytok, "eval", str(data), "--output", str(root / "run"), "--model", str(model), "--frames", str(args.frames),
                   "--ratios", args.ratios, *(part for method in METHODS for part in ("--method", method)), "--json"]
        wall, output = timed(command)
        summary = json.loads(output)
        records = [json.loads(line) for line in (root / "run" / "predictions.jsonl").read_text().splitlines()]

    per_item = {}
    for record in records:
        per_item.setdefault(record["id"], record["timings"])  # every pair of an item carries its shared work
    shared = statistics.fmean(t["decode_s"] + t["vision_s"] for t in per_item.values())
    pairs = len(records) / len(items)
    print(f"{len(items)} items ({args.videos} videos x {args.questions} questions), {args.frames} frames, "
          f"{pairs:.0f} pairs per item; whole run {wall:.1f} s = {wall / len(items):.2f} s per item "
          f"(model loading included); decoding + vision {shared:.2f} s per item, once for all its pairs")
    print()
    print("| method | ratio | visual tokens | total s per answer | prefill s | total × | prefill × |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in summary["results"]:
        print(f"| {r['method']} | {r['ratio']:g} | {r['visual_tokens']:.0f} | {r['total_s']:.2f} | {r['prefill_s']:.3f} | "
              f"{r['speedup_total']:.2f} | {r['speedup_prefill']:.2f} |")


if __name__ == "__main__":
    main()
