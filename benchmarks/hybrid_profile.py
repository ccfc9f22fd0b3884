"""Where a hybrid decoder's first question goes on a CPU: the share of the Gated DeltaNet layers'
reference kernels (`transformers`' PyTorch fallbacks) in the prefill and in decoding (issue 24).

    python benchmarks/hybrid_profile.py [--model qwen3.5-0.8b] [--dtype float32 --dtype bfloat16]
                                        [--frames 8] [--max-new-tokens 16] [--threads N] [--video CLIP]

`--model` is a shipped shape preset with a hybrid decoder (random weights from `--seed`, no download).
The bfloat16 model is a copy of the float32 one cast to bfloat16. Per dtype: one untimed first question
(warm-up), then one timed, the default method and ratio, `--max-new-tokens` forced. Without `--video` a
320x240 test clip is written. `--threads` sets `torch.set_num_threads` (default: torch's own).

How the kernels are timed. With the `kernels` library installed, `transformers` gives every
`Qwen3_5GatedDeltaNet` its own wrapper module per kernel function (`linear_attn._kernel_funcs`, what
`kernels.kernelize` swaps); forward hooks on those wrappers time each call (a CPU runs them
synchronously), and hooks on the `linear_attn` modules time the whole layer (projections, norm and gate
included). Hooks are removed before the next dtype. Nothing is patched. Without `kernels` only the whole
layers are timed.

Prefill or decoding. Prompt kernels (`chunk_gated_delta_rule`, `causal_conv1d_fn`) run in the prefill;
one-token kernels (`fused_recurrent_gated_delta_rule`, `causal_conv1d_update`) run once a linear layer
per decoding step, and also for the prompt's last token (the single pass runs it alone): the last
(new tokens - 1) x linear layers calls of each are decoding's, the others the prefill's. Shares are of
the first question's `prefill_s` and of `generate_s - prefill_s`.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clips import write_clip  # noqa: E402

from dytok_cli.config import Device, DType, Settings  # noqa: E402
from dytok_cli.models import VideoModel, linear_attention, load_random_model  # noqa: E402
from dytok_cli.pipeline import Pipeline  # noqa: E402

QUESTION = "What happens in this video?"
PROMPT_KERNELS = ("chunk_gated_delta_rule", "causal_conv1d_fn")
TOKEN_KERNELS = ("fused_recurrent_gated_delta_rule", "causal_conv1d_update")
LAYER = "linear_attn (whole layer)"


class CallTimer:
    """Forward hooks recording (name, seconds) of every call, in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.handles: list = []
        self._started: dict[int, float] = {}

    def watch(self, name: str, module: torch.nn.Module) -> None:
        def before(mod, args, kwargs):
            self._started[id(mod)] = time.perf_counter()

        def after(mod, args, kwargs, output):
            self.calls.append((name, time.perf_counter() - self._started.pop(id(mod))))

        self.handles += [module.register_forward_pre_hook(before, with_kwargs=True),
                         module.register_forward_hook(after, with_kwargs=True)]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def linear_layers(model: VideoModel) -> list[torch.nn.Module]:
    return [layer.linear_attn for layer in model.language_model().layers if hasattr(layer, "linear_attn")]


def profile(model: VideoModel, dtype: str, video: Path, args: argparse.Namespace) -> None:
    settings = Settings(model=args.model, frames=args.frames, device=Device.cpu, dtype=DType(dtype),
                        max_new_tokens=args.max_new_tokens, decode_timeout=None)
    pipeline = Pipeline(settings, model=model)
    pipeline.ask(video, QUESTION, force_length=True)  # warm-up, untimed
    timer = CallTimer()
    layers = linear_layers(model)
    for module in layers:
        timer.watch(LAYER, module)
        for name, kernel in getattr(module, "_kernel_funcs", {}).items():
            if name in PROMPT_KERNELS + TOKEN_KERNELS:
                timer.watch(name, kernel)
    try:
        answer = pipeline.ask(video, QUESTION, force_length=True)
    finally:
        timer.remove()
    prefill = answer.timings["prefill_s"]
    decoding = answer.timings["generate_s"] - prefill
    steps = len(answer.token_ids) - 1
    decode_calls = steps * len(layers)  # the last this many one-token calls of each kernel are decoding's
    totals: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    by_name: dict[str, list[float]] = defaultdict(list)
    for name, seconds in timer.calls:
        by_name[name].append(seconds)
    for name, durations in by_name.items():
        split = len(durations) - decode_calls if name in TOKEN_KERNELS + (LAYER,) else len(durations)
        for index, seconds in enumerate(durations):
            phase = "prefill" if index < split else "decoding"
            totals[phase, name] += seconds
            counts[phase, name] += 1
    print(f"\n{args.model}, {dtype}, {torch.get_num_threads()} threads: prefill {prefill:.2f} s, "
          f"decoding {decoding:.2f} s for {steps} steps ({steps / decoding:.2f} tokens/s), "
          f"{len(layers)} linear layers\n")
    print("| phase | what | calls | seconds | share |")
    print("| --- | --- | ---: | ---: | ---: |")
    for phase, whole, kernels in (("prefill", prefill, PROMPT_KERNELS + TOKEN_KERNELS), ("decoding", decoding, TOKEN_KERNELS)):
        kernel_sum = 0.0
        for name in kernels:
            if counts[phase, name]:
                kernel_sum += totals[phase, name]
                print(f"| {phase} | {name} | {counts[phase, name]} | {totals[phase, name]:.2f} | "
                      f"{totals[phase, name] / whole:.0%} |")
        if kernel_sum:
            print(f"| {phase} | reference kernels, together | | {kernel_sum:.2f} | {kernel_sum / whole:.0%} |")
        print(f"| {phase} | {LAYER} | {counts[phase, LAYER]} | {totals[phase, LAYER]:.2f} | "
              f"{totals[phase, LAYER] / whole:.0%} |")


def side_by_side(models: dict[str, VideoModel], video: Path, args: argparse.Namespace) -> None:
    """Reference convolutions vs dytok's float32 ones (`models/linear_attention.py`) on the same model,
    alternating, `--repeat` first questions each; then the logits of `generate` on the same prompt."""
    print(f"\nSide by side, {args.model}, {torch.get_num_threads()} threads, median of {args.repeat} first questions "
          f"({args.max_new_tokens} new tokens)\n")
    print("| dtype | convolution | prefill s | tokens/s | total s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for dtype, model in models.items():
        settings = Settings(model=args.model, frames=args.frames, device=Device.cpu, dtype=DType(dtype),
                            max_new_tokens=args.max_new_tokens, decode_timeout=None)
        pipeline = Pipeline(settings, model=model)
        runs: dict[str, list[dict[str, float]]] = {"reference": [], "float32": []}
        for index in range(args.repeat + 1):  # the first round warms both up
            for variant in list(runs)[:: 1 if index % 2 == 0 else -1]:
                (linear_attention.install if variant == "float32" else linear_attention.remove)(model.model)
                answer = pipeline.ask(video, QUESTION, force_length=True)
                decoding = answer.timings["generate_s"] - answer.timings["prefill_s"]
                if index:
                    runs[variant].append({**answer.timings, "tok_s": (len(answer.token_ids) - 1) / decoding})
        medians = {variant: {key: statistics.median(run[key] for run in timings) for key in timings[0]}
                   for variant, timings in runs.items()}
        for variant, median in medians.items():
            print(f"| {dtype} | {variant} | {median['prefill_s']:.2f} | {median['tok_s']:.2f} | "
                  f"{median['total_s']:.2f} |")
        reference, ours = medians["reference"], medians["float32"]
        print(f"| {dtype} | speed-up | {reference['prefill_s'] / ours['prefill_s']:.2f}x | "
              f"{ours['tok_s'] / reference['tok_s']:.2f}x | {reference['total_s'] / ours['total_s']:.2f}x |")
    print("\nLogits of `generate` on one synthetic text prompt (float32 convolution vs reference):\n")
    print("| dtype | prompt tokens | steps | same tokens | max abs logit difference, first | all steps |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    generator = torch.Generator().manual_seed(args.seed)
    for dtype, model in models.items():
        ids = torch.randint(0, 1000, (1, args.prompt_tokens), generator=generator)
        outputs = {}
        for variant in ("reference", "float32"):
            (linear_attention.install if variant == "float32" else linear_attention.remove)(model.model)
            with torch.inference_mode():
                outputs[variant] = model.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.logit_steps,
                    do_sample=False, output_logits=True, return_dict_in_generate=True)
        reference, ours = outputs["reference"], outputs["float32"]
        same = torch.equal(reference.sequences, ours.sequences)
        differences = [float((a.float() - b.float()).abs().max()) for a, b in zip(reference.logits, ours.logits)]
        print(f"| {dtype} | {args.prompt_tokens} | {len(differences)} | {'yes' if same else 'no'} | "
              f"{differences[0]:.3g} | {max(differences):.3g} |")
        linear_attention.install(model.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen3.5-0.8b", help="a shipped preset with a hybrid decoder")
    parser.add_argument("--dtype", action="append", choices=("float32", "bfloat16"))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video", type=Path)
    parser.add_argument("--side-by-side", action="store_true",
                        help="time the reference convolutions against the float32 ones instead of profiling")
    parser.add_argument("--repeat", type=int, default=2, help="--side-by-side: timed first questions per variant")
    parser.add_argument("--prompt-tokens", type=int, default=400, help="--side-by-side: the logits' text prompt")
    parser.add_argument("--logit-steps", type=int, default=8, help="--side-by-side: generated steps compared")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    reference = load_random_model(args.model, device=Device.cpu, dtype=DType.float32)
    if not linear_layers(reference):
        raise SystemExit(f"{args.model} has no linear-attention layers")
    with tempfile.TemporaryDirectory() as scratch:
        video = args.video or write_clip(Path(scratch) / "clip.mp4", n_frames=60, size=(320, 240), fps=15.0)
        models = {dtype: reference if dtype == "float32" else type(reference)(
            reference.name, copy.deepcopy(reference.model).to(torch.bfloat16), reference.processor)
            for dtype in args.dtype or ["bfloat16", "float32"]}
        if args.side_by_side:
            side_by_side(models, video, args)
            return
        for dtype, model in models.items():
            linear_attention.remove(model.model)  # the reference kernels, as transformers runs them
            profile(model, dtype, video, args)


if __name__ == "__main__":
    main()
