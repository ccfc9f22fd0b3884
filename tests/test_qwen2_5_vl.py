"""Qwen2.5-VL end to end against oracles that do not come from our code.

The tiny model merges 2 sampled frames into one temporal patch of 5x3 = 15 tokens, so 6 sampled
frames make 3 DyToK frames of T = 15 tokens.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch
from test_contract import QUESTION, own_generate, own_inputs, settings

from dytok_cli.math.budget import total_budget
from dytok_cli.config import Method
from dytok_cli.models.qwen2_5_vl import Qwen2_5_VL
from dytok_cli.pipeline import Pipeline
from dytok_cli.types import Frames

FRAMES = 6
GROUPS = 3  # temporal patches of 2 frames
TOKENS = 15  # per temporal patch


def uncompressed_positions(adapter, frames: Frames, question: str) -> tuple[torch.Tensor, int, int]:
    """The model's own M-RoPE positions (3, 1, S) for the processor's uncompressed prompt, and where
    its video placeholders start and end."""
    inputs = own_inputs(adapter, frames, question)
    positions, _ = adapter.model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    )
    video = (inputs["input_ids"][0] == adapter.video_token_id()).nonzero()[:, 0]
    return positions, int(video[0]), int(video[-1]) + 1


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
        assert plan.encoded.frame_seconds == pytest.approx(2 / Qwen2_5_VL.sampled_fps(sampled))


@pytest.mark.parametrize("method, ratio", [(Method.dytok, 0.3), (Method.none, 1.0)])
def test_text_and_answer_positions_continue_from_the_uncompressed_maximum(tiny_qwen, tiny_qwen_dir, clip, method, ratio):
    # The prompt whole in `generate`, as without prefix reuse (whose pieces the contract suite checks).
    pipeline = Pipeline(settings(tiny_qwen_dir, method=method, ratio=ratio, prefix_cache=False), model=tiny_qwen)
    frames = pipeline.read(clip)
    plan = pipeline.plan(clip, QUESTION)
    full, start, end = uncompressed_positions(tiny_qwen, frames, QUESTION)
    assert end - start == GROUPS * TOKENS
    with language_model_positions(tiny_qwen) as seen:
        answer = pipeline.answer(plan)
    prefill, steps = seen[0], seen[1:]
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
        own_generate(tiny_qwen, frames, QUESTION, max_new_tokens=3)
    assert torch.equal(own[1][-3:], own[0][-3:, :, -1:] + 1)  # its (t, h, w) rows, after its text row


def test_positions_need_the_encoded_video(tiny_qwen, tiny_qwen_dir, clip):
    plan = Pipeline(settings(tiny_qwen_dir, method=Method.visionzip, ratio=0.5), model=tiny_qwen).plan(clip, QUESTION)
    with pytest.raises(ValueError, match="encoded video"):
        tiny_qwen.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index)


def test_cli_json_record_has_one_frame_per_temporal_patch(dytok_here, tiny_qwen_dir, clip):
    result = dytok_here("ask", str(clip), "is there a dog?", "--model", str(tiny_qwen_dir), "--frames", str(FRAMES),
                        "--ratio", "0.5", "--max-new-tokens", "4", "--json")
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
