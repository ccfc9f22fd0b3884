"""See the query/key states of chosen attention layers through `transformers`' public attention seam.

A function is registered in `AttentionInterface` (and, under the same name, the matching mask
function in `AttentionMaskInterface`, or the mask would silently disappear) and selected for one
sub-model of one model *instance* with `set_attn_implementation`. It hands the post-RoPE query and
key states of the modules we are watching to a callback, then delegates to the attention kernel the
model was using, so outputs are unchanged. The registry is process-wide, so no state lives in it:
the callback is stored on the watched module itself and removed on exit, and two models in one
process (a prior model and an answering model) never see each other's probes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# query (B, H, Q, d), key (B, KVH, K, d), scaling — what the model's own kernel receives.
AttentionCallback = Callable[[torch.Tensor, torch.Tensor, float], None]

_CALLBACK_ATTRIBUTE = "_dytok_attention_callback"
_PROBE_PREFIX = "dytok_probe:"


def _delegate_for(implementation: str | None) -> str:
    # Eager has no registered function; SDPA computes the same attention and keeps masks compatible.
    if implementation in ALL_ATTENTION_FUNCTIONS and implementation in ALL_MASK_ATTENTION_FUNCTIONS:
        return implementation
    return "sdpa"


def _register_probe(delegate: str) -> str:
    name = _PROBE_PREFIX + delegate
    if name in ALL_ATTENTION_FUNCTIONS:
        return name
    kernel = ALL_ATTENTION_FUNCTIONS[delegate]

    def probe(module: nn.Module, query, key, value, attention_mask, scaling=None, **kwargs):
        callback = getattr(module, _CALLBACK_ATTRIBUTE, None)
        if callback is not None:
            callback(query, key, scaling if scaling is not None else query.shape[-1] ** -0.5)
        return kernel(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    AttentionInterface.register(name, probe)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[delegate])
    return name


@contextmanager
def watch_attention(
    model: nn.Module, sub_config: str, callbacks: Mapping[nn.Module, AttentionCallback]
) -> Iterator[None]:
    """Call `callbacks[module](query, key, scaling)` whenever a watched attention module runs.

    `sub_config` names the sub-model whose attention is routed through the probe ("text_config",
    "vision_config"); the rest of the model keeps its own implementation. Everything is undone on exit.
    """
    config = getattr(model.config, sub_config)
    original = config._attn_implementation
    probe = _register_probe(_delegate_for(original))
    for module, callback in callbacks.items():
        setattr(module, _CALLBACK_ATTRIBUTE, callback)
    model.set_attn_implementation({sub_config: probe})
    try:
        yield
    finally:
        model.set_attn_implementation({sub_config: original})
        for module in callbacks:
            delattr(module, _CALLBACK_ATTRIBUTE)
