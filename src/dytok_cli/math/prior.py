"""The keyframe prior's math: how strongly the question's last token attends to each
frame, from post-RoPE query/key states. Pure functions; `prefill/` runs the models that produce q/k."""

from __future__ import annotations

import torch


def last_query_attention(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """How much the last prompt token attends to each of `keys`, averaged over heads.

    query (H, d) post-RoPE; keys (KVH, N, d) post-RoPE. Grouped-query KV heads are repeated to match
    the query heads; the softmax runs over the given keys only, in float32. Returns (N,), summing to 1.
    """
    heads, kv_heads = query.shape[0], keys.shape[0]
    keys = keys.float().repeat_interleave(heads // kv_heads, dim=0)  # (H, N, d)
    logits = torch.einsum("hd,hnd->hn", query.float(), keys) * scaling  # (H, N)
    return logits.softmax(dim=-1).mean(dim=0)


def frame_weights_from_qk(
    query: torch.Tensor, keys: torch.Tensor, num_frames: int, scaling: float
) -> torch.Tensor:
    """One layer's frame scores from the last prompt token's query and the frames' keys.

    query (H, d); keys (KVH, F*T, d), frame-major, without any token that follows the frames.
    Returns (F,): the mean attention the tokens of each frame receive (the F values sum to 1/T).
    """
    return last_query_attention(query, keys, scaling).view(num_frames, -1).mean(dim=1)


def normalise(weights: torch.Tensor) -> torch.Tensor:
    return weights / weights.sum()


def combine_layers(scores: list[torch.Tensor]) -> torch.Tensor:
    """Frame weights from per-layer frame scores [(F,), ...]: their mean, normalised to sum to 1."""
    if not scores:
        raise ValueError("the prior needs the scores of at least one layer")
    return normalise(torch.stack(scores).mean(dim=0))  # (F,)
