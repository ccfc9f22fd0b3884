"""VisionZip scores from a Qwen-style vision tower (Qwen2.5-VL, Qwen3-VL, Qwen3.5).

The tower packs every temporal patch into one sequence split by `cu_seqlens`, and a block attends
within one temporal patch at a time, so "attention received" is computed per temporal patch, exactly
as the block attends, never across the packed sequence. The tower holds runs of spatial_merge_size**2
patches that its merger turns into one LLM token; scores are averaged over each run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attention import watch_attention

# Query rows per step when turning vision attention into "attention received": bounds the
# (heads, rows, patches) float32 block to a few hundred MB for the largest frames Qwen accepts.
_QUERY_CHUNK = 1024


def attention_received(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """(H, P, d) x2 for one attention segment -> (P,): attention each patch receives, averaged over
    heads and queries."""
    keys = key.float().transpose(-1, -2)  # (H, d, P)
    received = torch.zeros(key.shape[1], dtype=torch.float32, device=key.device)
    for start in range(0, query.shape[1], _QUERY_CHUNK):
        rows = query[:, start : start + _QUERY_CHUNK].float()  # (H, q, d)
        received += (rows @ keys * scaling).softmax(dim=-1).sum(dim=(0, 1))
    return received / (query.shape[0] * query.shape[1])


def video_features_with_scores(
    model: nn.Module, block: nn.Module, pixels: torch.Tensor, grid_thw: torch.Tensor, order: torch.Tensor | None = None
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The tower's own `get_video_features` output for one video, and per merged token the attention
    it receives in attention module `block` (F, T) and its key there averaged over heads (F, T, d).

    `order` (F*T,), when the tower reorders merged tokens (Qwen2.5-VL's windows), picks for each token
    in the LLM's order its run of patches in the tower's order; None: the orders agree."""
    captured: dict[str, Any] = {"query": [], "key": []}

    def capture(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        # (1, H, P', d): SDPA and eager see one temporal patch per call, FlashAttention the packed sequence.
        captured["query"].append(query[0])
        captured["key"].append(key[0])
        captured["scaling"] = scaling

    with torch.inference_mode(), watch_attention(model, "vision_config", {block: capture}):
        output = model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid_thw)
    groups, height, width = grid_thw[0].tolist()
    query = torch.cat(captured["query"], dim=1)  # (H, F*h*w, d), the tower's order
    key = torch.cat(captured["key"], dim=1)
    # Each temporal patch is one attention segment of h*w patches.
    segments = zip(query.split(height * width, dim=1), key.split(height * width, dim=1))
    attention = torch.cat([attention_received(q, k, captured["scaling"]) for q, k in segments])  # (F*h*w,)
    run = model.config.vision_config.spatial_merge_size**2

    def per_token(values: torch.Tensor) -> torch.Tensor:
        """(F*h*w, C) per patch in the tower's order -> (F, T, C) per merged token in the LLM's order."""
        merged = values.view(-1, run, values.shape[-1]).mean(dim=1)  # (F*T, C), the tower's order
        if order is not None:
            merged = merged[order]
        return merged.view(groups, -1, values.shape[-1])

    return output, per_token(attention[:, None])[..., 0], per_token(key.float().mean(dim=0))
