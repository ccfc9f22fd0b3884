"""VisionZip in-frame token selection: dominant tokens by attention, the rest merged.

Pure functions over one frame's (or one video's) tokens and the vision encoder's scores; the
caller decides how many tokens each frame keeps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import FrameSelection


def split_budget(n: int) -> tuple[int, int]:
    """(n_dom, n_ctx) for a frame keeping n tokens: six dominant to one contextual, as VisionZip does."""
    dominant = 6 * n // 7
    return dominant, n - dominant


def select_frame(
    features: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor, budget: int
) -> FrameSelection:
    """Keep `budget` tokens of one frame.

    features (T, D); attention (T,) the attention each token receives; keys (T, Dk) the metric
    that decides which contextual target a dropped token merges into. A frame keeping all T
    tokens passes through untouched, so ratio 1 is exactly the uncompressed model.
    """
    num_tokens = features.shape[0]
    if features.dim() != 2 or attention.shape != (num_tokens,) or keys.dim() != 2 or keys.shape[0] != num_tokens:
        raise ValueError(
            f"expected features (T, D), attention (T,), keys (T, Dk); got {tuple(features.shape)}, "
            f"{tuple(attention.shape)}, {tuple(keys.shape)}"
        )
    if not 0 <= budget <= num_tokens:
        raise ValueError(f"budget must be in [0, {num_tokens}], got {budget}")
    device = features.device
    if budget == num_tokens:
        return FrameSelection(features, num_tokens, 0, torch.arange(num_tokens, device=device))
    if budget == 0:
        return FrameSelection(features[:0], 0, 0, torch.zeros(0, dtype=torch.int64, device=device))

    n_dom, n_ctx = split_budget(budget)  # n_ctx >= 1 whenever budget >= 1
    # A stable sort makes equal attention prefer the lower index, so the choice is reproducible.
    ranked = torch.sort(attention.float(), descending=True, stable=True).indices  # (T,)
    dominant_index = ranked[:n_dom].sort().values  # (n_dom,)
    # The other tokens in index order, R = T - n_dom >= n_ctx: sorted rather than found with `nonzero`, whose
    # size the host must wait for (on a GPU, a wait per frame).
    rest = ranked[n_dom:].sort().values  # (R,)

    # Targets at a uniform stride over the remaining tokens; every other one merges into the
    # target whose key it most resembles (argmax: ties go to the lowest target).
    step = max(1, rest.numel() // n_ctx)
    is_target = torch.zeros(rest.numel(), dtype=torch.bool, device=device)
    is_target[torch.arange(0, rest.numel(), step, device=device)[:n_ctx]] = True
    metric = F.normalize(keys[rest].float(), dim=-1)  # (R, Dk); a zero key stays zero, never NaN
    similarity = metric[~is_target] @ metric[is_target].T  # (R - n_ctx, n_ctx)
    assign = F.one_hot(similarity.argmax(dim=1), n_ctx).float()  # (R - n_ctx, n_ctx)

    # Summed in float32: a sum of many float16 features overflows to inf. `.float()` is the tensor itself
    # for float32 features, so their path is the reference's, bit for bit.
    rest_features = features[rest].float()  # (R, D)
    # A target nobody joined divides zero by one and keeps its own feature.
    counts = assign.sum(dim=0).clamp(min=1).unsqueeze(1)  # (n_ctx, 1)
    merged = assign.T @ rest_features[~is_target] / counts  # (n_ctx, D)
    contextual = (rest_features[is_target] + merged).to(features.dtype)  # (n_ctx, D)
    tokens = torch.cat([features[dominant_index], contextual])  # (n, D)
    return FrameSelection(tokens, n_dom, n_ctx, torch.cat([dominant_index, rest[is_target]]))


def select_video(
    features: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor, budgets: torch.Tensor
) -> tuple[torch.Tensor, list[FrameSelection]]:
    """Apply `select_frame` to every frame with its own budget.

    features (F, T, D), attention (F, T), keys (F, T, Dk), budgets (F,) integers. Returns the kept
    tokens of all frames concatenated in frame order (sum(budgets), D), and each frame's selection.
    """
    num_frames = features.shape[0]
    if features.dim() != 3 or attention.dim() != 2 or keys.dim() != 3 or budgets.shape != (num_frames,):
        raise ValueError(
            f"expected features (F, T, D), attention (F, T), keys (F, T, Dk), budgets (F,); got "
            f"{tuple(features.shape)}, {tuple(attention.shape)}, {tuple(keys.shape)}, {tuple(budgets.shape)}"
        )
    if attention.shape[0] != num_frames or keys.shape[0] != num_frames:
        raise ValueError(f"attention and keys must cover the same {num_frames} frames as features")
    if budgets.is_floating_point():
        raise ValueError("budgets must be whole numbers of tokens (an integer tensor)")
    selections = [
        select_frame(features[f], attention[f], keys[f], int(budget))
        for f, budget in enumerate(budgets.tolist())
    ]
    kept = torch.cat([selection.tokens for selection in selections])  # (sum(budgets), D)
    return kept, selections
