"""How far bfloat16 drifts from float32 on the same weights: vision features, selector scores, the
keyframe prior's frame weights, the budgets they give, the tokens kept, and the answer's tokens;
and how much faster a first question is (the default method, vision included).

    python benchmarks/dtype_drift.py [--model llava-ov-0.5b] [--frames 8] [--ratio 0.25] [--video CLIP]
                                     [--repeat 2]

`--model` is a shipped shape preset (random weights from `--seed`, no download) or a model directory
(its own weights). The bfloat16 model is a copy of the float32 one cast to bfloat16, so the two
differ only in arithmetic. Without `--video` a 320x240 test clip is written. One process, CPU.
The timed first questions alternate between the dtypes (after the drift runs, which warm both up),
so a shared machine's drift in speed falls on both alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clips import write_clip  # noqa: E402

from dytok_cli.config import Device, DType, Method, Settings  # noqa: E402
from dytok_cli.models import VideoModel, load_model, load_random_model, presets  # noqa: E402
from dytok_cli.pipeline import Pipeline  # noqa: E402

QUESTION = "What happens in this video?"
METHODS = (Method.dytok, Method.dytok_fastv, Method.visionzip, Method.none)


def relative_error(low: torch.Tensor, reference: torch.Tensor) -> float:
    """||low - reference|| / ||reference||, in float64."""
    reference = reference.double()
    return float((low.double() - reference).norm() / reference.norm())


def kept_overlap(low: torch.Tensor, reference: torch.Tensor) -> float:
    """Share of the float32 run's kept tokens that the bfloat16 run kept too."""
    kept = set(reference.tolist())
    return len(kept & set(low.tolist())) / len(kept)


def first_difference(low: list[int], reference: list[int]) -> str:
    if low == reference:
        return "identical"
    at = next((i for i, (a, b) in enumerate(zip(low, reference)) if a != b), min(len(low), len(reference)))
    return f"differ from token {at}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llava-ov-0.5b", help="a preset (random weights) or a model directory")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video", type=Path)
    parser.add_argument("--repeat", type=int, default=2, help="timed first questions per dtype")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    if args.model in presets():
        reference = load_random_model(args.model, device=Device.cpu, dtype=DType.float32)
    else:
        reference = load_model(args.model, device=Device.cpu, dtype=DType.float32, trust_remote_code=False)
    low: VideoModel = type(reference)(reference.name, copy.deepcopy(reference.model).to(torch.bfloat16), reference.processor)
    models = {"float32": reference, "bfloat16": low}

    with tempfile.TemporaryDirectory() as scratch:
        video = args.video or write_clip(Path(scratch) / "clip.mp4", n_frames=60, size=(320, 240), fps=15.0)
        results: dict[str, dict] = {}
        for dtype, model in models.items():
            common = dict(model=args.model, frames=args.frames, ratio=args.ratio, device=Device.cpu,
                          dtype=DType(dtype), max_new_tokens=args.max_new_tokens, decode_timeout=None)
            started = time.perf_counter()
            visual = Pipeline(Settings(**common, method=Method.none), model=model).prepare(video)
            vision_s = time.perf_counter() - started
            plans, answers = {}, {}
            for method in METHODS:
                pipeline = Pipeline(Settings(**common, method=method), model=model)
                plans[method] = pipeline.plan(visual, QUESTION)
                answers[method] = pipeline.answer(plans[method]).token_ids
            results[dtype] = {"visual": visual, "plans": plans, "answers": answers, "vision_s": vision_s}
            print(f"{dtype}: vision pass {vision_s:.1f} s", file=sys.stderr)
        timings: dict[str, list[dict[str, float]]] = {dtype: [] for dtype in models}
        measures = ("vision_s", "prefill_s", "decode_tok_s", "total_s")
        for index in range(args.repeat):
            for dtype in list(models)[:: 1 if index % 2 == 0 else -1]:
                settings = Settings(model=args.model, frames=args.frames, ratio=args.ratio, device=Device.cpu,
                                    dtype=DType(dtype), max_new_tokens=args.max_new_tokens, decode_timeout=None)
                answer = Pipeline(settings, model=models[dtype]).ask(video, QUESTION, force_length=True)
                decoding = answer.timings["generate_s"] - answer.timings["prefill_s"]
                timings[dtype].append({**answer.timings, "decode_tok_s": (len(answer.token_ids) - 1) / decoding})

    full, half = results["float32"], results["bfloat16"]
    encoded, encoded_low = full["visual"].encoded, half["visual"].encoded
    print(f"{args.model}, {encoded.num_frames} frames x {encoded.tokens_per_frame} tokens, ratio {args.ratio:g}, "
          f"bfloat16 copy of the float32 weights\n")
    print("| quantity | bfloat16 vs float32 |")
    print("| --- | --- |")
    print(f"| vision features, relative error | {relative_error(encoded_low.features, encoded.features):.4f} |")
    print(f"| selector attention received, relative error | {relative_error(encoded_low.attention, encoded.attention):.4f} |")
    print(f"| selector key metric, relative error | {relative_error(encoded_low.keys, encoded.keys):.4f} |")
    for method in METHODS:
        plan, plan_low = full["plans"][method], half["plans"][method]
        if method in (Method.dytok, Method.dytok_fastv):
            weights = relative_error(plan_low.weights, plan.weights)
            changed = int((plan_low.budgets != plan.budgets).sum())
            moved = int((plan_low.budgets - plan.budgets).abs().sum()) // 2
            print(f"| {method.value}: prior frame weights, relative error | {weights:.4f} "
                  f"(largest weight {float(plan.weights.max()):.4f} vs {float(plan_low.weights.max()):.4f}) |")
            print(f"| {method.value}: budgets | {changed} of {len(plan.budgets)} frames changed, {moved} tokens moved "
                  f"({plan.budgets.tolist()} vs {plan_low.budgets.tolist()}) |")
        if method is not Method.none:
            print(f"| {method.value}: kept tokens shared | {kept_overlap(plan_low.kept_index, plan.kept_index):.1%} |")
        answer = first_difference(half["answers"][method], full["answers"][method])
        print(f"| {method.value}: {args.max_new_tokens} greedy answer tokens | {answer} |")
    if args.repeat:
        print(f"\nA first question, {Settings().method.value} at ratio {args.ratio:g}, {args.max_new_tokens} new tokens "
              "(end-of-sequence ignored), "
              f"median of {args.repeat}, interleaved:\n")
        print("| dtype | vision s | prefill s | decode tok/s | total s |")
        print("| --- | --- | --- | --- | --- |")
        medians = {dtype: {key: statistics.median(run[key] for run in runs) for key in measures}
                   for dtype, runs in timings.items()}
        for dtype, median in medians.items():
            print(f"| {dtype} | " + " | ".join(f"{median[key]:.2f}" for key in measures) + " |")
        # Seconds shrink and tokens per second grow as a dtype gets faster.
        speedup = {key: (medians["bfloat16"][key] / medians["float32"][key] if key == "decode_tok_s"
                         else medians["float32"][key] / medians["bfloat16"][key]) for key in measures}
        print("| bfloat16 speed-up | " + " | ".join(f"{speedup[key]:.2f}x" for key in measures) + " |")


if __name__ == "__main__":
    main()
