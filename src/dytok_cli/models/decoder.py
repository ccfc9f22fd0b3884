"""A decoder stack walked layer by layer: what the single pass (`prefill/single_pass.py`) asks of a family.

`Decoder` is the Qwen2-style stack every supported family shares (`layers`, `rotary_emb`, `norm`, a
`layer_types` list in its config, one key/value cache entry per layer); a family whose decoder differs
returns its own subclass from `VideoModel.decoder()` (`HybridDecoder`: linear-attention layers among the
softmax ones). Layers are called one by one with the model's own rotary embedding and mask functions, so
nothing of `transformers` is patched.

Handing over to `generate`. The cache a pruned prefill hands over holds the prompt but its last token,
and `generate` runs that token itself, producing the first answer token through its own sampling and
stopping machinery. So the layers after the prune layer run every kept token but the last, and
`kept_cache` keeps, of the layers up to it, what they hold for the tokens before the last.

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
from transformers.masking_utils import (
    create_causal_mask,
    create_sliding_window_causal_mask,
)

from ..types import Prefix, PromptTensors


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

    def _masks(self, hidden: torch.Tensor, cache: DynamicCache, layers: range) -> dict[str, Any]:
        """The mask of each attention type for `hidden` as new tokens after what `cache` holds at the
        first of `layers`, the layers they run through."""
        config = self.text.config
        arguments = dict(config=config, inputs_embeds=hidden, attention_mask=None, layer_idx=layers.start)
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
        masks = self._masks(hidden, cache, layers)
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

    def prefill(self, prompt: PromptTensors, layers: range, head: Prefix | None = None) -> tuple[torch.Tensor, Any]:
        """Run `prompt` through `layers`, from an empty cache or after `head` (its first tokens, run
        through the same layers for an earlier question: prefix reuse). Returns their output (1, S, D)
        and the state of those layers that `kept_cache` takes."""
        cache, start = self.start(head)
        hidden = self.run(prompt.embeddings[:, start:], prompt.rows(start, prompt.length), cache, layers)
        return self._joined(head, hidden), cache

    def start(self, head: Prefix | None) -> tuple[DynamicCache, int]:
        """A cache to run a prompt in, holding `head`'s tokens if given, and where the prompt goes on."""
        return (self.resume(head.past, head.length), head.length) if head is not None else (self.new_cache(), 0)

    @staticmethod
    def _joined(head: Prefix | None, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([head.hidden, hidden], dim=1) if head is not None else hidden

    def snapshot(self, cache: DynamicCache, layers: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """What `cache` holds at `layers`, as `resume` takes it; `cache` may go on without changing it."""
        # A key/value layer grows by concatenation, never in place, so its tensors can be shared.
        return [(cache.layers[i].keys, cache.layers[i].values) for i in layers]

    def kept_cache(self, state: DynamicCache, keep: torch.Tensor, layers: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values of `layers` at sequence positions `keep` (S_kept,), ascending and without
        the prompt's last token: (1, KVH, S_kept, d) each."""
        return [(state.layers[i].keys[:, :, keep], state.layers[i].values[:, :, keep]) for i in layers]

    def resume(self, past: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> DynamicCache:
        """A fresh cache holding `past` (from `kept_cache` or `snapshot`) as its first layers, `length`
        tokens of a prompt; `past` is not changed."""
        cache = self.new_cache()
        for layer, (keys, values) in enumerate(past):
            cache.update(keys, values, layer)
        return cache


class HybridDecoder(Decoder):
    """A stack whose `linear_attention` layers (Qwen3.5's Gated DeltaNet) carry a recurrent state and a
    short convolution's state instead of keys and values, between softmax-attention layers.

    Those states summarise every token a layer has seen and cannot drop one, nor be rolled back by one.
    So `prefill` runs the prompt but its last token first and keeps a copy of the linear layers' states
    there, then runs the last token (whose query the prior reads at the attention layers); `kept_cache`
    hands over those copies whole, beside the attention layers' keys and values of the kept tokens. The
    linear layers up to the prune layer thus keep what they made of every token, as FastV's early
    layers keep their keys and values.
    """

    def _masks(self, hidden: torch.Tensor, cache: DynamicCache, layers: range) -> dict[str, Any]:
        # Linear attention masks only padding, and one unpadded sequence has none (the model's own
        # `create_recurrent_attention_mask` gives None for it too). The softmax layers' mask is sized by
        # what the first of them in the walk holds: a linear layer holds no sequence length.
        masks: dict[str, Any] = {"linear_attention": None}
        attention = [i for i in layers if self.layer_types[i] != "linear_attention"]
        if attention:
            masks.update(super()._masks(hidden, cache, range(attention[0], layers.stop)))
        return masks

    def _linear(self, layers: range) -> list[int]:
        return [i for i in layers if self.layer_types[i] == "linear_attention"]

    def prefill(self, prompt: PromptTensors, layers: range, head: Prefix | None = None) -> tuple[torch.Tensor, Any]:
        cache, start = self.start(head)
        last = prompt.length - 1
        body = self.run(prompt.embeddings[:, start:last], prompt.rows(start, last), cache, layers)
        before_last = {
            i: (cache.layers[i].conv_states[0].clone(), cache.layers[i].recurrent_states[0].clone())
            for i in self._linear(layers)
        }
        tail = self.run(prompt.embeddings[:, last:], prompt.rows(last, last + 1), cache, layers)
        return self._joined(head, torch.cat([body, tail], dim=1)), (cache, before_last)

    def snapshot(self, cache: DynamicCache, layers: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # A linear layer's states are updated in place: copies, so the cache may go on.
        linear = set(self._linear(layers))
        return [
            (cache.layers[i].conv_states[0].clone(), cache.layers[i].recurrent_states[0].clone())
            if i in linear else (cache.layers[i].keys, cache.layers[i].values)
            for i in layers
        ]

    def kept_cache(self, state: Any, keep: torch.Tensor, layers: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer of `layers`: the keys and values at `keep` of an attention layer, or the (convolution,
        recurrent) states of a linear one after every token but the last."""
        cache, before_last = state
        return [
            before_last[i] if i in before_last else (cache.layers[i].keys[:, :, keep], cache.layers[i].values[:, :, keep])
            for i in layers
        ]

    def resume(self, past: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> DynamicCache:
        cache = self.new_cache()
        for layer, (first, second) in enumerate(past):
            if self.layer_types[layer] == "linear_attention":
                # Both copy into the cache's own buffers, so `past` is not changed by later steps.
                _restore_convolution(cache, layer, first, length)
                cache.update_recurrent_state(second, layer)
            else:
                cache.update(first, second, layer)
        return cache


def _restore_convolution(cache: DynamicCache, layer: int, state: torch.Tensor, length: int) -> None:
    """Give linear-attention `layer` of the empty `cache` the convolution `state` (..., width) it had after
    `length` tokens.

    The cache counts a linear layer's tokens by the width of the inputs it is given (from `transformers`
    5.25; `get_seq_length`, and so where `generate` goes on, may read that count) and keeps the last
    `width` of them. So the state goes in as the last columns of `length` columns: the ones before it
    leave nothing in the state, and zeros viewed with stride 0 stand for them without taking memory.
    """
    width = state.shape[-1]
    if length > width:
        unseen = state.new_zeros(()).expand(*state.shape[:-1], length - width)
        cache.update_conv_state(unseen, layer, conv_kernel_size=width)
    # A state after fewer tokens than its width is zeros before them, as the cache pads it again.
    cache.update_conv_state(state[..., -min(length, width):], layer, conv_kernel_size=width)
