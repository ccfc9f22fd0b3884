"""In-frame token selectors, one pure module per selector: `visionzip` (the reference's,
from vision-encoder scores) and `fastv` (from the LLM's last-query attention at the prune layer)."""

from .base import FrameSelection
from .visionzip import select_frame, select_video, split_budget

__all__ = ["FrameSelection", "select_frame", "select_video", "split_budget"]
