"""What the Qwen families (Qwen2.5-VL, Qwen3-VL, Qwen3.5) share: the video span in the prompt, where the
decoder sits, and M-RoPE positions that each kept visual token keeps from the uncompressed prompt.
Not a family itself (it registers nothing); each family's adapter subclasses it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .base import VideoModel


def video_patches(video_processor: Any, images: np.ndarray, **options: Any) -> Any:
    """The video processor's patches (`pixel_values_videos`) and grid (`video_grid_thw`) for the sampled
    frames `images` (F, H, W, 3), every one of them, each frame sized as the reference preprocessing
    (qwen-vl-utils) sizes it: at most the pixels of 768 visual tokens a frame and an even share of the
    video's pixel budget. That is the processor's own `cap_pixels_per_frame`; without it `transformers`
    spends the whole budget on however few frames there are (a 1080p frame keeps its size when 8 are
    sampled, 2.8 times the tokens), and says it will become its default."""
    return video_processor(
        videos=[images], do_sample_frames=False, cap_pixels_per_frame=True, return_tensors="pt", **options
    )


class QwenVideoModel(VideoModel):
    keeps_uncompressed_positions = True

    def video_span_ids(self) -> list[int]:
        config = self.model.config
        return [config.vision_start_token_id, config.video_token_id, config.vision_end_token_id]

    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    def text_attention_modules(self) -> list[nn.Module | None]:
        return [layer.self_attn for layer in self.language_model().layers]

    def sequence_positions(self, inputs: dict[str, Any]) -> torch.Tensor:
        return inputs["position_ids"]  # (3, 1, S) M-RoPE, from the family's `build_inputs`

    def video_token_id(self) -> int:
        return self.model.config.video_token_id
