"""The two-pass keyframe prior: a prefill of the prompt with every visual token through
the prior model, reading the last prompt token's query and the frames' keys at the prior layers through
the attention seam (no `output_attentions`, so SDPA and FlashAttention work). The walk through the
decoder ends after the last layer the prior reads, and with prefix reuse runs only the question's own
tokens after the video's prefix (run once, through the same layers, for its first question).

`window_prior` is the same read of one window of a long video, with the score that ranks it among the
others (`math.prior.text_relative_frame_scores`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..attention import watch_attention
from ..math.prior import combine_layers, frame_weights_from_qk, last_query_attention, text_relative_frame_scores
from ..models.base import VideoModel
from ..types import EncodedVideo, PromptTensors, Question
from .prefix import PrefixReuse

# What is read at a prior layer: (the last prompt token's query (H, d), every key of the prompt (KVH, S, d),
# the attention's scaling, the prompt) -> what is kept of that layer.
Read = Callable[[torch.Tensor, torch.Tensor, float, PromptTensors], Any]


def _read_layers(
    prior: VideoModel,
    video: EncodedVideo,
    question: Question | str,
    layers: tuple[int, ...],
    read: Read,
    early_exit: bool = True,
    reuse: PrefixReuse | None = None,
    thinking: bool = False,
) -> tuple[PromptTensors, dict[int, Any]]:
    """A prefill of `question` with every visual token of `video`, `read` at each of `layers`: the prompt,
    and what was read, by layer."""
    prompt = prior.prompt_tensors(question, video, thinking=thinking)
    decoder = prior.decoder()
    walk = range(max(layers) + 1 if early_exit else decoder.num_layers)
    head = reuse.head(decoder, prompt, walk) if reuse is not None else None
    per_layer: dict[int, Any] = {}

    def capture(layer: int):
        def callback(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            # query (1, H, Q, d) for the tokens after the head; key (1, KVH, S, d) for all, cache included
            per_layer[layer] = read(query[0, :, -1, :], key[0], scaling, prompt)

        return callback

    modules = prior.text_attention_modules()
    callbacks = {modules[layer]: capture(layer) for layer in layers}
    cache, start = decoder.start(head)
    with torch.inference_mode(), watch_attention(prior.model, prior.text_sub_config, callbacks):
        decoder.run(prompt.embeddings[:, start:], prompt.rows(start, prompt.length), cache, walk)
    return prompt, per_layer


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

    def frame_weights(query: torch.Tensor, keys: torch.Tensor, scaling: float, prompt: PromptTensors) -> torch.Tensor:
        return frame_weights_from_qk(query, keys[:, prompt.frame_positions, :], video.num_frames, scaling)

    _, per_layer = _read_layers(prior, video, question, layers, frame_weights, early_exit, reuse, thinking)
    return combine_layers([per_layer[layer] for layer in layers]).cpu()


@dataclass(frozen=True)
class WindowPrior:
    """The prior's read of one window: where within it, and how much it holds for the question."""

    weights: torch.Tensor  # (F,) normalised over the window's frames: `keyframe_prior`'s, to the bit
    frame_scores: torch.Tensor  # (F,) on the scale every window shares (`text_relative_frame_scores`), float64

    @property
    def score(self) -> float:
        """The window's: its frames' mean score (a mean, so a longer window does not score higher for its
        length; see `math.prior`)."""
        return float(self.frame_scores.mean())


def window_prior(
    prior: VideoModel, video: EncodedVideo, question: Question | str, layers: tuple[int, ...], thinking: bool = False
) -> WindowPrior:
    """`keyframe_prior` of one window's frames `video`, and each frame's score on the scale every window of
    every video shares, from one prefill that ends after the deepest of `layers`: the attention the last
    prompt token pays every token (a softmax over the whole prompt), averaged over heads, then over `layers`,
    a frame's tokens' mean measured in the text's share."""

    def both(query: torch.Tensor, keys: torch.Tensor, scaling: float, prompt: PromptTensors) -> tuple[torch.Tensor, torch.Tensor]:
        weights = frame_weights_from_qk(query, keys[:, prompt.frame_positions, :], video.num_frames, scaling)
        return weights, last_query_attention(query, keys, scaling)  # (F,), (S,)

    prompt, per_layer = _read_layers(prior, video, question, layers, both, thinking=thinking)
    weights = combine_layers([per_layer[layer][0] for layer in layers]).cpu()
    attention = torch.stack([per_layer[layer][1] for layer in layers]).mean(dim=0).double().cpu()  # (S,)
    text = torch.ones(prompt.length, dtype=torch.bool, device="cpu")  # indexed with positions moved to the host
    text[prompt.visual_positions.cpu()] = False
    scores = text_relative_frame_scores(attention, prompt.frame_positions.cpu(), text.nonzero()[:, 0], video.num_frames)
    return WindowPrior(weights, scores)
