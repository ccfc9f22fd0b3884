"""The two-pass keyframe prior (DESIGN §2.1): a prefill of the prompt with every visual token through
the prior model, reading the last prompt token's query and the frames' keys at the prior layers through
the attention seam (no `output_attentions`, so SDPA and FlashAttention work), and stopping the forward
pass after the last layer it needs."""

from __future__ import annotations

import torch

from ..attention import StopForward, watch_attention
from ..models.base import VideoModel
from ..prior import combine_layers, frame_weights_from_qk
from ..types import EncodedVideo


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
    return combine_layers([per_layer[layer] for layer in layers]).cpu()
