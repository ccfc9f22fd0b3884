"""What every in-frame selector returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FrameSelection:
    """What one frame kept."""

    tokens: torch.Tensor  # (n, D) kept tokens: dominant ones in raster order, then any merged contextual ones
    dominant: int  # n_dom: tokens kept as they are
    contextual: int  # n_ctx: tokens that carry others merged into them
    # (n,) int64: where each kept token sat among the frame's T tokens (a contextual token sits where
    # its target did), so a model with positional structure (M-RoPE) can place it as before.
    token_index: torch.Tensor

    @property
    def dominant_index(self) -> torch.Tensor:
        """(n_dom,) sorted indices of the dominant tokens."""
        return self.token_index[: self.dominant]


def check_video(features: torch.Tensor, scores: torch.Tensor, budgets: torch.Tensor) -> None:
    """features (F, T, D), scores (F, T, ...), budgets (F,) integers: one budget per frame."""
    num_frames = features.shape[0]
    if features.dim() != 3 or scores.shape[:2] != features.shape[:2] or budgets.shape != (num_frames,):
        raise ValueError(
            f"expected features (F, T, D), scores over the same (F, T) and budgets (F,); got "
            f"{tuple(features.shape)}, {tuple(scores.shape)}, {tuple(budgets.shape)}"
        )
    if budgets.is_floating_point():
        raise ValueError("budgets must be whole numbers of tokens (an integer tensor)")

