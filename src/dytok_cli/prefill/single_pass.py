"""DyToK inside the answering model's own prefill ("FastV-style in-LLM pruning").

One pass, no prior model: every token runs through decoder layers 0..K (`run_to_prune_layer`), where
the last prompt token's query is read at the prior layers (frame scores, §2.1) and at layer K (the
attention it pays each frame token: FastV's criterion); the caller turns those into budgets and kept
tokens with the pure math; `prune` keeps those tokens, and `finish` runs them through the layers after
K. The walk belongs to the family (`VideoModel.decoder()`); query/key states come through
`attention.watch_attention`, so nothing of `transformers` is patched.

Positions. A kept token keeps the position it had in the uncompressed prompt (1-D for LLaVA, the
M-RoPE (t, h, w) for Qwen): its keys at layers <= K were rotated with it, and the layers after K
must see the same geometry. Decoding continues from the last prompt position + 1, as `generate`
does from the position ids it is given.

KV cache. Every attention layer, 0..K included, keeps only the kept tokens: one cache length for all
layers, so `generate` and its masks work unchanged, and the cache is `ratio` of the full one. Answer
tokens therefore never attend to dropped tokens, not even at layers <= K (where FastV's answer tokens
still would); at ratio 1 nothing differs from the model's own run. A linear-attention layer <= K
(a hybrid decoder's) cannot drop a token from its state: it keeps what it made of all of them.

Generation starts from a cache of the kept prompt but its last token, which `generate` runs itself
(see `models.decoder`): the layers after K run the kept tokens before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..attention import watch_attention
from ..math.prior import frame_weights_from_qk, last_query_attention
from ..models.base import VideoModel
from ..types import EncodedVideo, PromptTensors, PrunedPrefill, Question
from .prefix import PrefixReuse


@dataclass
class Probe:
    """The prefill after layer K, unpruned, and what the last prompt token's query saw on the way."""

    prune_layer: int
    prompt: PromptTensors
    hidden: torch.Tensor  # (1, S, D) layer K's output
    cache: Any  # the decoder's state of layers 0..K over the whole prompt (what `Decoder.kept_cache` takes)
    scores: dict[int, torch.Tensor]  # prior layer -> (F,) frame scores
    attention: torch.Tensor  # (F, T) the attention the last token pays each frame token at layer K


def run_to_prune_layer(
    model: VideoModel,
    video: EncodedVideo,
    question: Question | str,
    prune_layer: int,
    prior_layers: tuple[int, ...],
    reuse: PrefixReuse | None = None,
    thinking: bool = False,
) -> Probe:
    """Run the prompt with every visual token of `video` through layers 0..`prune_layer`; with `reuse`,
    only the question's own tokens, after the video's prefix (run once, for its first question). `thinking` is
    the chat template's thinking switch (`VideoModel.chat_text`)."""
    if not prior_layers or max(prior_layers) > prune_layer:
        raise ValueError(f"prior layers must lie within 0-{prune_layer} (the prune layer)")
    prompt = model.prompt_tensors(question, video, thinking=thinking)
    frame_positions = prompt.frame_positions
    scores: dict[int, torch.Tensor] = {}
    captured: dict[str, torch.Tensor] = {}

    def watch(layer: int):
        def callback(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            # query (1, H, Q, d), key (1, KVH, S', d): keys of the prompt so far, cache included. A decoder
            # may run the prompt in pieces (a hybrid's last token alone); the last call sees its last token.
            last = query[0, :, -1, :]
            if layer in prior_layers:
                scores[layer] = frame_weights_from_qk(last, key[0][:, frame_positions, :], video.num_frames, scaling)
            if layer == prune_layer:
                # FastV's criterion: the attention actually paid, softmax over every key.
                captured["attention"] = last_query_attention(last, key[0], scaling)[frame_positions]

        return callback

    decoder = model.decoder()
    layers = range(prune_layer + 1)
    head = reuse.head(decoder, prompt, layers, keep_hidden=True) if reuse is not None else None
    modules = model.text_attention_modules()
    callbacks = {modules[layer]: watch(layer) for layer in {*prior_layers, prune_layer}}
    with torch.inference_mode(), watch_attention(model.model, model.text_sub_config, callbacks):
        hidden, cache = decoder.prefill(prompt, layers, head)
    attention = captured["attention"].view(video.num_frames, video.tokens_per_frame)
    return Probe(prune_layer, prompt, hidden, cache, scores, attention)


def prune(model: VideoModel, probe: Probe, kept_index: torch.Tensor) -> PrunedPrefill:
    """Keep the text and the visual tokens `kept_index` picks (positions among the video's tokens,
    ascending within each frame, the extra tokens included) after layer K."""
    prompt = probe.prompt
    device = probe.hidden.device
    visual_kept = prompt.visual_positions[kept_index.to(prompt.visual_positions.device)]
    keep_mask = torch.ones(prompt.input_ids.shape[1], dtype=torch.bool, device=device)
    keep_mask[prompt.visual_positions] = False
    keep_mask[visual_kept] = True
    keep = keep_mask.nonzero()[:, 0]  # (S_kept,) ascending: the prompt's order is kept
    # Where the kept visual tokens sit in the pruned sequence, in the same order as their rows.
    rank = torch.cumsum(keep_mask, dim=0) - 1
    rows = kept_index.to(device)
    kept_prompt = PromptTensors(
        input_ids=prompt.input_ids[:, keep],
        embeddings=prompt.embeddings[:, keep],
        position_ids=prompt.position_ids[..., keep],
        visual_positions=rank[visual_kept],
        frame_positions=rank[visual_kept][: int((kept_index < prompt.frame_positions.numel()).sum())],
        deepstack=tuple(layer[rows] for layer in prompt.deepstack),
        layer_inputs=None if prompt.layer_inputs is None else prompt.layer_inputs[:, keep],
    )
    decoder = model.decoder()
    return PrunedPrefill(
        prune_layer=probe.prune_layer,
        keep=keep,
        prompt=kept_prompt,
        hidden=probe.hidden[:, keep],
        past=decoder.kept_cache(probe.cache, keep[:-1], range(probe.prune_layer + 1)),
    )


def finish(model: VideoModel, state: PrunedPrefill) -> Any:
    """Run the kept tokens but the last through the layers after K; returns the cache `generate` starts
    from, to which it adds the last prompt token. `state` is not changed, so a plan can be answered more
    than once."""
    decoder = model.decoder()
    before_last = state.prompt.length - 1
    cache = decoder.resume(state.past, before_last)
    with torch.inference_mode():
        decoder.run(state.hidden[:, :before_last], state.prompt.rows(0, before_last), cache,
                    range(state.prune_layer + 1, decoder.num_layers))
    return cache
