"""Reproduce the README's performance table: `dytok bench` on a real model shape with random weights.

    python benchmarks/readme_table.py [--preset llava-ov-0.5b] [--frames 8] [--repeat 2] [--method dytok]
        [--prior-preset llava-ov-0.5b] [--dtype bfloat16] [--no-prefix-cache]

Writes a 320x240 test clip, runs the benchmark in this process and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clips import write_clip  # noqa: E402

from dytok_cli.apps import bench  # noqa: E402
from dytok_cli.config import Device, DType, Method, Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llava-ov-0.5b")
    parser.add_argument("--prior-preset", default=None, help="an assistant prior model's shape")
    parser.add_argument("--method", default="dytok-fastv", help="comma-separated methods to compare in one run")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", default="320x240", help="the test clip's WIDTHxHEIGHT (Qwen models keep it, LLaVA resizes)")
    parser.add_argument("--ratios", default="1,0.5,0.25,0.1")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=[d.value for d in DType if d is not DType.auto],
                        help="bfloat16 fits a 7B shape and an assistant in 24 GiB")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="recompute the prompt prefix's LLM work for every question")
    args = parser.parse_args()

    methods = [Method(name) for name in args.method.split(",")]
    compared = Settings.for_methods(methods, model=args.preset, prior_model=args.prior_preset, frames=args.frames,
                                    device=Device.cpu, dtype=DType(args.dtype), max_new_tokens=args.max_new_tokens,
                                    decode_timeout=None, prefix_cache=args.prefix_cache, random_weights=True)
    with tempfile.TemporaryDirectory() as scratch:
        width, height = (int(side) for side in args.size.split("x"))
        video = write_clip(Path(scratch) / "clip.mp4", n_frames=90, size=(width, height), fps=30.0)
        ratios = [float(r) for r in args.ratios.split(",")]
        results = bench.run(compared, video, ratios, question="What happens in this video?",
                            repeat=args.repeat, warmup=args.warmup,
                            on_progress=lambda message: print(message, file=sys.stderr, flush=True))

    print(f"`{args.preset}` shape, random weights, {args.dtype}, {args.frames} frames, {args.method}, "
          f"prefix cache {'on' if args.prefix_cache else 'off'}"
          f"{f' with prior {args.prior_preset}' if args.prior_preset else ''}; {bench.machine(compared[0])}; "
          f"median of {args.repeat} after {args.warmup} warm-up\n")
    print("| ratio | method | visual tokens | vision s | prior s | prefill s | TTFT s | decode tok/s | total s "
          "| next question s | next question, prefix recomputed s | KV cache MiB | peak RSS GiB | prefill speed-up "
          "| total speed-up | next question speed-up | prefix reuse speed-up | prior share |")
    print("|" + " --- |" * 18)
    for r in results:
        recomputed, reuse = r["next_question_recomputed_s"], r["speedup_prefix_reuse"]
        print(f"| {r['ratio']:g} | {r['method']} | {r['visual_tokens']} | {r['vision_s']:.2f} | {r['prior_s']:.2f} | {r['prefill_s']:.2f} "
              f"| {r['ttft_s']:.2f} | {r['decode_tok_s']:.1f} | {r['total_s']:.2f} | {r['next_question_s']:.2f} "
              f"| {'-' if recomputed is None else f'{recomputed:.2f}'} "
              f"| {r['kv_cache_bytes'] / 2**20:.1f} | {r['peak_rss_bytes'] / 2**30:.2f} | {r['speedup_prefill']:.2f}× "
              f"| {r['speedup_total']:.2f}× | {r['speedup_next_question']:.2f}× "
              f"| {'-' if reuse is None else f'{reuse:.2f}×'} | {r['prior_share']:.0%} |")


if __name__ == "__main__":
    main()
