"""Which decoder layers the prior reads and where the single pass prunes: parsing and defaults.
Pure functions over layer counts (no model), shared by the settings and the methods."""

from __future__ import annotations

import math


def parse_prior_layers(spec: str | None, num_layers: int) -> tuple[int, ...]:
    """Resolve `all`, `A-B` (inclusive), `L`, or None (the deepest third) to layer indices.

    The deepest third of Qwen2-0.5B's 24 layers is 16-23, the layers of the reference's published runs.
    """
    if spec is None:
        return tuple(range(num_layers - math.ceil(num_layers / 3), num_layers))
    text = spec.strip().lower()
    if text == "all":
        return tuple(range(num_layers))
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
    return tuple(range(first, last + 1))


def default_prune_layer(num_layers: int) -> int:
    """The last layer of the first quarter (5 of Qwen2-0.5B's 0-23).

    FastV pruned after layer 2; DyToK finds the keyframe prior sharper deeper in. A quarter of the
    layers still runs every visual token: at ratio 0.25 the prefill costs about 0.44 of the full one.
    """
    return max(num_layers // 4 - 1, 0)


def resolve_prune_layer(prune_layer: int | None, num_layers: int) -> int:
    layer = default_prune_layer(num_layers) if prune_layer is None else prune_layer
    if not 0 <= layer < num_layers:
        raise ValueError(f"--prune-layer {layer} is outside the model's layers 0-{num_layers - 1}")
    return layer
