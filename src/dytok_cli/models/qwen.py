"""What the Qwen families (Qwen2.5-VL, Qwen3-VL, Qwen3.5) share: the video span in the prompt, where the
decoder sits, and M-RoPE positions that each kept visual token keeps from the uncompressed prompt.
Not a family itself (it registers nothing); each family's adapter subclasses it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import VideoModel


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
