"""LLaVA-OneVision end to end against oracles that do not come from our code (DESIGN §4)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from dytok_cli.budget import total_budget
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.models import load_model
from dytok_cli.pipeline import Pipeline
from dytok_cli.prior import keyframe_prior, normalise

QUESTION = "what happens in the video?"
FRAMES = 6


def settings(model_dir, **overrides) -> Settings:
    overrides.setdefault("method", Method.dytok)  # the two-pass method; dytok-fastv has its own tests
    # Decoding in-process keeps these tests quick; the bounded worker is covered by the CLI tests.
    return Settings(
        model=str(model_dir), frames=FRAMES, device=Device.cpu, dtype=DType.float32, max_new_tokens=12,
        decode_timeout=None, **overrides,
    )


def reference_generate(adapter, frames, question: str, max_new_tokens: int = 12) -> list[int]:
    """The model's own processor + generate on the same frames, nothing of ours involved."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = adapter.processor(text=prompt, videos=[frames], return_tensors="pt")
    output = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def eager_prior(model_dir, adapter, frames, question: str, layers) -> torch.Tensor:
    """§2.1 from `output_attentions` under eager attention, renormalised over the visual keys."""
    eager = AutoModelForImageTextToText.from_pretrained(model_dir, attn_implementation="eager").eval()
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = adapter.processor(text=prompt, videos=[frames], return_tensors="pt")
    with torch.no_grad():
        attentions = eager(**inputs, output_attentions=True).attentions
    video = (inputs["input_ids"][0] == eager.config.video_token_id).nonzero()[:, 0][:-1]  # without the newline
    per_layer = []
    for layer in layers:
        last_row = attentions[layer][0, :, -1, video].double()  # (H, F*T)
        last_row = last_row / last_row.sum(dim=-1, keepdim=True)
        per_layer.append(last_row.mean(dim=0).view(len(frames), -1).mean(dim=1))
    return normalise(torch.stack(per_layer).mean(dim=0)).float()


@pytest.mark.parametrize(
    "overrides",
    [dict(method=Method.none), dict(method=Method.dytok, ratio=1.0), dict(method=Method.visionzip, ratio=1.0)],
    ids=["none", "dytok-ratio-1", "visionzip-ratio-1"],
)
@pytest.mark.parametrize("question", [QUESTION, "is there a dog?"])
def test_uncompressed_answer_is_the_models_own_generate(tiny_llava, tiny_llava_dir, clip, overrides, question):
    pipeline = Pipeline(settings(tiny_llava_dir, **overrides), model=tiny_llava)
    answer = pipeline.ask(clip, question)
    expected = reference_generate(tiny_llava, answer.plan.frames.images, question)
    assert answer.token_ids == expected
    assert answer.text == tiny_llava.decode(torch.tensor(expected))


def test_compression_changes_what_the_model_sees(tiny_llava, tiny_llava_dir, clip):
    """Guards the oracle above: the tiny model's answer does depend on the visual tokens."""
    full = Pipeline(settings(tiny_llava_dir, method=Method.none), model=tiny_llava).ask(clip, QUESTION)
    compressed = Pipeline(settings(tiny_llava_dir, ratio=0.1), model=tiny_llava).ask(clip, QUESTION)
    assert compressed.token_ids != full.token_ids


@pytest.mark.parametrize("layers", [(0,), (1, 2), (3,), (0, 1, 2, 3)])
def test_prior_matches_eager_attention(tiny_llava, tiny_llava_dir, clip, layers):
    pipeline = Pipeline(settings(tiny_llava_dir), model=tiny_llava)
    frames = pipeline.read(clip)
    video = tiny_llava.encode(frames.images)
    reference = eager_prior(tiny_llava_dir, tiny_llava, frames.images, QUESTION, layers)
    with_exit = keyframe_prior(tiny_llava, video, QUESTION, layers, early_exit=True)
    without_exit = keyframe_prior(tiny_llava, video, QUESTION, layers, early_exit=False)
    torch.testing.assert_close(with_exit, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(without_exit, reference, atol=1e-5, rtol=0)
    assert with_exit.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_early_exit_stops_after_the_last_prior_layer(tiny_llava, tiny_llava_dir, clip):
    frames = Pipeline(settings(tiny_llava_dir), model=tiny_llava).read(clip)
    video = tiny_llava.encode(frames.images)
    ran: list[int] = []
    handles = [
        layer.register_forward_hook(lambda module, args, output, index=index: ran.append(index))
        for index, layer in enumerate(tiny_llava.model.model.language_model.layers)
    ]
    try:
        keyframe_prior(tiny_llava, video, QUESTION, (1,))
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0]  # layer 1 was entered, its attention seen, and the pass ended inside it


def test_assistant_prior_model(tiny_llava, tiny_llava_dir, tiny_llava_assistant_dir, clip):
    assistant = load_model(str(tiny_llava_assistant_dir), device=Device.cpu, dtype=DType.float32, trust_remote_code=False)
    pipeline = Pipeline(
        settings(tiny_llava_dir, prior_model=str(tiny_llava_assistant_dir), ratio=0.25), model=tiny_llava, prior=assistant
    )
    assert pipeline.prior_layers == (2,)  # the deepest third of the assistant's 3 layers
    plan = pipeline.plan(clip, QUESTION)
    reference = eager_prior(tiny_llava_assistant_dir, assistant, plan.frames.images, QUESTION, (2,))
    torch.testing.assert_close(plan.weights, reference, atol=1e-5, rtol=0)
    own = keyframe_prior(tiny_llava, plan.encoded, QUESTION, (2, 3))
    assert not torch.allclose(plan.weights, own, atol=1e-3)  # it really is the assistant's prior


def test_assistant_vision_pass_counts_as_prior_time(tiny_llava, tiny_llava_dir, tiny_llava_assistant_dir, clip, monkeypatch):
    """A clock that moves only inside the vision passes: each lands in its own timing, once per video."""
    import dytok_cli.pipeline as pipeline_module

    assistant = load_model(str(tiny_llava_assistant_dir), device=Device.cpu, dtype=DType.float32, trust_remote_code=False)
    now = [0.0]
    monkeypatch.setattr(pipeline_module.time, "perf_counter", lambda: now[0])

    def taking(seconds, encode):
        def timed(*args, **kwargs):
            now[0] += seconds
            return encode(*args, **kwargs)

        return timed

    monkeypatch.setattr(tiny_llava, "encode", taking(10.0, tiny_llava.encode))
    monkeypatch.setattr(assistant, "encode", taking(100.0, assistant.encode))
    pipeline = Pipeline(
        settings(tiny_llava_dir, prior_model=str(tiny_llava_assistant_dir)), model=tiny_llava, prior=assistant
    )
    visual = pipeline.prepare(clip)
    first = pipeline.plan(visual, QUESTION).timings
    assert (first["vision_s"], first["prior_s"]) == (10.0, 100.0)
    again = pipeline.plan(visual, QUESTION).timings  # the encodings are reused
    assert (again["vision_s"], again["prior_s"]) == (0.0, 0.0)


@pytest.mark.parametrize("method", [Method.dytok, Method.visionzip])
@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.5, 0.9])
def test_kept_tokens_follow_budgets(tiny_llava, tiny_llava_dir, clip, method, ratio, monkeypatch):
    pipeline = Pipeline(settings(tiny_llava_dir, method=method, ratio=ratio), model=tiny_llava)
    seen = {}
    original = tiny_llava.generate

    def spy(inputs, *args, **kwargs):
        seen["input_ids"] = inputs["input_ids"]
        return original(inputs, *args, **kwargs)

    monkeypatch.setattr(tiny_llava, "generate", spy)
    answer = pipeline.ask(clip, QUESTION)
    plan = answer.plan
    per_frame = plan.encoded.tokens_per_frame
    assert [s.tokens.shape[0] for s in plan.selections] == plan.budgets.tolist()
    assert [s.dominant + s.contextual for s in plan.selections] == plan.budgets.tolist()
    assert plan.kept_tokens == total_budget(ratio, FRAMES, per_frame)
    assert abs(plan.kept_tokens - ratio * FRAMES * per_frame) <= 1
    video_tokens = int((seen["input_ids"] == tiny_llava.video_token_id()).sum())
    assert video_tokens == plan.kept_tokens + 1  # and LLaVA's newline token
    if method is Method.visionzip:
        assert plan.budgets.max() - plan.budgets.min() <= 1


def test_probes_are_removed_and_models_do_not_interfere(tiny_llava, tiny_llava_dir, tiny_llava_assistant_dir, clip):
    assistant = load_model(str(tiny_llava_assistant_dir), device=Device.cpu, dtype=DType.float32, trust_remote_code=False)
    before = reference_generate(tiny_llava, Pipeline(settings(tiny_llava_dir), model=tiny_llava).read(clip).images, QUESTION)
    pipeline = Pipeline(
        settings(tiny_llava_dir, prior_model=str(tiny_llava_assistant_dir)), model=tiny_llava, prior=assistant
    )
    pipeline.ask(clip, QUESTION)
    for model in (tiny_llava.model, assistant.model):
        assert model.config.text_config._attn_implementation == "sdpa"
        assert model.config.vision_config._attn_implementation == "sdpa"
        assert not any(hasattr(module, "_dytok_attention_callback") for module in model.modules())
    after = reference_generate(tiny_llava, pipeline.read(clip).images, QUESTION)
    assert before == after


def test_sampling_is_reproducible_with_a_seed(tiny_llava, tiny_llava_dir, clip):
    def sample(seed: int) -> list[int]:
        pipeline = Pipeline(settings(tiny_llava_dir, temperature=1.5, seed=seed), model=tiny_llava)
        return pipeline.ask(clip, QUESTION).token_ids

    first = sample(3)
    assert sample(3) == first
    assert any(sample(seed) != first for seed in (4, 5, 6))  # it really samples
