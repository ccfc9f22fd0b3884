"""Budget allocation: invariants under random inputs, hand-worked cases, validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dytok_cli.math.budget import allocate_budgets, total_budget, uniform_weights


@st.composite
def frame_weights(draw: st.DrawFn, num_frames: int) -> torch.Tensor:
    """Weights of the shapes a prior produces, and the awkward ones: zeros, ties, one frame dominant."""
    kind = draw(st.sampled_from(["random", "ties", "dominant", "zeros"]))
    if kind == "random":
        values = draw(st.lists(st.floats(0, 1), min_size=num_frames, max_size=num_frames))
    elif kind == "ties":
        values = draw(st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=num_frames, max_size=num_frames))
    elif kind == "dominant":
        values = [1e-4] * num_frames
        values[draw(st.integers(0, num_frames - 1))] = 1.0
    else:
        values = [0.0] * num_frames
    return torch.tensor(values, dtype=torch.float32)


@st.composite
def allocation_case(draw: st.DrawFn, tensor_cap: bool) -> tuple[torch.Tensor, int, int | torch.Tensor, int]:
    num_frames = draw(st.integers(1, 64))
    tokens = draw(st.integers(1, 300))
    weights = draw(frame_weights(num_frames))
    total = draw(st.integers(0, int(num_frames * tokens * 1.2)))
    if tensor_cap:
        cap = torch.tensor(draw(st.lists(st.integers(0, tokens), min_size=num_frames, max_size=num_frames)))
    else:
        cap = tokens
    return weights, total, cap, num_frames


def cap_tensor(cap: int | torch.Tensor, num_frames: int) -> torch.Tensor:
    return cap if isinstance(cap, torch.Tensor) else torch.full((num_frames,), cap)


@settings(max_examples=300, deadline=None)
@given(case=st.one_of(allocation_case(tensor_cap=False), allocation_case(tensor_cap=True)))
def test_sum_and_bounds(case: tuple[torch.Tensor, int, int | torch.Tensor, int]) -> None:
    weights, total, cap, num_frames = case
    caps = cap_tensor(cap, num_frames)
    budgets = allocate_budgets(weights, total, cap)
    assert budgets.dtype == torch.int64 and budgets.shape == (num_frames,)
    assert int(budgets.sum()) == min(total, int(caps.sum()))
    assert (budgets >= 0).all() and (budgets <= caps).all()
    assert torch.equal(budgets, allocate_budgets(weights, total, cap))


@settings(max_examples=300, deadline=None)
@given(case=allocation_case(tensor_cap=False))
def test_heavier_frames_never_get_fewer_tokens_beyond_rounding(
    case: tuple[torch.Tensor, int, int | torch.Tensor, int],
) -> None:
    weights, total, _, _ = case
    budgets = allocate_budgets(weights, total, cap=total)  # a cap that never binds
    heavier = weights[:, None] >= weights[None, :]  # (F, F): w[i] >= w[j]
    assert (budgets[:, None] >= budgets[None, :] - 1)[heavier].all()


@settings(max_examples=300, deadline=None)
@given(case=allocation_case(tensor_cap=False))
def test_monotone_when_a_shared_cap_binds(case: tuple[torch.Tensor, int, int | torch.Tensor, int]) -> None:
    weights, total, cap, _ = case
    budgets = allocate_budgets(weights, total, cap)
    heavier = weights[:, None] >= weights[None, :]  # (F, F): w[i] >= w[j]
    assert (budgets[:, None] >= budgets[None, :] - 1)[heavier].all()


def test_tied_frames_stay_within_one_token_after_give_back() -> None:
    # w = 6:1:1 of B=4 -> alloc 3, .5, .5; the one leftover goes to frame 1 (tied fraction, lower
    # index): 3, 1, 0. The cap of 2 frees one token; frames 1 and 2 weigh the same and frame 2
    # holds fewer, so it takes it: 2, 1, 1 (the literal index order would give 2, 2, 0).
    assert allocate_budgets(torch.tensor([6.0, 1.0, 1.0]), 4, cap=2).tolist() == [2, 1, 1]


@settings(max_examples=200, deadline=None)
@given(case=allocation_case(tensor_cap=False))
def test_within_one_token_of_proportional_when_no_cap_binds(
    case: tuple[torch.Tensor, int, int | torch.Tensor, int],
) -> None:
    weights, total, _, num_frames = case
    budgets = allocate_budgets(weights, total, cap=total)
    share = weights.double() / weights.double().sum() if weights.sum() > 0 else torch.ones(num_frames) / num_frames
    assert ((budgets - share * total).abs() < 1 + 1e-9).all()


@settings(max_examples=200, deadline=None)
@given(num_frames=st.integers(1, 64), tokens=st.integers(1, 300), data=st.data())
def test_uniform_weights_split_evenly(num_frames: int, tokens: int, data: st.DataObject) -> None:
    total = data.draw(st.integers(0, num_frames * tokens))
    budgets = allocate_budgets(uniform_weights(num_frames), total, tokens)
    assert set(budgets.tolist()) <= {total // num_frames, total // num_frames + 1}
    # The odd tokens go to the first frames: deterministic, lower index first.
    assert torch.equal(budgets, budgets.sort(descending=True, stable=True).values)


def test_uniform_weights_sum_to_one() -> None:
    weights = uniform_weights(7)
    assert weights.shape == (7,) and weights.is_floating_point()
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError):
        uniform_weights(0)


def test_clamp_and_give_back_by_hand() -> None:
    # w = 5:1:1:1 of B=20 -> alloc 12.5, 2.5, 2.5, 2.5; floors 12, 2, 2, 2 leave 2 tokens, and the
    # tied fractions (all .5) send them to frames 0 and 1: 13, 3, 2, 2. The cap of 8 takes 5 from
    # frame 0; frames 1, 2, 3 get one each (4, 3, 3), then the last two go to the tied frames
    # holding fewer tokens, 2 and 3: 8, 4, 4, 4.
    budgets = allocate_budgets(torch.tensor([5.0, 1.0, 1.0, 1.0]), 20, cap=8)
    assert budgets.tolist() == [8, 4, 4, 4]


def test_give_back_cycles_until_frames_fill() -> None:
    # w = 4:2:1:1 of B=24 -> 12, 6, 3, 3; the cap of 8 frees 4. Round one: frames 1, 2, 3 -> 7, 4, 4;
    # round two starts with frame 1 (heaviest still open), which takes the last token: 8, 8, 4, 4.
    assert allocate_budgets(torch.tensor([4.0, 2.0, 1.0, 1.0]), 24, cap=8).tolist() == [8, 8, 4, 4]
    # More than fits: every frame ends at its own cap.
    caps = torch.tensor([3, 0, 5, 2])
    assert allocate_budgets(torch.tensor([0.0, 1.0, 0.0, 0.0]), 100, cap=caps).tolist() == [3, 0, 5, 2]


def test_per_frame_caps_redirect_tokens_by_weight() -> None:
    # 6, 1, 3; frame 0 may keep 1 token, so 5 go back in rounds over frames 2 then 1 (by weight):
    # two full rounds (5, 3) and the last token to frame 2.
    budgets = allocate_budgets(torch.tensor([0.6, 0.1, 0.3]), 10, cap=torch.tensor([1, 10, 10]))
    assert budgets.tolist() == [1, 3, 6]


def test_zero_weights_mean_uniform() -> None:
    assert allocate_budgets(torch.zeros(4), 10, cap=5).tolist() == [3, 3, 2, 2]


def test_zero_total() -> None:
    assert allocate_budgets(torch.tensor([0.5, 0.5]), 0, cap=3).tolist() == [0, 0]


def test_millions_of_tokens_are_fast() -> None:
    weights = torch.tensor([1.0] + [0.0] * 199)
    budgets = allocate_budgets(weights, 10_000_000, cap=60_000)
    # Frame 0 frees 9,940,000 tokens = 199 * 49,949 + 149: that many whole rounds, then one more
    # token to each of the 149 lowest-index frames (all other weights tie).
    assert budgets.tolist() == [60_000] + [49_950] * 149 + [49_949] * 50


def test_floor_gives_every_frame_its_minimum_first() -> None:
    weights = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert allocate_budgets(weights, 20, cap=10, floor=2).tolist() == [10, 4, 3, 3]
    assert allocate_budgets(weights, 8, cap=10, floor=2).tolist() == [2, 2, 2, 2]
    # A cap below the floor wins: that frame keeps only what it has.
    assert allocate_budgets(weights, 8, cap=torch.tensor([10, 1, 10, 10]), floor=2).tolist() == [3, 1, 2, 2]
    with pytest.raises(ValueError):
        allocate_budgets(weights, 7, cap=10, floor=2)


@settings(max_examples=100, deadline=None)
@given(case=allocation_case(tensor_cap=False), floor=st.integers(0, 5))
def test_floor_is_the_same_procedure_on_the_rest(
    case: tuple[torch.Tensor, int, int | torch.Tensor, int], floor: int
) -> None:
    weights, total, cap, num_frames = case
    base = min(floor, cap)
    if total < num_frames * base:
        with pytest.raises(ValueError):
            allocate_budgets(weights, total, cap, floor=floor)
        return
    budgets = allocate_budgets(weights, total, cap, floor=floor)
    assert (budgets >= base).all()
    assert torch.equal(budgets, base + allocate_budgets(weights, total - num_frames * base, cap - base))


@pytest.mark.parametrize(
    "weights, total, cap",
    [
        (torch.tensor([0.5, -0.1]), 4, 4),
        (torch.tensor([0.5, float("nan")]), 4, 4),
        (torch.tensor([0.5, float("inf")]), 4, 4),
        (torch.ones(2, 2), 4, 4),
        (torch.ones(0), 4, 4),
        (torch.ones(2), -1, 4),
        (torch.ones(2), 4, -1),
        (torch.ones(2), 4, torch.tensor([4, 4, 4])),
        (torch.ones(2), 4, torch.tensor([1.5, 4.0])),
    ],
)
def test_rejects_bad_inputs(weights: torch.Tensor, total: int, cap: int | torch.Tensor) -> None:
    with pytest.raises(ValueError):
        allocate_budgets(weights, total, cap)


@pytest.mark.parametrize(
    "ratio, frames, tokens, expected",
    [
        (1.0, 8, 196, 1568),
        (0.25, 8, 196, 392),
        (0.5, 1, 5, 3),  # 2.5 rounds up, where round() would give 2
        (0.5, 1, 9, 5),  # 4.5 likewise
        (0.15, 10, 1, 2),  # 1.5 in decimal, although 0.15 * 10 is not exactly 1.5 in binary
        (0.375, 1, 4, 2),
        (0.001, 1, 10, 1),  # never below one token
        (0.1, 16, 196, 314),  # 313.6
    ],
)
def test_total_budget_rounds_half_up(ratio: float, frames: int, tokens: int, expected: int) -> None:
    assert total_budget(ratio, frames, tokens) == expected


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, float("nan"), float("inf")])
def test_total_budget_rejects_ratios_outside_unit_interval(ratio: float) -> None:
    with pytest.raises(ValueError):
        total_budget(ratio, 8, 196)


def test_total_budget_rejects_empty_video() -> None:
    with pytest.raises(ValueError):
        total_budget(0.5, 0, 196)
    with pytest.raises(ValueError):
        total_budget(0.5, 8, 0)
