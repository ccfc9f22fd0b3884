"""The keyframe prior (DESIGN §2.1): how strongly the question's last token attends to each frame.

The math is a pure function of query/key states; `keyframe_prior` gathers those states from a
prefill through the attention seam (no `output_attentions`, so SDPA and FlashAttention work) and
stops the forward pass after the last layer it needs.
"""

from __future__ import annotations

import torch

from .attention import StopForward, watch_attention
from .models.base import EncodedVideo, VideoModel


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


def keyframe_prior(
    prior: VideoModel, video: EncodedVideo, question: str, layers: tuple[int, ...], early_exit: bool = True
) -> torch.Tensor:
    """Normalised frame weights (F,) from a prefill of `question` with every visual token of `video`.

    The per-layer scores are averaged over `layers`; with `early_exit` the forward pass ends as soon
    as the deepest of them has been seen.
    """
    inputs = prior.build_inputs(question, video.all_tokens(), video=video)
    visual_positions = prior.video_positions(inputs)[: video.num_frames * video.tokens_per_frame]
    last_layer = max(layers)
    per_layer: dict[int, torch.Tensor] = {}

    def capture(layer: int):
        def callback(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            # query (1, H, S, d), key (1, KVH, S, d)
            per_layer[layer] = frame_weights_from_qk(
                query[0, :, -1, :], key[0][:, visual_positions, :], video.num_frames, scaling
            )
            if early_exit and layer == last_layer:
                raise StopForward

        return callback

    modules = prior.text_attention_modules()
    callbacks = {modules[layer]: capture(layer) for layer in layers}
    with torch.inference_mode(), watch_attention(prior.model, prior.text_sub_config, callbacks):
        try:
            prior.prefill(inputs)
        except StopForward:
            pass
    scores = torch.stack([per_layer[layer] for layer in layers])  # (len(L), F)
    return normalise(scores.mean(dim=0)).cpu()
