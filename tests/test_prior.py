"""The keyframe prior's math on random query/key states, without a model."""

from __future__ import annotations

import math

import pytest
import torch

from dytok_cli.math.prior import combine_layers, frame_weights_from_qk, last_query_attention, normalise


def by_hand(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """§2.1 steps 1-4 written out per head, in float64: GQA heads repeated, softmax over the keys given."""
    heads, kv_heads = query.shape[0], keys.shape[0]
    rows = []
    for head in range(heads):
        k = keys[head // (heads // kv_heads)].double()  # (N, d)
        logits = [float(query[head].double() @ k[n]) * scaling for n in range(k.shape[0])]
        top = max(logits)
        exps = [math.exp(value - top) for value in logits]
        rows.append([value / sum(exps) for value in exps])
    return torch.tensor(rows, dtype=torch.float64).mean(dim=0)  # (N,)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (6, 1)])
def test_last_query_attention_is_the_per_head_softmax_averaged(heads, kv_heads):
    generator = torch.Generator().manual_seed(heads * 10 + kv_heads)
    query = torch.randn(heads, 8, generator=generator)
    keys = torch.randn(kv_heads, 12, 8, generator=generator)
    got = last_query_attention(query, keys, scaling=8**-0.5)
    torch.testing.assert_close(got.double(), by_hand(query, keys, 8**-0.5), atol=1e-6, rtol=0)
    assert got.dtype == torch.float32 and got.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_half_precision_states_are_scored_in_float32():
    generator = torch.Generator().manual_seed(0)
    query, keys = torch.randn(4, 8, generator=generator), torch.randn(2, 10, 8, generator=generator)
    half = last_query_attention(query.bfloat16(), keys.bfloat16(), 0.35)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, last_query_attention(query.bfloat16().float(), keys.bfloat16().float(), 0.35))


def test_frame_weights_are_the_mean_attention_per_frame():
    generator = torch.Generator().manual_seed(1)
    query, keys = torch.randn(4, 8, generator=generator), torch.randn(2, 3 * 5, 8, generator=generator)
    attention = last_query_attention(query, keys, 0.5)
    weights = frame_weights_from_qk(query, keys, num_frames=3, scaling=0.5)
    torch.testing.assert_close(weights, attention.view(3, 5).mean(dim=1))
    assert weights.sum().item() == pytest.approx(1 / 5, abs=1e-6)


def test_a_frame_the_query_matches_gets_the_weight():
    keys = torch.zeros(1, 4 * 2, 4)
    keys[0, 4:6] = torch.tensor([1.0, 0, 0, 0])  # frame 2's tokens point where the query does
    weights = frame_weights_from_qk(torch.tensor([[10.0, 0, 0, 0]]), keys, num_frames=4, scaling=1.0)
    assert int(normalise(weights).argmax()) == 2


def test_layers_are_averaged_then_normalised():
    first, second = torch.tensor([0.1, 0.3]), torch.tensor([0.3, 0.1])
    torch.testing.assert_close(combine_layers([first, second]), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(combine_layers([torch.tensor([1.0, 3.0])]), torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError):
        combine_layers([])
