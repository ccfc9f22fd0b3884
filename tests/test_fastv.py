"""dytok-fastv: the single prefill that computes the prior at the prune layer K and prunes there.

Oracles: the model's own `generate` and its own forward with `output_hidden_states` (layers 0..K
must be untouched), and the separate prior pass of `--method dytok` over the same layers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

import test_llava_onevision as llava_tests
import test_qwen2_5_vl as qwen_tests
from dytok_cli import fastv
from dytok_cli.budget import total_budget
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.errors import InputError
from dytok_cli.pipeline import Pipeline
from dytok_cli.prior import keyframe_prior

QUESTION = "what happens in the video?"
FRAMES = 6


def llava_own_generate(adapter, frames, question: str) -> list[int]:
    return llava_tests.reference_generate(adapter, frames.images, question)


@pytest.fixture(params=["llava", "qwen"])
def family(request):
    """(adapter, model directory, the model's own generate on frames) for each supported family."""
    if request.param == "llava":
        return request.getfixturevalue("tiny_llava"), request.getfixturevalue("tiny_llava_dir"), llava_own_generate
    return request.getfixturevalue("tiny_qwen"), request.getfixturevalue("tiny_qwen_dir"), qwen_tests.reference_generate


def settings(model_dir, **overrides) -> Settings:
    options = dict(model=str(model_dir), method=Method.dytok_fastv, frames=FRAMES, device=Device.cpu,
                   dtype=DType.float32, max_new_tokens=12, decode_timeout=None)
    return Settings(**{**options, **overrides})


@pytest.mark.parametrize("prune_layer", [None, 2])
def test_ratio_1_is_the_models_own_generate(family, clip, prune_layer):
    adapter, model_dir, own_generate = family
    pipeline = Pipeline(settings(model_dir, ratio=1.0, prune_layer=prune_layer), model=adapter)
    answer = pipeline.ask(clip, QUESTION)
    assert answer.plan.prefill.prune_layer == (0 if prune_layer is None else prune_layer)  # 4 layers: a quarter is 0
    assert answer.token_ids == own_generate(adapter, pipeline.read(clip), QUESTION)


class LayerInput:
    """What decoder layer `index` receives, each time it runs."""

    def __init__(self, adapter, index: int):
        self.seen: list[torch.Tensor] = []
        layer = adapter.language_model().layers[index]
        self.handle = layer.register_forward_pre_hook(lambda module, args: self.seen.append(args[0].clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_layers_up_to_k_are_untouched_and_later_layers_see_text_plus_kept(family, clip, ratio):
    adapter, model_dir, _ = family
    prune_layer = 1
    pipeline = Pipeline(settings(model_dir, ratio=ratio, prune_layer=prune_layer, max_new_tokens=3), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    encoded, prefill = plan.encoded, plan.prefill
    full = adapter.build_inputs(QUESTION, encoded.all_tokens(), video=encoded)
    with torch.no_grad():
        reference = adapter.model(**full, output_hidden_states=True)
    with LayerInput(adapter, prune_layer + 1) as after_k:
        pipeline.answer(plan)
    pruned = after_k.seen[0]  # the prefill's pass; later entries are decoding steps
    frame_tokens = encoded.num_frames * encoded.tokens_per_frame
    assert pruned.shape[1] == full["input_ids"].shape[1] - frame_tokens + plan.kept_tokens
    # hidden_states[K + 1] is layer K's output.
    assert torch.equal(pruned, reference.hidden_states[prune_layer + 1][:, prefill.keep])
    if ratio == 1:
        _, logits = fastv.finish(adapter, prefill)
        torch.testing.assert_close(logits, reference.logits[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.6])
def test_kept_tokens_per_frame_follow_budgets(family, clip, ratio):
    adapter, model_dir, _ = family
    plan = Pipeline(settings(model_dir, ratio=ratio, prune_layer=1), model=adapter).plan(clip, QUESTION)
    encoded = plan.encoded
    assert plan.kept_tokens == total_budget(ratio, encoded.num_frames, encoded.tokens_per_frame)
    assert [s.token_index.numel() for s in plan.selections] == plan.budgets.tolist()
    assert [(s.dominant, s.contextual) for s in plan.selections] == [(n, 0) for n in plan.budgets.tolist()]
    for selection in plan.selections:
        assert torch.equal(selection.token_index, selection.token_index.sort().values)
    placeholders = int((plan.prefill.input_ids == adapter.video_token_id()).sum())
    assert placeholders == plan.kept_tokens + encoded.extra.shape[0]
    assert plan.timings["prior_s"] == 0.0 and plan.timings["prefill_s"] > 0


def test_prior_is_the_dytok_prior_over_the_same_layers(family, clip):
    adapter, model_dir, _ = family
    pipeline = Pipeline(settings(model_dir, prune_layer=2, prior_layers="1-2"), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    assert pipeline.prior_layers == (1, 2)
    torch.testing.assert_close(plan.weights, keyframe_prior(adapter, plan.encoded, QUESTION, (1, 2)), atol=1e-6, rtol=0)
    default = Pipeline(settings(model_dir, prune_layer=2), model=adapter)
    assert default.prior_layers == (0, 1, 2)


def greedy_from_prefill(adapter, prefill: fastv.PrunedPrefill, steps: int) -> list[int]:
    """Decoding by hand from the pruned cache: the last prompt token again, then one token at a time,
    each one position further (on every M-RoPE axis)."""
    cache, _ = fastv.finish(adapter, prefill)
    token, position = prefill.input_ids[:, -1:], prefill.position_ids[..., -1:]
    tokens = []
    with torch.no_grad():
        for _ in range(steps):
            cached = fastv.cache_argument(type(adapter.model).forward, cache)
            logits = adapter.model(input_ids=token, position_ids=position, use_cache=True, **cached).logits
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(int(token))
            position = position + 1
    return tokens


def test_compressed_answer_decodes_from_the_pruned_cache(family, clip):
    adapter, model_dir, _ = family
    pipeline = Pipeline(settings(model_dir, ratio=0.25, prune_layer=1), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    first = pipeline.answer(plan)
    assert pipeline.answer(plan).token_ids == first.token_ids  # a plan can be answered again
    expected = greedy_from_prefill(adapter, plan.prefill, 12)
    assert first.token_ids == expected[: len(first.token_ids)]
    full = Pipeline(settings(model_dir, method=Method.none), model=adapter).ask(clip, QUESTION)
    assert first.token_ids != full.token_ids  # guards the oracle: pruning changes what the model sees


def test_prior_layers_beyond_the_prune_layer(tiny_llava, tiny_llava_dir, clip):
    pipeline = Pipeline(settings(tiny_llava_dir, prune_layer=1, prior_layers="2-3"), model=tiny_llava)
    with pytest.raises(InputError, match=r"within 0-1 \(--prune-layer\)"):
        pipeline.plan(clip, QUESTION)
    with pytest.raises(InputError, match="--prune-layer 4"):
        Pipeline(settings(tiny_llava_dir, prune_layer=4), model=tiny_llava).plan(clip, QUESTION)


def test_cli_json_records(tiny_llava_dir, clip):
    dytok = shutil.which("dytok")
    if dytok is None:
        pytest.skip("the dytok script is not installed")
    result = subprocess.run(
        [dytok, "ask", str(clip), "-q", QUESTION, "-q", "is there a dog?", "--model", str(tiny_llava_dir),
         "--method", "dytok-fastv", "--prune-layer", "1", "--ratio", "0.25", "--frames", str(FRAMES),
         "--max-new-tokens", "4", "--json"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["question"] for r in records] == [QUESTION, "is there a dog?"]
    for record in records:
        assert record["method"] == "dytok-fastv" and record["error"] is None
        assert record["prior_model"] == str(tiny_llava_dir)
        budgets = [frame["budget"] for frame in record["frames"]]
        assert sum(budgets) == record["visual_tokens"]["kept"] == total_budget(0.25, FRAMES, 16)
        assert record["timings"]["prior_s"] == 0 and record["timings"]["prefill_s"] > 0
