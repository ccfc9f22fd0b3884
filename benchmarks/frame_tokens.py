"""Visual tokens per frame of the Qwen presets at 360p, 720p and 1080p, as dytok sizes frames (the
reference preprocessing's per-frame cap) and as the video processor alone would (its whole-video budget).

    python benchmarks/frame_tokens.py [--frames 8,32]

Only the shipped video processors run (no weights, nothing downloaded); prints a Markdown table. A "frame"
here is one temporal patch: two sampled frames that the vision tower embeds together.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from transformers import AutoConfig

from dytok_cli.models import presets
from dytok_cli.models.qwen import video_patches
from dytok_cli.models.qwen2_5_vl import Qwen2_5_VL
from dytok_cli.models.qwen3_5 import Qwen3_5
from dytok_cli.models.qwen3_vl import Qwen3VL

SIZES = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}
PRESETS = {"qwen2.5-vl-3b": Qwen2_5_VL, "qwen3-vl-2b": Qwen3VL, "qwen3.5-0.8b": Qwen3_5}


def tokens(preset: str, height: int, width: int, frames: int) -> tuple[int, int, int]:
    """(tokens per frame as dytok sizes it, uncapped, the encoded frame's height x width in pixels)."""
    description = json.loads(presets()[preset].read_text())
    description.pop("source")
    config = AutoConfig.for_model(description.pop("model_type"), **description)
    processor = PRESETS[preset].processor_for(config).video_processor
    images = np.zeros((frames, height, width, 3), dtype=np.uint8)
    merged = config.vision_config.spatial_merge_size ** 2
    _, grid_h, grid_w = video_patches(processor, images)["video_grid_thw"][0].tolist()
    uncapped = processor(videos=[images], do_sample_frames=False, cap_pixels_per_frame=False, return_tensors="pt")
    _, raw_h, raw_w = uncapped["video_grid_thw"][0].tolist()
    patch = config.vision_config.patch_size
    return grid_h * grid_w // merged, raw_h * raw_w // merged, (grid_h * patch, grid_w * patch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="8,32", help="sampled frame counts, comma-separated")
    counts = [int(part) for part in parser.parse_args().frames.split(",")]
    print("| preset | input | frames | encoded frame | tokens per frame | total | uncapped total |")
    print("|---|---|--:|---|--:|--:|--:|")
    for preset in PRESETS:
        for name, (height, width) in SIZES.items():
            for count in counts:
                capped, uncapped, (h, w) = tokens(preset, height, width, count)
                groups = (count + 1) // 2
                print(f"| {preset} | {name} | {count} | {w}x{h} | {capped} | {capped * groups} | {uncapped * groups} |")


if __name__ == "__main__":
    main()
