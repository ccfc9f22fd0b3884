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


# Where across windows. The keyframe prior above is normalised over one prompt's frames, so every window's
# weights sum to 1 however much or little the question attends to that window: fine for sharing a budget
# within a window, useless for choosing among windows. A window is scored instead by the attention its
# frames get in units of the attention the text of the prompt gets. Every window's prompt holds the same
# text around its frames (the template before the video, whose keys are the same in every window's prompt,
# then the question), so the text's share is a yardstick every window is measured with: in one prompt
# holding every window's frames, each frame's share would be its attention over one common total, and
# a frame's attention over the text's ranks frames of different windows the same way, up to how much the
# question's own tokens change with the frames before them. A frame is its tokens' mean (as in the prior),
# and a window its frames' mean, so that neither a frame of more tokens (a Qwen family at a higher
# resolution) nor a window of more frames (a longer shot) scores higher for its size alone.


def text_relative_frame_scores(
    attention: torch.Tensor, frame_positions: torch.Tensor, text_positions: torch.Tensor, num_frames: int
) -> torch.Tensor:
    """Each frame's mean attention per token over the text's attention: (F,), not normalised over frames.

    attention (S,): what the last prompt token pays every token of the prompt, a softmax over all of them
    (averaged over heads and layers); frame_positions (F*T,) the frames' tokens, frame-major; text_positions
    the prompt's tokens that are not visual."""
    per_token = attention[frame_positions].view(num_frames, -1).mean(dim=1)  # (F,)
    return per_token / attention[text_positions].sum()
