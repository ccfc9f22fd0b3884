"""VisionZip scores of the Qwen families' vision towers (models/vision_attention.py) against the tower's
own attention module, recomputed from what it received: its hidden states, its rotary embedding (the
model's own `apply_rotary_pos_emb_vision`) and its `cu_seqlens` segments.

The tiny models merge 2 sampled frames into one temporal patch, so 6 sampled frames make 3 of them.
"""

from __future__ import annotations

import sys

import pytest
import torch
from test_contract import settings

from dytok_cli.pipeline import Pipeline

GROUPS = 3  # temporal patches of 2 frames

# Per family: the vision block whose attention scores the tokens, tokens per temporal patch, and
# whether the tower holds patches in another order than the LLM's (Qwen2.5-VL's attention windows).
SCORED = {
    "qwen2_5_vl": (2, 15, True),  # the last full-attention block: block 3 is windowed
    "qwen3_vl": (-1, 12, False),  # the last block, whose output feeds the merger
    "qwen3_vl_moe": (-1, 12, False),
    "qwen3_5": (-1, 12, False),
    "qwen3_5_moe": (-1, 12, False),
}


@pytest.mark.parametrize("name", sorted(SCORED))
def test_selector_scores_are_the_scored_block_per_temporal_patch(build_family, load_family, clip, name):
    directory, adapter = build_family(name), load_family(name)
    block, tokens, reordered = SCORED[name]
    visual = adapter.model.model.visual
    if name == "qwen2_5_vl":
        assert list(adapter.model.config.vision_config.fullatt_block_indexes) == [1, 2] and len(visual.blocks) == 4
    attention_module = visual.blocks[block].attn
    apply_rotary_pos_emb_vision = sys.modules[type(attention_module).__module__].apply_rotary_pos_emb_vision
    frames = Pipeline(settings(directory), model=adapter).read(clip)
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
        encoded = adapter.encode(frames)
    finally:
        for handle in handles:
            handle.remove()

    with torch.inference_mode():
        hidden = seen["hidden"]  # (P, C) in the tower's order
        qkv = attention_module.qkv(hidden).view(hidden.shape[0], 3, attention_module.num_heads, -1)
        query, key = apply_rotary_pos_emb_vision(qkv[:, 0], qkv[:, 1], *seen["rope"])  # (P, H, d)
        bounds = seen["segments"].tolist()
        assert len(bounds) == GROUPS + 1  # one attention segment per temporal patch
        received = torch.cat([
            torch.einsum("qhd,khd->hqk", query[a:b], key[a:b]).mul(attention_module.scaling).softmax(-1).mean(dim=(0, 1))
            for a, b in zip(bounds[:-1], bounds[1:])
        ])  # (P,)
        # Which merged run of 4 patches became which LLM token, found from the features themselves.
        same = (encoded.features.flatten(0, 1)[:, None] == seen["merged"][None]).all(dim=-1)  # (F*T, F*T)
        assert same.sum(dim=1).eq(1).all()
        run_of_token = same.float().argmax(dim=1)
        # Windows reorder the runs; without them the tokens reach the LLM in the merger's order.
        assert torch.equal(run_of_token, torch.arange(GROUPS * tokens)) is not reordered
        expected_attention = received.view(-1, 4).mean(dim=1)[run_of_token].view(GROUPS, tokens)
        expected_keys = key.mean(dim=1).view(-1, 4, key.shape[-1]).mean(dim=1)[run_of_token].view(GROUPS, tokens, -1)
    torch.testing.assert_close(encoded.attention, expected_attention, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded.keys, expected_keys, atol=1e-6, rtol=0)
    # Within each temporal patch the attention received sums to 1 over its patches (1/4 over merged tokens).
    torch.testing.assert_close(encoded.attention.sum(dim=1), torch.full((GROUPS,), 0.25), atol=1e-6, rtol=0)
