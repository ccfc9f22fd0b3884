"""Which decoder layers the prior reads and where the single pass prunes: parsing and defaults.
Pure functions over layer counts (no model), shared by the settings and the methods.

Both read softmax attention (the last prompt token's query against the keys), which a hybrid decoder
has only in its full-attention layers (Qwen3.5: every fourth; the others are linear attention). So
every choice here is also given `attention`, the layers that have it (None: every layer), and keeps to
those: layer indices keep meaning decoder layers either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def parse_prior_layers(spec: str | None, num_layers: int, attention: Sequence[int] | None = None) -> tuple[int, ...]:
    """Resolve `all`, `A-B` (inclusive), `L`, or None (the deepest third) to layer indices, keeping
    those with softmax attention.

    The deepest third of Qwen2-0.5B's 24 layers is 16-23, the layers of the reference's published runs;
    of Qwen3.5-2B's 24, its full-attention layers 19 and 23.
    """
    if spec is None:
        deepest = range(num_layers - math.ceil(num_layers / 3), num_layers)
        if attention is None:
            return tuple(deepest)
        # A hybrid whose deepest third had no full-attention layer would still read its deepest one.
        return tuple(layer for layer in attention if layer in deepest) or (max(attention),)
    text = spec.strip().lower()
    if text == "all":
        layers = tuple(range(num_layers))
    else:
        try:
            if "-" in text:
                first, last = (int(part) for part in text.split("-", 1))
            else:
                first = last = int(text)
        except ValueError:
            raise ValueError(f"--prior-layers must be 'all', 'A-B' or a layer number, not {spec!r}") from None
        if first > last:
            raise ValueError(f"--prior-layers {spec!r} is a reversed range: write {last}-{first}")
        if first < 0:
            raise ValueError(f"--prior-layers {spec!r}: layers are numbered from 0")
        if last >= num_layers:
            raise ValueError(f"--prior-layers {spec!r} is outside the prior model's layers 0-{num_layers - 1}")
        layers = tuple(range(first, last + 1))
    return with_attention(layers, attention, spec)


def with_attention(layers: tuple[int, ...], attention: Sequence[int] | None, spec: str) -> tuple[int, ...]:
    """The layers of `layers` that have softmax attention; a ValueError naming `attention` if none has."""
    if attention is None:
        return layers
    kept = tuple(layer for layer in layers if layer in attention)
    if not kept:
        raise ValueError(
            f"--prior-layers {spec!r} holds no full-attention layer, and the prior reads softmax attention: "
            f"choose among {_listing(attention)}"
        )
    return kept


def default_prune_layer(num_layers: int, attention: Sequence[int] | None = None) -> int:
    """The last layer of the first quarter (5 of Qwen2-0.5B's 0-23) with softmax attention, or the first
    one with it if the first quarter has none (Qwen3.5-2B: 3, its first full-attention layer).

    FastV pruned after layer 2; DyToK finds the keyframe prior sharper deeper in. A quarter of the
    layers still runs every visual token: at ratio 0.25 the prefill costs about 0.44 of the full one.
    """
    attention = range(num_layers) if attention is None else attention
    early = [layer for layer in attention if layer <= num_layers // 4 - 1]
    return early[-1] if early else min(attention)


def resolve_prune_layer(prune_layer: int | None, num_layers: int, attention: Sequence[int] | None = None) -> int:
    layer = default_prune_layer(num_layers, attention) if prune_layer is None else prune_layer
    if not 0 <= layer < num_layers:
        raise ValueError(f"--prune-layer {layer} is outside the model's layers 0-{num_layers - 1}")
    if attention is not None and layer not in attention:
        raise ValueError(
            f"--prune-layer {layer} is not a full-attention layer, and pruning reads softmax attention: "
            f"choose among {_listing(attention)}"
        )
    return layer


def _listing(layers: Sequence[int]) -> str:
    return ", ".join(str(layer) for layer in layers)
