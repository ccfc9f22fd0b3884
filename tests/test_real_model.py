"""Real checkpoints, only where they already sit in the local Hugging Face cache (never downloaded)."""

from __future__ import annotations

import pytest
import torch

from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.models import load_model
from dytok_cli.pipeline import Pipeline

CHECKPOINTS = ["llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "Qwen/Qwen2.5-VL-3B-Instruct"]


def cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


@pytest.mark.real_model
@pytest.mark.parametrize("repo", CHECKPOINTS)
def test_real_checkpoint_answers_with_and_without_compression(repo, clip):
    if not cached(repo):
        pytest.skip(f"{repo} is not in the local Hugging Face cache")
    model = load_model(repo, device=Device.auto, dtype=DType.auto, trust_remote_code=False)
    settings = Settings(model=repo, method=Method.none, frames=4, max_new_tokens=16, decode_timeout=None)
    pipeline = Pipeline(settings, model=model)
    answer = pipeline.ask(clip, "What is shown in this video?")
    compressed = Pipeline(Settings(model=repo, frames=4, max_new_tokens=16, decode_timeout=None), model=model).ask(
        clip, "What is shown in this video?"
    )
    assert answer.text and compressed.text
    assert compressed.plan.kept_tokens < answer.plan.kept_tokens
    assert torch.isclose(compressed.plan.weights.sum(), torch.tensor(1.0))
