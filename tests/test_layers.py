"""Which layers the prior reads and where the single pass prunes, on layer counts alone (no model):
every layer has softmax attention in most families; a hybrid decoder (Qwen3.5) has it every fourth."""

from __future__ import annotations

import pytest

from dytok_cli.math.layers import default_prune_layer, parse_prior_layers, resolve_prune_layer
from dytok_cli.config import Method
from dytok_cli.methods import strategy

# Qwen3.5's layer pattern: linear attention three layers in four, full attention at 3, 7, 11, ...
QWEN3_5_24 = tuple(range(3, 24, 4))  # 0.8B and 2B: 24 layers
QWEN3_5_32 = tuple(range(3, 32, 4))  # 4B: 32 layers


@pytest.mark.parametrize("layers, attention, expected", [
    (24, None, 5),  # LLaVA-OneVision-0.5B
    (28, None, 6),
    (36, None, 8),
    (3, None, 0),
    (24, QWEN3_5_24, 3),  # the last full-attention layer in the first quarter, 0-5
    (32, QWEN3_5_32, 7),  # 0-7
    (8, (3, 7), 3),  # the first quarter, 0-1, has none: the first full-attention layer
    (3, (2,), 2),
])
def test_default_prune_layer(layers, attention, expected):
    assert default_prune_layer(layers, attention) == expected
    assert resolve_prune_layer(None, layers, attention) == expected


def test_every_layer_is_a_prune_layer_when_every_layer_has_attention():
    assert [resolve_prune_layer(k, 4, range(4)) for k in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize("layer", [0, 2, 4, 22])
def test_a_prune_layer_without_softmax_attention_names_the_full_attention_layers(layer):
    with pytest.raises(ValueError, match=rf"--prune-layer {layer} is not a full-attention layer.*3, 7, 11, 15, 19, 23$"):
        resolve_prune_layer(layer, 24, QWEN3_5_24)


def test_a_prune_layer_beyond_the_model_says_so_first():
    with pytest.raises(ValueError, match="--prune-layer 24 is outside the model's layers 0-23"):
        resolve_prune_layer(24, 24, QWEN3_5_24)


@pytest.mark.parametrize("spec, expected", [
    (None, (19, 23)),  # the deepest third, 16-23, keeps its full-attention layers
    ("all", QWEN3_5_24),
    ("0-8", (3, 7)),
    ("7", (7,)),
    ("3-3", (3,)),
])
def test_the_hybrid_prior_reads_the_full_attention_layers_among_those_named(spec, expected):
    assert parse_prior_layers(spec, 24, QWEN3_5_24) == expected


def test_the_deepest_third_without_attention_falls_back_to_the_deepest_attention_layer():
    assert parse_prior_layers(None, 12, (1, 5)) == (5,)


@pytest.mark.parametrize("spec", ["0-2", "4", "20-22"])
def test_prior_layers_without_softmax_attention_name_the_full_attention_layers(spec):
    with pytest.raises(ValueError, match=rf"--prior-layers '{spec}' holds no full-attention layer.*3, 7, 11, 15, 19, 23$"):
        parse_prior_layers(spec, 24, QWEN3_5_24)


def test_without_a_layout_every_layer_counts():
    assert parse_prior_layers(None, 24) == parse_prior_layers(None, 24, range(24)) == tuple(range(16, 24))
    assert parse_prior_layers("1-2", 4) == (1, 2)


def test_two_pass_strategy_reads_the_prior_models_full_attention_layers():
    assert strategy(Method.dytok).prior_layers(None, 24, None, QWEN3_5_24) == (19, 23)
    assert strategy(Method.dytok).prior_layers("0-3", 24, None, QWEN3_5_24) == (3,)


def test_single_pass_strategy_reads_the_full_attention_layers_up_to_the_prune_layer():
    single = strategy(Method.dytok_fastv)
    assert single.prior_layers(None, 32, 7, QWEN3_5_32) == (3, 7)
    assert single.prior_layers("5-7", 32, 7, QWEN3_5_32) == (7,)
    with pytest.raises(ValueError, match=r"--prior-layers '4-6' holds no full-attention layer.*choose among 3, 7$"):
        single.prior_layers("4-6", 32, 7, QWEN3_5_32)
    with pytest.raises(ValueError, match=r"must lie within 0-7 \(--prune-layer\)"):
        single.prior_layers("8-11", 32, 7, QWEN3_5_32)
    assert single.prior_layers(None, 4, 2, range(4)) == (0, 1, 2)
