"""In-frame token selectors (DESIGN §2.3), one file per selector."""

from .visionzip import FrameSelection, select_frame, select_video, split_budget

__all__ = ["FrameSelection", "select_frame", "select_video", "split_budget"]
