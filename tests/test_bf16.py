"""bfloat16 on CPU: every method of every family answers, the record says bfloat16, and the math
that must stay float32 (the prior's softmax, the selector's scores) does."""

from __future__ import annotations

import pytest
import torch

from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.models import load_model
from dytok_cli.pipeline import Pipeline
from dytok_cli.record import answer_record

QUESTION = "what happens in the video?"


@pytest.fixture(scope="module")
def load_bf16():
    """load_bf16(model_dir) -> its adapter loaded in bfloat16, once for every method."""
    loaded = {}

    def load(model_dir):
        if model_dir not in loaded:
            loaded[model_dir] = load_model(str(model_dir), device=Device.cpu, dtype=DType.bfloat16, trust_remote_code=False)
        return loaded[model_dir]

    return load


@pytest.mark.parametrize("method", list(Method))
def test_bf16_answers_and_keeps_scores_in_float32(family, load_bf16, clip, method):
    model = load_bf16(family.dir)
    assert model.model.dtype == torch.bfloat16
    # Two new tokens: the prompt's pass and a step from the bfloat16 cache.
    settings = Settings(model=str(family.dir), method=method, frames=4, ratio=0.5 if method.traits.compresses else None,
                        device=Device.cpu, dtype=DType.bfloat16, max_new_tokens=2, decode_timeout=None)
    pipeline = Pipeline(settings, model=model)
    visual = pipeline.prepare(clip)
    assert visual.encoded.features.dtype == torch.bfloat16
    assert visual.encoded.attention.dtype == visual.encoded.keys.dtype == torch.float32  # selector scores
    answer = pipeline.ask(visual, QUESTION)
    assert answer.plan.weights.dtype == torch.float32  # the prior's softmax
    assert sum(answer.plan.weights.tolist()) == pytest.approx(1.0, abs=1e-5)
    assert answer.token_ids and isinstance(answer.text, str)
    assert answer_record(answer, settings, pipeline.prior_name)["dtype"] == "bfloat16"
