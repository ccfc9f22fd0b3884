"""A decoder stack walked layer by layer: what the single pass (`prefill/single_pass.py`) asks of a family.

`Decoder` is the Qwen2-style stack every supported family shares (`layers`, `rotary_emb`, `norm`, a
`layer_types` list in its config, one key/value cache entry per layer); a family whose decoder differs
returns its own subclass from `VideoModel.decoder()`. Layers are called one by one with the model's own
rotary embedding and mask functions, so nothing of `transformers` is patched.

DeepStack. Some families add vision features to the hidden states of the first decoder layers at the
visual positions (Qwen3-VL); `PromptTensors.deepstack` carries them, row for row with
`visual_positions`, and `run` adds the i-th after layer i, as the model's own forward does. After
pruning they hold only the kept tokens' rows, so a prune layer before the last of them injects into the
kept tokens alone.
"""

from __future__ import annotations

import inspect
from functools import cache as memoise
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from ..types import PromptTensors


@memoise
def _cache_keyword(function: Any) -> str:
    # `transformers` 5.24 renamed `past_key_values` to `cache`, and drops the old name in 5.40.
    return "cache" if "cache" in inspect.signature(function).parameters else "past_key_values"


def cache_argument(function: Any, cache: DynamicCache) -> dict[str, DynamicCache]:
    """`cache` as the keyword argument `function` takes it, on either side of the rename."""
    return {_cache_keyword(function): cache}


class Decoder:
    def __init__(self, text_model: nn.Module, lm_head: nn.Module) -> None:
        self.text = text_model
        self.lm_head = lm_head

    @property
    def num_layers(self) -> int:
        return len(self.text.layers)

    @property
    def layer_types(self) -> list[str]:
        # A config without `layer_types` (Qwen3-VL's) has full attention in every layer.
        return getattr(self.text.config, "layer_types", None) or ["full_attention"] * self.num_layers

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.text.config)

    def _masks(self, hidden: torch.Tensor, cache: DynamicCache, layer: int) -> dict[str, Any]:
        """The mask of each attention type for `hidden` as new tokens after what `cache` holds at `layer`
        (the first layer they run through)."""
        config = self.text.config
        arguments = dict(config=config, inputs_embeds=hidden, attention_mask=None, layer_idx=layer)
        masks = {"full_attention": create_causal_mask(**arguments, **cache_argument(create_causal_mask, cache))}
        if "sliding_attention" in self.layer_types:
            sliding = create_sliding_window_causal_mask
            masks["sliding_attention"] = sliding(**arguments, **cache_argument(sliding, cache))
        return masks

    def run(self, hidden: torch.Tensor, prompt: PromptTensors, cache: DynamicCache, layers: range) -> torch.Tensor:
        """Run `hidden` (1, S, D), the rows of `prompt`, through `layers`, appending to `cache`."""
        if not layers:
            return hidden
        rotary = self.text.rotary_emb(hidden, prompt.position_ids)
        masks = self._masks(hidden, cache, layers.start)
        layer_types = self.layer_types
        deepstack = prompt.deepstack
        for index in layers:
            layer = self.text.layers[index]
            hidden = layer(
                hidden,
                attention_mask=masks[layer_types[index]],
                position_embeddings=rotary,
                use_cache=True,
                **cache_argument(type(layer).forward, cache),
            )
            if index < len(deepstack):
                visual = prompt.visual_positions
                hidden[:, visual] = hidden[:, visual] + deepstack[index].to(hidden)
        return hidden

    def kept_cache(self, cache: DynamicCache, keep: torch.Tensor, layers: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values of `layers` at sequence positions `keep` (S_kept,): (1, KVH, S_kept, d) each."""
        return [(cache.layers[i].keys[:, :, keep], cache.layers[i].values[:, :, keep]) for i in layers]

    def resume(self, past: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
        """A fresh cache holding `past` (from `kept_cache`) as its first layers; `past` is not changed."""
        cache = self.new_cache()
        for layer, (keys, values) in enumerate(past):
            cache.update(keys, values, layer)
        return cache

    def hand_over(self, cache: DynamicCache) -> DynamicCache:
        """The cache of the whole prompt but its last token, which `generate` runs again over it to
        produce the first answer token through its own sampling and stopping machinery."""
        cache.crop(-1)
        return cache
