"""FastV-style in-frame selection: per frame, the tokens the question's last token
attends to most at the prune layer, kept whole and in their original order. Pure functions."""

from __future__ import annotations

import torch

from .base import FrameSelection, check_video


def select_frame(features: torch.Tensor, attention: torch.Tensor, budget: int) -> FrameSelection:
    """Keep the `budget` tokens of one frame with the highest attention.

    features (T, D), attention (T,) the last prompt token's attention to each token. Ties go to the
    lower index (a stable sort), so the choice is reproducible; kept tokens stay in raster order.
    """
    num_tokens = features.shape[0]
    if attention.shape != (num_tokens,) or not 0 <= budget <= num_tokens:
        raise ValueError(
            f"expected attention ({num_tokens},) and a budget in [0, {num_tokens}], got "
            f"{tuple(attention.shape)} and {budget}"
        )
    ranked = torch.sort(attention.float(), descending=True, stable=True).indices  # (T,)
    index = ranked[:budget].sort().values  # (n,)
    return FrameSelection(features[index], budget, 0, index)


def select_video(
    features: torch.Tensor, attention: torch.Tensor, budgets: torch.Tensor
) -> list[FrameSelection]:
    """`select_frame` on every frame: features (F, T, D), attention (F, T), budgets (F,) integers."""
    check_video(features, attention, budgets)
    return [select_frame(features[f], attention[f], int(n)) for f, n in enumerate(budgets.tolist())]
