"""VisionZip in-frame selection, against hand-computed numbers and a loop reference."""

from __future__ import annotations

import pytest
import torch

from dytok_cli.math.selectors import FrameSelection, select_frame, select_video, split_budget


@pytest.mark.parametrize(
    "n, expected",
    [(0, (0, 0)), (1, (0, 1)), (6, (5, 1)), (7, (6, 1)), (8, (6, 2)), (14, (12, 2)), (49, (42, 7)), (196, (168, 28))],
)
def test_split_budget(n: int, expected: tuple[int, int]) -> None:
    assert split_budget(n) == expected


def random_frame(tokens: int = 20, dim: int = 8, key_dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(tokens, dim, generator=generator)  # (T, D)
    attention = torch.rand(tokens, generator=generator)  # (T,)
    keys = torch.randn(tokens, key_dim, generator=generator)  # (T, Dk)
    return features, attention, keys


def reference_frame(features: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor, n: int) -> torch.Tensor:
    """§2.3 token by token, in float64, as an independent check of the vectorised selector."""
    num_tokens = len(features)
    if n in (0, num_tokens):
        return features[:n].double()
    n_dom = 6 * n // 7
    n_ctx = n - n_dom
    ranked = sorted(range(num_tokens), key=lambda t: (-float(attention[t]), t))
    dominant = sorted(ranked[:n_dom])
    rest = [t for t in range(num_tokens) if t not in dominant]
    step = max(1, len(rest) // n_ctx)
    targets = [rest[p] for p in range(0, len(rest), step)][:n_ctx]
    unit = {t: keys[t].double() / keys[t].double().norm() for t in rest}
    merged: dict[int, list[torch.Tensor]] = {t: [] for t in targets}
    for t in rest:
        if t in merged:
            continue
        scores = [float(unit[t] @ unit[target]) for target in targets]
        merged[targets[scores.index(max(scores))]].append(features[t].double())
    out = [features[t].double() for t in dominant]
    for target in targets:
        joined = merged[target]
        out.append(features[target].double() + (torch.stack(joined).mean(0) if joined else 0))
    return torch.stack(out)


def test_kept_count_equals_budget_for_every_budget() -> None:
    features, attention, keys = random_frame()
    for n in range(len(features) + 1):
        selection = select_frame(features, attention, keys, n)
        assert selection.tokens.shape == (n, features.shape[1])
        assert selection.dominant + selection.contextual == n
        assert selection.dominant_index.shape == (selection.dominant,)
        assert selection.dominant_index.dtype == torch.int64


@pytest.mark.parametrize("seed", range(5))
def test_matches_loop_reference(seed: int) -> None:
    features, attention, keys = random_frame(tokens=30, seed=seed)
    for n in range(len(features) + 1):
        expected = reference_frame(features, attention, keys, n)
        torch.testing.assert_close(select_frame(features, attention, keys, n).tokens.double(), expected)


def test_dominant_tokens_are_the_most_attended_in_raster_order() -> None:
    features, attention, keys = random_frame(tokens=40)
    selection = select_frame(features, attention, keys, 21)  # 18 dominant, 3 contextual
    assert selection.dominant == 18 and selection.contextual == 3
    index = selection.dominant_index
    assert torch.equal(index, index.sort().values)
    assert set(index.tolist()) == set(attention.topk(18).indices.tolist())
    assert torch.equal(selection.tokens[:18], features[index])


def test_equal_attention_prefers_lower_indices() -> None:
    features, _, keys = random_frame(tokens=12)
    selection = select_frame(features, torch.ones(12), keys, 8)  # 6 dominant
    assert selection.dominant_index.tolist() == [0, 1, 2, 3, 4, 5]


def test_full_budget_passes_the_frame_through() -> None:
    features, attention, keys = random_frame()
    selection = select_frame(features, attention, keys, len(features))
    assert torch.equal(selection.tokens, features)
    assert (selection.dominant, selection.contextual) == (len(features), 0)
    assert selection.dominant_index.tolist() == list(range(len(features)))


def test_zero_budget_keeps_nothing() -> None:
    features, attention, keys = random_frame()
    selection = select_frame(features, attention, keys, 0)
    assert selection.tokens.shape == (0, features.shape[1])
    assert (selection.dominant, selection.contextual) == (0, 0)
    assert selection.dominant_index.numel() == 0


def test_single_contextual_token_by_hand() -> None:
    # T=6, n=3 -> 2 dominant (tokens 1 and 3, the most attended), 1 contextual. The remaining
    # tokens 0, 2, 4, 5 have step 4 // 1 = 4, so token 0 is the target and 2, 4, 5 merge into it:
    # (1, 1) + mean((2, 0), (0, 4), (4, 2)) = (1, 1) + (2, 2) = (3, 3).
    features = torch.tensor([[1.0, 1.0], [7.0, 0.0], [2.0, 0.0], [0.0, 7.0], [0.0, 4.0], [4.0, 2.0]])
    attention = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.0])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.0, 2.0], [3.0, 1.0]])
    selection = select_frame(features, attention, keys, 3)
    assert selection.dominant_index.tolist() == [1, 3]
    assert selection.tokens.tolist() == [[7.0, 0.0], [0.0, 7.0], [3.0, 3.0]]
    assert selection.token_index.tolist() == [1, 3, 0]  # the contextual token sits where its target was


def test_contextual_assignment_by_hand() -> None:
    # T=10, n=8 -> 6 dominant, 2 contextual. Least attended: tokens 1, 4, 7, 9 (in index order);
    # step 4 // 2 = 2 makes tokens 1 and 7 the targets. Keys: target 1 points along x, target 7
    # along y; token 4 (2, 0.1) is nearer x; token 9 (1, 1) ties exactly and goes to the lower
    # target. So target 1 absorbs tokens 4 and 9: (10, 0) + mean((2, 4), (4, 2)) = (13, 3), and
    # target 7, which nothing joined, keeps its own feature (5, 5).
    attention = torch.tensor([9.0, 1.0, 8.0, 7.0, 2.0, 6.0, 5.0, 3.0, 4.0, 0.0])
    features = torch.tensor([[float(t), -float(t)] for t in range(10)])
    features[1], features[4], features[7], features[9] = (
        torch.tensor([10.0, 0.0]),
        torch.tensor([2.0, 4.0]),
        torch.tensor([5.0, 5.0]),
        torch.tensor([4.0, 2.0]),
    )
    keys = torch.full((10, 2), 0.3)
    keys[1], keys[4], keys[7], keys[9] = (
        torch.tensor([1.0, 0.0]),
        torch.tensor([2.0, 0.1]),
        torch.tensor([0.0, 1.0]),
        torch.tensor([1.0, 1.0]),
    )
    selection = select_frame(features, attention, keys, 8)
    assert selection.dominant_index.tolist() == [0, 2, 3, 5, 6, 8]
    assert selection.token_index.tolist() == [0, 2, 3, 5, 6, 8, 1, 7]
    assert (selection.dominant, selection.contextual) == (6, 2)
    expected_dominant = [[0.0, 0.0], [2.0, -2.0], [3.0, -3.0], [5.0, -5.0], [6.0, -6.0], [8.0, -8.0]]
    assert selection.tokens.tolist() == expected_dominant + [[13.0, 3.0], [5.0, 5.0]]


def test_zero_keys_do_not_produce_nan() -> None:
    features, attention, _ = random_frame()
    selection = select_frame(features, attention, torch.zeros(20, 5), 10)
    assert torch.isfinite(selection.tokens).all()


def test_select_video_concatenates_frames_in_order() -> None:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(4, 16, 6, generator=generator)  # (F, T, D)
    attention = torch.rand(4, 16, generator=generator)  # (F, T)
    keys = torch.randn(4, 16, 3, generator=generator)  # (F, T, Dk)
    budgets = torch.tensor([3, 0, 16, 9])
    kept, selections = select_video(features, attention, keys, budgets)
    assert kept.shape == (int(budgets.sum()), 6)
    assert all(isinstance(s, FrameSelection) for s in selections) and len(selections) == 4
    start = 0
    for frame, (selection, budget) in enumerate(zip(selections, budgets.tolist())):
        assert torch.equal(kept[start : start + budget], selection.tokens)
        alone = select_frame(features[frame], attention[frame], keys[frame], budget)
        assert torch.equal(selection.tokens, alone.tokens)
        start += budget
    assert torch.equal(kept[3:19], features[2])  # the full-budget frame, untouched


def test_select_video_with_full_budgets_is_the_whole_video() -> None:
    features = torch.randn(3, 10, 4)
    kept, _ = select_video(features, torch.rand(3, 10), torch.randn(3, 10, 2), torch.full((3,), 10))
    assert torch.equal(kept, features.flatten(0, 1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_is_preserved(dtype: torch.dtype) -> None:
    features, attention, keys = random_frame(tokens=30)
    low = select_frame(features.to(dtype), attention.to(dtype), keys.to(dtype), 12)
    full = select_frame(features, attention, keys, 12)
    assert low.tokens.dtype == dtype
    # Rounding the scores can reorder near-ties; compare only when the same tokens were chosen.
    if torch.equal(low.dominant_index, full.dominant_index):
        torch.testing.assert_close(low.tokens.float(), full.tokens, atol=0.1, rtol=0.05)
    kept, _ = select_video(features.to(dtype)[None], attention.to(dtype)[None], keys.to(dtype)[None], torch.tensor([5]))
    assert kept.dtype == dtype and kept.shape == (5, 8)


def test_float32_merge_is_the_references_bit_for_bit() -> None:
    """The merge as the reference writes it, all in the features' dtype: float32 runs exactly that."""
    features, attention, keys = random_frame(tokens=40, dim=16, seed=3)
    selection = select_frame(features, attention, keys, 14)
    n_dom, n_ctx = split_budget(14)
    rest = torch.tensor(sorted(set(range(40)) - set(selection.dominant_index.tolist())))
    step = max(1, len(rest) // n_ctx)
    is_target = torch.zeros(len(rest), dtype=torch.bool)
    is_target[torch.arange(0, len(rest), step)[:n_ctx]] = True
    metric = torch.nn.functional.normalize(keys[rest], dim=-1)
    assign = torch.nn.functional.one_hot((metric[~is_target] @ metric[is_target].T).argmax(dim=1), n_ctx).to(features.dtype)
    merged = assign.T @ features[rest][~is_target] / assign.sum(dim=0).clamp(min=1).unsqueeze(1)
    assert torch.equal(selection.tokens[n_dom:], features[rest][is_target] + merged)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_large_merge_does_not_overflow_a_half_precision_model(dtype: torch.dtype) -> None:
    """41 tokens of 3072 merged into a 42nd: their sum (125952) is past float16's largest value (65504)."""
    features = torch.full((48, 4), 3072.0)
    attention = torch.arange(48.0, 0, -1)  # the first 6 dominant, the other 42 one contextual token's
    keys = torch.ones(48, 2)
    selection = select_frame(features.to(dtype), attention, keys, 7)
    assert selection.contextual == 1 and selection.tokens.dtype == dtype
    assert torch.equal(selection.tokens[-1].float(), torch.full((4,), 6144.0))  # its own 3072, and the mean 3072


def test_rejects_bad_inputs() -> None:
    features, attention, keys = random_frame()
    with pytest.raises(ValueError):
        select_frame(features, attention, keys, 21)
    with pytest.raises(ValueError):
        select_frame(features, attention, keys, -1)
    with pytest.raises(ValueError):
        select_frame(features, attention[:-1], keys, 5)
    with pytest.raises(ValueError):
        select_frame(features, attention, keys[:-1], 5)
    with pytest.raises(ValueError):
        select_video(features[None], attention[None], keys[None], torch.tensor([5, 5]))
    with pytest.raises(ValueError):
        select_video(features[None], attention[None], keys[None], torch.tensor([5.0]))
