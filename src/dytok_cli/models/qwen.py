"""What the Qwen families (Qwen2.5-VL, Qwen3-VL, Qwen3.5) share: the video span in the prompt, where the
decoder sits, and M-RoPE positions that each kept visual token keeps from the uncompressed prompt.
Not a family itself (it registers nothing); each family's adapter subclasses it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..math.repeats import Repeats
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

    @staticmethod
    def capped_size(video_processor: Any, max_pixels: int, num_frames: int) -> dict[str, int]:
        """The video processor's `size` that keeps each of `num_frames` frames at most `max_pixels` pixels,
        as qwen-vl-utils' `max_pixels` does; each family's processor reads `size` its own way."""
        raise NotImplementedError

    def patches(self, images: np.ndarray, max_pixels: int | None, **options: Any) -> Any:
        """`video_patches` of the sampled frames `images`, each at most `max_pixels` pixels when given."""
        processor = self.processor.video_processor
        if max_pixels is not None:
            smallest = processor.size["shortest_edge"]
            if max_pixels < smallest:  # the processor would enlarge the frame to it, ignoring the cap
                raise ModelError(f"--max-pixels {max_pixels} is below the smallest frame {self.name!r} is made "
                                 f"for ({smallest} pixels)")
            options["size"] = self.capped_size(processor, max_pixels, len(images))
        return video_patches(processor, images, **options)

    def encoded_patches(self, processed: Any, repeats: Repeats) -> tuple[torch.Tensor, torch.Tensor]:
        """The processor's patches (G*h*w, C) and grid (1, 3) cut down to the temporal patches `repeats`
        encodes, on the model's device: (U*h*w, C) and (1, 3) with U for G."""
        pixels, grid_thw = processed["pixel_values_videos"], processed["video_grid_thw"]
        groups, height, width = grid_thw[0].tolist()
        if repeats.reused:
            pixels = pixels.view(groups, height * width, -1)[list(repeats.encoded)].flatten(0, 1)
            grid_thw = grid_thw.new_tensor([[len(repeats.encoded), height, width]])
        return pixels.to(self.device, self.model.dtype), grid_thw.to(self.device)

    def frame_size(self, grid_thw: torch.Tensor) -> tuple[int, int]:
        """(width, height) in pixels of the frames whose patch grid is `grid_thw` (1, 3)."""
        _, height, width = grid_thw[0].tolist()
        patch = self.model.config.vision_config.patch_size
        return width * patch, height * patch

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
