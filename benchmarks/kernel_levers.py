"""Kernel levers against the plain model, interleaved in one process so that load drift hits each alike:
the vision tower over 32 frames of 360p and the decoder's prefill of S tokens, for a random-weight preset.

    python benchmarks/kernel_levers.py int8 [int8dyn] [compile] [--model qwen3.5-0.8b] [--tokens 1000] [--rounds 3]

int8 and int8dyn need torchao (`pip install torchao`), which dytok does not install: neither paid on a
2-core CPU (docs/performance.md, "Kernels tried on the CPU"). (Not named kernels.py: run as a script, that
would shadow the `kernels` package `transformers` imports.)
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from dytok_cli import Pipeline, Settings


def variants(visual: torch.nn.Module, decoder: torch.nn.Module, levers: list[str]) -> dict[str, tuple]:
    made = {"plain": (visual, decoder)}
    for lever in levers:
        if lever == "compile":
            made[lever] = (torch.compile(visual, dynamic=True), torch.compile(decoder, dynamic=True))
            continue
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        config = Int8WeightOnlyConfig() if lever == "int8" else Int8DynamicActivationInt8WeightConfig()
        quantized = copy.deepcopy(visual), copy.deepcopy(decoder)
        for module in quantized:
            quantize_(module, config)
        made[lever] = quantized
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("levers", nargs="+", choices=["int8", "int8dyn", "compile"])
    parser.add_argument("--model", default="qwen3.5-0.8b")
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = Pipeline(Settings(model=args.model, random_weights=True)).model
    frames = np.random.default_rng(0).integers(0, 255, (32, 360, 640, 3), dtype=np.uint8)
    processed = model.patches(frames, None)
    pixels, grid = processed["pixel_values_videos"].to(model.model.dtype), processed["video_grid_thw"]
    visual, decoder = model.model.model.visual, model.language_model()
    embeddings = torch.randn(1, args.tokens, decoder.config.hidden_size, dtype=model.model.dtype) * 0.02
    made = variants(visual, decoder, args.levers)
    reference = None
    with torch.inference_mode():
        for round_ in range(args.rounds):
            for name, (tower, text) in made.items():
                started = time.perf_counter()
                seen = tower(pixels, grid_thw=grid).pooler_output.float()
                vision_s = time.perf_counter() - started
                started = time.perf_counter()
                hidden = text(inputs_embeds=embeddings, use_cache=False).last_hidden_state.float()
                prefill_s = time.perf_counter() - started
                reference = reference or (seen, hidden)
                drift = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip((seen, hidden), reference)]
                print(f"round {round_} {name:8} vision {vision_s:6.2f} s  prefill {prefill_s:6.2f} s  "
                      f"drift of the largest value: vision {drift[0]:.3g}, decoder {drift[1]:.3g}", flush=True)

if __name__ == "__main__":
    main()
