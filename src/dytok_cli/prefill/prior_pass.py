"""The two-pass keyframe prior: a prefill of the prompt with every visual token through
the prior model, reading the last prompt token's query and the frames' keys at the prior layers through
the attention seam (no `output_attentions`, so SDPA and FlashAttention work). The walk through the
decoder ends after the last layer the prior reads, and with prefix reuse runs only the question's own
tokens after the video's prefix (run once, through the same layers, for its first question)."""

from __future__ import annotations

import torch

from ..attention import watch_attention
from ..math.prior import combine_layers, frame_weights_from_qk
from ..models.base import VideoModel
from ..types import EncodedVideo, Question
from .prefix import PrefixReuse


def keyframe_prior(
    prior: VideoModel,
    video: EncodedVideo,
    question: Question | str,
    layers: tuple[int, ...],
    early_exit: bool = True,
    reuse: PrefixReuse | None = None,
    thinking: bool = False,
) -> torch.Tensor:
    """Normalised frame weights (F,) from a prefill of `question` with every visual token of `video`.

    The per-layer scores are averaged over `layers`; with `early_exit` the walk ends after the deepest
    of them, else it runs every layer. `thinking` is the chat template's thinking switch (`VideoModel.chat_text`).
    """
    prompt = prior.prompt_tensors(question, video, thinking=thinking)
    decoder = prior.decoder()
    walk = range(max(layers) + 1 if early_exit else decoder.num_layers)
    head = reuse.head(decoder, prompt, walk) if reuse is not None else None
    per_layer: dict[int, torch.Tensor] = {}

    def capture(layer: int):
        def callback(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            # query (1, H, Q, d) for the tokens after the head; key (1, KVH, S, d) for all, cache included
            per_layer[layer] = frame_weights_from_qk(
                query[0, :, -1, :], key[0][:, prompt.frame_positions, :], video.num_frames, scaling
            )

        return callback

    modules = prior.text_attention_modules()
    callbacks = {modules[layer]: capture(layer) for layer in layers}
    cache, start = decoder.start(head)
    with torch.inference_mode(), watch_attention(prior.model, prior.text_sub_config, callbacks):
        decoder.run(prompt.embeddings[:, start:], prompt.rows(start, prompt.length), cache, walk)
    return combine_layers([per_layer[layer] for layer in layers]).cpu()
