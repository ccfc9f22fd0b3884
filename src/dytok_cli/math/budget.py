"""Per-frame token budgets: pure functions over numbers and small tensors, no model."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from numbers import Integral

import torch


def total_budget(ratio: float, num_frames: int, tokens_per_frame: int) -> int:
    """B = round(ratio * F * T), rounding half up (not Python's banker's rounding), at least 1.

    The product is taken in decimal on the ratio as written (its shortest repr), so a ratio of
    0.15 on 10 tokens is exactly 1.5 and rounds to 2, whatever the binary float happens to hold.
    """
    if not 0 < ratio <= 1:  # also rejects NaN
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if num_frames < 1 or tokens_per_frame < 1:
        raise ValueError(f"need at least one frame and one token per frame, got F={num_frames}, T={tokens_per_frame}")
    exact = Decimal(repr(float(ratio))) * num_frames * tokens_per_frame
    return max(1, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def uniform_weights(num_frames: int) -> torch.Tensor:
    """Equal weight for every frame: static (non-DyToK) compression. Returns (F,) float32 summing to 1."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    return torch.full((num_frames,), 1.0 / num_frames)  # (F,) on the host, as every frame weight


def allocate_budgets(
    weights: torch.Tensor, total: int, cap: int | torch.Tensor, floor: int = 0
) -> torch.Tensor:
    """Split `total` tokens over frames in proportion to `weights`.

    weights (F,) non-negative, normalised here (all zero means uniform); cap is the most tokens a
    frame may keep (an int, or (F,) per frame); every frame first gets min(floor, cap) tokens and the
    rest is shared by weight. Returns (F,) int64 on the CPU with sum == min(total, sum(cap)).
    Deterministic: every tie is broken towards the lower frame index.
    """
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError(f"weights must be a non-empty 1-D tensor, got shape {tuple(weights.shape)}")
    w = weights.detach().to("cpu", torch.float64)  # (F,)
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    if isinstance(total, bool) or not isinstance(total, Integral) or total < 0:
        raise ValueError(f"total must be a non-negative int, got {total!r}")
    total = int(total)
    if floor < 0:
        raise ValueError(f"floor must be non-negative, got {floor}")
    caps = _caps(cap, w.numel())  # (F,)

    base = caps.clamp(max=floor)  # (F,)
    rest = total - int(base.sum())
    if rest < 0:
        raise ValueError(f"total {total} cannot give each of {w.numel()} frames its floor of {floor}")
    w = w / w.sum() if w.sum() > 0 else torch.full_like(w, 1.0 / w.numel())
    return base + _share(w, rest, caps - base)


def _caps(cap: int | torch.Tensor, num_frames: int) -> torch.Tensor:
    if isinstance(cap, torch.Tensor):
        if cap.shape != (num_frames,):
            raise ValueError(f"cap must be an int or a ({num_frames},) tensor, got shape {tuple(cap.shape)}")
        if cap.is_floating_point() and not torch.equal(cap, cap.round()):
            raise ValueError("cap must hold whole numbers of tokens")
        caps = cap.detach().to("cpu", torch.int64)
    else:
        caps = torch.full((num_frames,), int(cap), dtype=torch.int64)  # on the host, as the budgets
    if (caps < 0).any():
        raise ValueError("cap must be non-negative")
    return caps  # (F,)


def _share(w: torch.Tensor, total: int, caps: torch.Tensor) -> torch.Tensor:
    """Steps 1–3 of §2.2 for normalised weights w (F,) float64 and caps (F,) int64."""
    alloc = w * total  # (F,)
    n = alloc.floor()
    # sum(alloc) is `total` up to float error and each floor loses less than one token, so the
    # leftover is in [0, F]; clamping guards the last ulp.
    leftover = min(max(total - int(n.sum()), 0), w.numel())
    by_fraction = torch.sort(alloc - n, descending=True, stable=True).indices
    n = n.to(torch.int64)
    n[by_fraction[:leftover]] += 1

    excess = int((n - caps).clamp(min=0).sum())
    n = torch.minimum(n, caps)
    return _give_back(n, caps, excess, w)


def _give_back(n: torch.Tensor, caps: torch.Tensor, excess: int, w: torch.Tensor) -> torch.Tensor:
    """Hand `excess` tokens out one per frame per round, heaviest first, to frames below their cap.

    Rather than token by token, each pass gives every open frame as many whole rounds as the one
    with the least room can take, so it runs at most F times however large `excess` is. Updates
    `n` in place and returns it.
    """
    order = torch.sort(w, descending=True, stable=True).indices  # (F,)
    while excess > 0:
        open_frames = order[(n[order] < caps[order])]  # still under the cap, in weight order
        if open_frames.numel() == 0:
            break
        room = caps[open_frames] - n[open_frames]
        rounds = min(int(room.min()), excess // open_frames.numel())
        if rounds == 0:
            # A final partial round: the heaviest open frames get one more each. Among equal weights
            # the one holding fewer tokens goes first: the step-2 leftover may already have favoured
            # the other, and tied frames must end within one token of each other (§2.2 item 4).
            fewest_first = open_frames[torch.sort(n[open_frames], stable=True).indices]
            heaviest_first = fewest_first[torch.sort(w[fewest_first], descending=True, stable=True).indices]
            n[heaviest_first[:excess]] += 1
            break
        n[open_frames] += rounds
        excess -= rounds * open_frames.numel()
    return n

