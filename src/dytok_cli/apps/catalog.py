"""`dytok models`: the shipped presets, each with what its checkpoint is, what it scored and what a first
question cost where that was measured, and whether its weights are already here.

The published and measured figures live here and nowhere else in the code; docs/models.md says where they
come from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DEFAULT_MODEL


# Video-MME without subtitles, as each checkpoint's model card publishes it, by hub id; a checkpoint without
# a published figure we know of is not here. The Qwen3.5 cards report theirs in thinking mode.
VIDEO_MME = {
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": 44.0,
    "Qwen/Qwen2.5-VL-3B-Instruct": 61.5,
    "Qwen/Qwen3-VL-2B-Instruct": 62.1,
    "Qwen/Qwen3-VL-4B-Instruct": 68.9,
    "Qwen/Qwen3.5-0.8B": 57.7,
    "Qwen/Qwen3.5-2B": 69.0,
    "Qwen/Qwen3.5-4B": 76.9,
    # InternVL3.5: as the InternVL3.5 paper (arXiv 2508.18265) publishes them, in its table 9.
    "OpenGVLab/InternVL3_5-1B-HF": 52.4,
    "OpenGVLab/InternVL3_5-2B-HF": 58.4,
    "OpenGVLab/InternVL3_5-4B-HF": 65.4,
    "OpenGVLab/InternVL3_5-8B-HF": 66.0,
    "HuggingFaceTB/SmolVLM2-256M-Video-Instruct": 33.7,
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct": 42.2,
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct": 52.1,
}
SCORED_THINKING = frozenset({"Qwen/Qwen3.5-0.8B", "Qwen/Qwen3.5-2B", "Qwen/Qwen3.5-4B"})

# Seconds to a first answer, measured once per checkpoint and input size, in runs under these conditions
# (docs/models.md, "The default model"): to compare within a run, not to expect on another machine.
_FIRST_QUESTION_SETTINGS = (
    "random weights of the real shape, 32 frames of a 20-second clip (360p: 640x360; 1080p: 1920x1080), "
    "--method dytok-fastv, ratio 0.25, 8 answer tokens, model loading not counted; one run each, "
)
FIRST_QUESTION_RUNS = {
    "2026-12-05": _FIRST_QUESTION_SETTINGS + "float32 (--dtype auto there), 2026-12-05, on a 2-core AMD EPYC without "
                  "AVX512-BF16 (load 0.8-2.3)",
    # The families added later, with the default model again for the comparison; 360p only: these families size
    # every frame alike whatever the input.
    "2026-12-08": _FIRST_QUESTION_SETTINGS + "bfloat16 (--dtype auto there), 2026-12-08, on a 2-core AMD EPYC with "
                  "AVX512-BF16 (load 1.6-1.8)",
}
# The default model's 360p seconds in the runs its own row (FIRST_QUESTION_S) is not from.
_DEFAULT_IN_OTHER_RUNS_S = {"2026-12-08": 20.3}

FIRST_QUESTION_S = {
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": ("2026-12-05", {"360p": 201.1, "1080p": 197.7}),
    "Qwen/Qwen2.5-VL-3B-Instruct": ("2026-12-05", {"360p": 370.1, "1080p": 879.7}),
    "Qwen/Qwen3-VL-2B-Instruct": ("2026-12-05", {"360p": 140.8, "1080p": 536.6}),
    "Qwen/Qwen3-VL-4B-Instruct": ("2026-12-05", {"360p": 218.0, "1080p": 810.0}),
    "Qwen/Qwen3.5-0.8B": ("2026-12-05", {"360p": 50.3, "1080p": 199.9}),
    "Qwen/Qwen3.5-2B": ("2026-12-05", {"360p": 126.6, "1080p": 494.0}),
    "Qwen/Qwen3.5-4B": ("2026-12-05", {"360p": 203.0, "1080p": 775.5}),
    "HuggingFaceTB/SmolVLM2-256M-Video-Instruct": ("2026-12-08", {"360p": 32.9}),
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct": ("2026-12-08", {"360p": 30.9}),
    "OpenGVLab/InternVL3_5-1B-HF": ("2026-12-08", {"360p": 106.3}),
    "google/gemma-4-E2B-it": ("2026-12-08", {"360p": 44.8}),
}


def default_model_seconds(run: str) -> float:
    """The default model's 360p seconds in `run`: what another model's figure from that run compares with."""
    own_run, own = FIRST_QUESTION_S[DEFAULT_MODEL]
    return own["360p"] if run == own_run else _DEFAULT_IN_OTHER_RUNS_S[run]


@dataclass(frozen=True)
class Preset:
    name: str  # what --model takes with --random-weights
    model: str  # the checkpoint's hub id, which --model takes either way
    family: str  # its config's model_type
    parameters: int
    cached: bool  # its weights are in the local Hugging Face cache
    default: bool  # the model a command uses without --model

    def record(self) -> dict[str, Any]:
        """The preset as `dytok models --json` prints it."""
        score = VIDEO_MME.get(self.model)
        run, seconds = FIRST_QUESTION_S.get(self.model, (None, None))
        return {
            "preset": self.name,
            "model": self.model,
            "family": self.family,
            "parameters": self.parameters,
            "video_mme": None if score is None else {"score": score, "thinking": self.model in SCORED_THINKING},
            "cached": self.cached,
            "first_question": None if seconds is None else {
                "seconds": seconds, "run": run, "conditions": FIRST_QUESTION_RUNS[run],
                "default_model_360p": default_model_seconds(run)},
            "default": self.default,
        }


def weights_cached(model: str) -> bool:
    """Whether the hub checkpoint `model` has its safetensors weights, every shard of them, in the local
    Hugging Face cache; asks no network."""
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(model, "model.safetensors.index.json")
    try:  # sharded weights are listed in their index; one file has no index
        files = set(json.loads(Path(index).read_text())["weight_map"].values()) if isinstance(index, str) else {"model.safetensors"}
    except (OSError, ValueError, KeyError, AttributeError):  # an index cut short or foreign: the weights are not all here
        return False
    return all(isinstance(try_to_load_from_cache(model, name), str) for name in files)


def shipped(default_model: str) -> list[Preset]:
    """Every shipped preset, by name; `default_model` (a hub id or preset name) is marked as the default."""
    from ..models import parameter_count, preset_config, presets

    listed = []
    for name, path in presets().items():
        source = json.loads(path.read_text())["source"]
        config = preset_config(path)
        listed.append(Preset(
            name=name, model=source, family=config.model_type, parameters=parameter_count(config),
            cached=weights_cached(source), default=default_model in (source, name),
        ))
    return listed
