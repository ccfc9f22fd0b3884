"""DyToK inside the answering model's own prefill (DESIGN §2.3, "FastV-style in-LLM pruning").

One pass, no prior model: every token runs through decoder layers 0..K; at layer K the last prompt
token's query gives the frame weights (§2.1, from the prior layers <= K) and, per frame, which
tokens it attends to most; layers after K run only on those visual tokens and all text tokens.

The pass walks the model's own decoder layers with its own rotary embedding and mask functions, so
nothing of `transformers` is patched; query/key states come through `attention.watch_attention`.
`prune` stops after layer K (all `inspect` needs); `finish` runs the rest for an answer.

Positions. A kept token keeps the position it had in the uncompressed prompt (1-D for LLaVA, the
M-RoPE (t, h, w) for Qwen): its keys at layers <= K were rotated with it, and the layers after K
must see the same geometry. Decoding continues from the last prompt position + 1, as `generate`
does from the position ids it is given.

KV cache. Every layer, 0..K included, keeps only the kept tokens: one cache length for all layers,
so `generate` and its masks work unchanged, and the cache is `ratio` of the full one. Answer tokens
therefore never attend to dropped tokens, not even at layers <= K (where FastV's answer tokens still
would); at ratio 1 nothing differs from the model's own run.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache as memoise
from typing import Any

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from .attention import StopForward, watch_attention
from .budget import allocate_budgets, total_budget
from .models.base import EncodedVideo, VideoModel
from .prior import frame_weights_from_qk, last_query_attention, normalise


@dataclass
class PrunedPrefill:
    """The prefill stopped after layer K, pruned: what the layers after K and decoding need."""

    prune_layer: int
    weights: torch.Tensor  # (F,) normalised frame weights from the prior layers
    budgets: torch.Tensor  # (F,) visual tokens each frame keeps
    token_index: list[torch.Tensor]  # per frame (n_f,) kept tokens among its T, ascending
    keep: torch.Tensor  # (S_kept,) sequence positions kept, ascending
    input_ids: torch.Tensor  # (1, S_kept)
    position_ids: torch.Tensor  # (1, S_kept) or (3, 1, S_kept): the kept tokens' original positions
    hidden: torch.Tensor  # (1, S_kept, D) layer K's output at the kept positions
    past: list[tuple[torch.Tensor, torch.Tensor]]  # layers 0..K: keys, values (1, KVH, S_kept, d)


@memoise
def _cache_keyword(function: Any) -> str:
    # `transformers` 5.24 renamed `past_key_values` to `cache`, and drops the old name in 5.40.
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


def cache_argument(function: Any, cache: DynamicCache) -> dict[str, DynamicCache]:
    """`cache` as the keyword argument `function` takes it, on either side of the rename."""
    return {_cache_keyword(function): cache}


def _masks(text: torch.nn.Module, hidden: torch.Tensor, cache: DynamicCache, layer: int) -> dict:
    """The masks of each attention type for `hidden` as new tokens after what `cache` holds at `layer`
    (the first layer they run through)."""
    arguments = dict(config=text.config, inputs_embeds=hidden, attention_mask=None, layer_idx=layer)
    masks = {"full_attention": create_causal_mask(**arguments, **cache_argument(create_causal_mask, cache))}
    if "sliding_attention" in text.config.layer_types:
        sliding = create_sliding_window_causal_mask
        masks["sliding_attention"] = sliding(**arguments, **cache_argument(sliding, cache))
    return masks


def _run_layers(
    text: torch.nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor, cache: DynamicCache, layers: range
) -> torch.Tensor:
    if not layers:
        return hidden
    rotary = text.rotary_emb(hidden, position_ids)
    masks = _masks(text, hidden, cache, layers.start)
    for index in layers:
        layer = text.layers[index]
        hidden = layer(
            hidden,
            attention_mask=masks[text.config.layer_types[index]],
            position_embeddings=rotary,
            use_cache=True,
            **cache_argument(type(layer).forward, cache),
        )
    return hidden


def prune(
    model: VideoModel, video: EncodedVideo, question: str, ratio: float, prune_layer: int, prior_layers: tuple[int, ...]
) -> PrunedPrefill:
    """Run the prompt with every visual token through layers 0..`prune_layer` and prune it there."""
    if not prior_layers or max(prior_layers) > prune_layer:
        raise ValueError(f"prior layers must lie within 0-{prune_layer} (the prune layer)")
    prompt = model.prompt_tensors(question, video)
    frames, per_frame = video.num_frames, video.tokens_per_frame
    frame_positions = prompt.frame_positions
    scores: dict[int, torch.Tensor] = {}
    captured: dict[str, torch.Tensor] = {}

    def watch(layer: int):
        def callback(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            # query (1, H, S, d), key (1, KVH, S, d): the cache is empty, so keys are the whole prompt.
            last = query[0, :, -1, :]
            if layer in prior_layers:
                scores[layer] = frame_weights_from_qk(last, key[0][:, frame_positions, :], frames, scaling)
            if layer == prune_layer:
                # FastV's criterion: the attention actually paid, softmax over every key.
                captured["attention"] = last_query_attention(last, key[0], scaling)[frame_positions]

        return callback

    text = model.language_model()
    modules = model.text_attention_modules()
    cache = DynamicCache(config=text.config)
    callbacks = {modules[layer]: watch(layer) for layer in {*prior_layers, prune_layer}}
    with torch.inference_mode(), watch_attention(model.model, model.text_sub_config, callbacks):
        hidden = _run_layers(text, prompt.embeddings, prompt.position_ids, cache, range(prune_layer + 1))

    weights = normalise(torch.stack([scores[layer] for layer in prior_layers]).mean(dim=0)).cpu()
    budgets = allocate_budgets(weights, total_budget(ratio, frames, per_frame), cap=per_frame)
    attention = captured["attention"].view(frames, per_frame)  # (F, T)
    token_index = [
        row.topk(int(n)).indices.sort().values.cpu() for row, n in zip(attention, budgets.tolist())
    ]
    kept_frame_tokens = video.kept_index(token_index)[: int(budgets.sum())]  # without the extra tokens
    keep_mask = torch.ones(prompt.input_ids.shape[1], dtype=torch.bool, device=hidden.device)
    keep_mask[frame_positions] = False
    keep_mask[frame_positions[kept_frame_tokens.to(frame_positions.device)]] = True
    keep = keep_mask.nonzero()[:, 0]  # (S_kept,) ascending: the prompt's order is kept
    return PrunedPrefill(
        prune_layer=prune_layer,
        weights=weights,
        budgets=budgets,
        token_index=token_index,
        keep=keep,
        input_ids=prompt.input_ids[:, keep],
        position_ids=prompt.position_ids[..., keep],
        hidden=hidden[:, keep],
        past=[(layer.keys[:, :, keep], layer.values[:, :, keep]) for layer in cache.layers[: prune_layer + 1]],
    )


def finish(model: VideoModel, state: PrunedPrefill) -> tuple[DynamicCache, torch.Tensor]:
    """Run the kept tokens through the layers after K.

    Returns the cache of the whole prompt but its last token, which `generate` runs again, over
    that cache, to produce the first answer token through its own sampling and stopping machinery,
    and the logits at the last prompt position of this pass (1, V). `state` is not changed, so a
    plan can be answered more than once.
    """
    text = model.language_model()
    cache = DynamicCache(config=text.config)
    with torch.inference_mode():
        for layer, (keys, values) in enumerate(state.past):
            cache.update(keys, values, layer)
        hidden = _run_layers(text, state.hidden, state.position_ids, cache, range(state.prune_layer + 1, len(text.layers)))
        logits = model.model.get_output_embeddings()(text.norm(hidden[:, -1:]))[:, -1]
        cache.crop(-1)
    return cache, logits
