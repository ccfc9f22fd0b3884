"""Qwen2.5-VL end to end against oracles that do not come from our code (DESIGN §4).

The tiny model merges 2 sampled frames into one temporal patch of 5x3 = 15 tokens, so 6 sampled
frames make 3 DyToK frames of T = 15 tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager

import pytest
import torch
from transformers import AutoModelForImageTextToText
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

from dytok_cli import fastv
from dytok_cli.budget import total_budget
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.pipeline import Pipeline, sampled_fps
from dytok_cli.prior import keyframe_prior, normalise
from dytok_cli.video import Frames

QUESTION = "what happens in the video?"
FRAMES = 6
GROUPS = 3  # temporal patches of 2 frames
TOKENS = 15  # per temporal patch


def settings(model_dir, **overrides) -> Settings:
    options = dict(model=str(model_dir), frames=FRAMES, device=Device.cpu, dtype=DType.float32, max_new_tokens=12,
                   decode_timeout=None, method=Method.dytok)
    return Settings(**{**options, **overrides})


def processor_inputs(adapter, frames: Frames, question: str):
    """The model's own processor on the same sampled frames, told where they were sampled from."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True)
    metadata = {"total_num_frames": frames.total_frames, "fps": frames.video_fps, "frames_indices": list(frames.indices)}
    return adapter.processor(
        text=prompt, videos=[frames.images], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )


def reference_generate(adapter, frames: Frames, question: str, max_new_tokens: int = 12) -> list[int]:
    """The model's own processor + generate on the same frames, nothing of ours involved."""
    inputs = processor_inputs(adapter, frames, question)
    output = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def uncompressed_positions(adapter, frames: Frames, question: str) -> tuple[torch.Tensor, int, int]:
    """The model's own M-RoPE positions (3, 1, S) for the processor's uncompressed prompt, and where
    its video placeholders start and end."""
    inputs = processor_inputs(adapter, frames, question)
    positions, _ = adapter.model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    )
    video = (inputs["input_ids"][0] == adapter.video_token_id()).nonzero()[:, 0]
    return positions, int(video[0]), int(video[-1]) + 1


def kept_positions(full: torch.Tensor, start: int, end: int, kept_index: torch.Tensor) -> torch.Tensor:
    """The uncompressed positions of the text and of the kept visual tokens, in prompt order."""
    return torch.cat([full[..., :start], full[..., start + kept_index], full[..., end:]], dim=-1)


@contextmanager
def language_model_positions(adapter):
    """Records the position ids every forward pass hands the language model."""
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        seen.append(kwargs["position_ids"].clone())

    handle = adapter.model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize(
    "overrides",
    [dict(method=Method.none), dict(method=Method.dytok, ratio=1.0), dict(method=Method.visionzip, ratio=1.0)],
    ids=["none", "dytok-ratio-1", "visionzip-ratio-1"],
)
@pytest.mark.parametrize("frames", [FRAMES, 5], ids=["even", "odd"])
def test_uncompressed_answer_is_the_models_own_generate(tiny_qwen, tiny_qwen_dir, clip, overrides, frames):
    pipeline = Pipeline(settings(tiny_qwen_dir, frames=frames, **overrides), model=tiny_qwen)
    answer = pipeline.ask(clip, QUESTION)
    expected = reference_generate(tiny_qwen, pipeline.read(clip), QUESTION)
    assert answer.token_ids == expected
    assert answer.plan.encoded.num_frames == GROUPS and answer.plan.kept_tokens == GROUPS * TOKENS


def test_compression_changes_what_the_model_sees(tiny_qwen, tiny_qwen_dir, clip):
    """Guards the oracles here: the tiny model's answer does depend on the visual tokens."""
    full = Pipeline(settings(tiny_qwen_dir, method=Method.none), model=tiny_qwen).ask(clip, QUESTION)
    compressed = Pipeline(settings(tiny_qwen_dir, ratio=0.2), model=tiny_qwen).ask(clip, QUESTION)
    assert compressed.token_ids != full.token_ids


def test_a_frame_is_a_temporal_patch_timed_by_its_first_frame(tiny_qwen, tiny_qwen_dir, clip):
    for count in (FRAMES, 5):  # an odd count: the processor repeats the last frame to fill the last patch
        pipeline = Pipeline(settings(tiny_qwen_dir, frames=count), model=tiny_qwen)
        sampled = pipeline.read(clip)
        plan = pipeline.plan(clip, QUESTION)
        assert plan.encoded.frames_per_group == 2
        assert plan.encoded.features.shape == (GROUPS, TOKENS, tiny_qwen.model.config.text_config.hidden_size)
        assert plan.frames.indices == sampled.indices[::2]
        assert plan.frames.timestamps == sampled.timestamps[::2]
        assert len(plan.frames.images) == len(plan.weights) == len(plan.budgets) == GROUPS
        # Temporal positions count seconds: each patch spans 2 frames at the rate they were sampled at.
        assert plan.encoded.frame_seconds == pytest.approx(2 / sampled_fps(sampled))


@pytest.mark.parametrize("method, ratio", [(Method.dytok, 0.3), (Method.visionzip, 0.5), (Method.none, 1.0)])
def test_kept_tokens_keep_their_uncompressed_positions(tiny_qwen, tiny_qwen_dir, clip, method, ratio):
    pipeline = Pipeline(settings(tiny_qwen_dir, method=method, ratio=ratio), model=tiny_qwen)
    frames = pipeline.read(clip)
    plan = pipeline.plan(clip, QUESTION)
    full, start, end = uncompressed_positions(tiny_qwen, frames, QUESTION)
    assert end - start == GROUPS * TOKENS
    expected = kept_positions(full, start, end, plan.kept_index)

    with language_model_positions(tiny_qwen) as seen:
        answer = pipeline.answer(plan)
    prefill, steps = seen[0], seen[1:]
    assert torch.equal(prefill, expected)
    # The text after the video continues from the uncompressed maximum, however few tokens were kept.
    after = start + plan.kept_tokens
    assert torch.equal(prefill[..., after:], full[..., end:])
    assert int(prefill[0, 0, after]) == int(full[:, :, start:end].max()) + 1
    # Each decoding step continues one past the last prompt position on all three axes, which is what
    # the model's own generate does with the uncompressed prompt.
    assert len(steps) == len(answer.token_ids) - 1
    for step, positions in enumerate(steps, start=1):
        assert torch.equal(positions, prefill[..., -1:] + step)
    with language_model_positions(tiny_qwen) as own:
        reference_generate(tiny_qwen, frames, QUESTION, max_new_tokens=3)
    assert torch.equal(own[1][-3:], own[0][-3:, :, -1:] + 1)  # its (t, h, w) rows, after its text row


def greedy_loop(model, inputs: dict, positions: torch.Tensor, max_new_tokens: int, eos: int) -> list[int]:
    """Greedy decoding by hand: a prefill with explicit positions, then one token at a time, each one
    position further on every axis."""
    with torch.no_grad():
        output = model(input_ids=inputs["input_ids"], mm_encoder_outputs=inputs["mm_encoder_outputs"],
                       position_ids=positions, use_cache=True)
        tokens: list[int] = []
        last = positions[..., -1:]  # (3, 1, 1)
        for _ in range(max_new_tokens):
            token = output.logits[0, -1].argmax()
            tokens.append(int(token))
            if int(token) == eos:
                break
            last = last + 1
            cached = fastv.cache_argument(type(model).forward, output.past_key_values)
            output = model(input_ids=token.view(1, 1), position_ids=last, use_cache=True, **cached)
    return tokens


@pytest.mark.parametrize("method, ratio", [(Method.dytok, 0.3), (Method.visionzip, 0.15)])
def test_compressed_generate_equals_a_hand_written_greedy_loop(tiny_qwen, tiny_qwen_dir, clip, method, ratio):
    pipeline = Pipeline(settings(tiny_qwen_dir, method=method, ratio=ratio), model=tiny_qwen)
    plan = pipeline.plan(clip, QUESTION)
    answer = pipeline.answer(plan)
    full, start, end = uncompressed_positions(tiny_qwen, pipeline.read(clip), QUESTION)
    inputs = tiny_qwen.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index, video=plan.encoded)
    eos = tiny_qwen.model.generation_config.eos_token_id
    expected = greedy_loop(tiny_qwen.model, inputs, kept_positions(full, start, end, plan.kept_index), 12, eos)
    assert answer.token_ids == expected


def test_selector_scores_are_the_last_full_attention_block_per_temporal_patch(tiny_qwen, tiny_qwen_dir, clip):
    visual = tiny_qwen.model.model.visual
    assert list(tiny_qwen.model.config.vision_config.fullatt_block_indexes) == [1, 2] and len(visual.blocks) == 4
    attention_module = visual.blocks[2].attn  # the last full-attention block; block 3 is windowed
    frames = Pipeline(settings(tiny_qwen_dir), model=tiny_qwen).read(clip)
    seen = {}

    def before_attention(module, args, kwargs):
        seen["hidden"], seen["rope"], seen["segments"] = args[0], kwargs["position_embeddings"], kwargs["cu_seqlens"]

    def after_merger(module, args, output):
        seen["merged"] = output

    handles = [
        attention_module.register_forward_pre_hook(before_attention, with_kwargs=True),
        visual.merger.register_forward_hook(after_merger),
    ]
    try:
        encoded = tiny_qwen.encode(frames.images, fps=sampled_fps(frames))
    finally:
        for handle in handles:
            handle.remove()

    with torch.inference_mode():
        hidden = seen["hidden"]  # (P, C) in the tower's window order
        qkv = attention_module.qkv(hidden).view(hidden.shape[0], 3, attention_module.num_heads, -1)
        query, key = apply_rotary_pos_emb_vision(qkv[:, 0], qkv[:, 1], *seen["rope"])  # (P, H, d)
        bounds = seen["segments"].tolist()
        assert len(bounds) == GROUPS + 1  # one full-attention segment per temporal patch
        received = torch.cat([
            torch.einsum("qhd,khd->hqk", query[a:b], key[a:b]).mul(attention_module.scaling).softmax(-1).mean(dim=(0, 1))
            for a, b in zip(bounds[:-1], bounds[1:])
        ])  # (P,)
        # Which merged run became which LLM token, found from the features themselves.
        same = (encoded.features.flatten(0, 1)[:, None] == seen["merged"][None]).all(dim=-1)  # (F*T, F*T)
        assert same.sum(dim=1).eq(1).all()
        run_of_token = same.float().argmax(dim=1)
        assert not torch.equal(run_of_token, torch.arange(GROUPS * TOKENS))  # the windows did reorder them
        expected_attention = received.view(-1, 4).mean(dim=1)[run_of_token].view(GROUPS, TOKENS)
        expected_keys = key.mean(dim=1).view(-1, 4, key.shape[-1]).mean(dim=1)[run_of_token].view(GROUPS, TOKENS, -1)
    torch.testing.assert_close(encoded.attention, expected_attention, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded.keys, expected_keys, atol=1e-6, rtol=0)
    # Within each temporal patch the attention received sums to 1 over its patches (1/4 over merged tokens).
    torch.testing.assert_close(encoded.attention.sum(dim=1), torch.full((GROUPS,), 0.25), atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def eager_qwen(tiny_qwen_dir):
    return AutoModelForImageTextToText.from_pretrained(tiny_qwen_dir, attn_implementation="eager").eval()


def eager_prior(eager, adapter, frames: Frames, question: str, layers) -> torch.Tensor:
    """§2.1 from `output_attentions` under eager attention, renormalised over the visual keys."""
    inputs = processor_inputs(adapter, frames, question)
    with torch.no_grad():
        attentions = eager(**inputs, output_attentions=True).attentions
    video = (inputs["input_ids"][0] == eager.config.video_token_id).nonzero()[:, 0]
    per_layer = []
    for layer in layers:
        last_row = attentions[layer][0, :, -1, video].double()  # (H, F*T)
        last_row = last_row / last_row.sum(dim=-1, keepdim=True)
        per_layer.append(last_row.mean(dim=0).view(GROUPS, TOKENS).mean(dim=1))
    return normalise(torch.stack(per_layer).mean(dim=0)).float()


@pytest.mark.parametrize("layers", [(0,), (1, 2), (3,), (0, 1, 2, 3)])
def test_prior_matches_eager_attention(tiny_qwen, tiny_qwen_dir, eager_qwen, clip, layers):
    frames = Pipeline(settings(tiny_qwen_dir), model=tiny_qwen).read(clip)
    video = tiny_qwen.encode(frames.images, fps=sampled_fps(frames))
    reference = eager_prior(eager_qwen, tiny_qwen, frames, QUESTION, layers)
    with_exit = keyframe_prior(tiny_qwen, video, QUESTION, layers, early_exit=True)
    without_exit = keyframe_prior(tiny_qwen, video, QUESTION, layers, early_exit=False)
    torch.testing.assert_close(with_exit, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(without_exit, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", [Method.dytok, Method.visionzip])
@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.5, 0.9])
def test_kept_tokens_follow_budgets(tiny_qwen, tiny_qwen_dir, clip, method, ratio):
    pipeline = Pipeline(settings(tiny_qwen_dir, method=method, ratio=ratio, max_new_tokens=1), model=tiny_qwen)
    plan = pipeline.plan(clip, QUESTION)
    assert [s.tokens.shape[0] for s in plan.selections] == plan.budgets.tolist()
    assert [s.dominant + s.contextual for s in plan.selections] == plan.budgets.tolist()
    assert plan.kept_tokens == total_budget(ratio, GROUPS, TOKENS) == plan.visual_tokens.shape[0]
    inputs = tiny_qwen.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index, video=plan.encoded)
    assert int((inputs["input_ids"] == tiny_qwen.video_token_id()).sum()) == plan.kept_tokens  # no extra tokens
    assert inputs["position_ids"].shape == (3, 1, inputs["input_ids"].shape[1])
    if method is Method.visionzip:
        assert plan.budgets.max() - plan.budgets.min() <= 1


def test_positions_need_the_encoded_video(tiny_qwen, tiny_qwen_dir, clip):
    plan = Pipeline(settings(tiny_qwen_dir, method=Method.visionzip, ratio=0.5), model=tiny_qwen).plan(clip, QUESTION)
    with pytest.raises(ValueError, match="encoded video"):
        tiny_qwen.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index)


DYTOK = shutil.which("dytok")


@pytest.mark.skipif(DYTOK is None, reason="the dytok script is not installed (pip install -e .)")
def test_cli_json_record_has_one_frame_per_temporal_patch(tiny_qwen_dir, clip):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    environment.pop("DYTOK_MODEL", None)
    result = subprocess.run(
        [DYTOK, "ask", str(clip), "is there a dog?", "--model", str(tiny_qwen_dir), "--frames", str(FRAMES),
         "--ratio", "0.5", "--max-new-tokens", "4", "--json"],
        capture_output=True, text=True, env=environment, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    sampled = Pipeline(settings(tiny_qwen_dir)).read(clip)
    kept = total_budget(0.5, GROUPS, TOKENS)
    assert record["error"] is None and isinstance(record["answer"], str)
    assert record["tokens_per_frame"] == TOKENS
    assert record["visual_tokens"] == {"full": GROUPS * TOKENS, "kept": kept}
    frames = record["frames"]
    assert [f["index"] for f in frames] == list(range(GROUPS))
    assert [f["frame"] for f in frames] == list(sampled.indices[::2])
    assert [f["timestamp"] for f in frames] == [round(t, 3) for t in sampled.timestamps[::2]]
    assert sum(f["budget"] for f in frames) == kept
    assert all(f["dominant"] + f["contextual"] == f["budget"] <= TOKENS for f in frames)
    assert sum(f["weight"] for f in frames) == pytest.approx(1.0, abs=1e-5)
