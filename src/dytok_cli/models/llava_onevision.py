"""LLaVA-OneVision (SigLIP + Qwen2): 2x2-pooled frame tokens and one trailing newline token."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..attention import watch_attention
from ..errors import ModelError
from ..types import EncodedVideo, Frames
from . import register
from .base import VideoModel

# Frames per chunk when turning vision-layer attention into "attention received": bounds the
# (frames, heads, 729, 729) float32 matrix to a few hundred MB at SigLIP-so400m's size.
_ATTENTION_CHUNK = 8


def attention_received(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """(F, H, T, d) x2 -> (F, T): attention each token receives, averaged over heads and queries."""
    received = []
    for start in range(0, query.shape[0], _ATTENTION_CHUNK):
        q = query[start : start + _ATTENTION_CHUNK].float()
        k = key[start : start + _ATTENTION_CHUNK].float()
        weights = (q @ k.transpose(-1, -2) * scaling).softmax(dim=-1)  # (f, H, T, T)
        received.append(weights.mean(dim=(1, 2)))  # (f, T)
    return torch.cat(received)


def pool_like_features(values: torch.Tensor, grid: int) -> torch.Tensor:
    """(F, grid*grid, C) -> (F, ceil(grid/2)^2, C) with the bilinear 2x pooling LLaVA-OneVision
    applies to its video features, so scores line up with the tokens they describe."""
    frames, _, channels = values.shape
    squares = values.view(frames, grid, grid, channels).permute(0, 3, 1, 2)
    pooled = nn.functional.interpolate(squares, size=[math.ceil(grid / 2)] * 2, mode="bilinear")
    return pooled.permute(0, 2, 3, 1).reshape(frames, -1, channels)


@register
class LlavaOnevision(VideoModel):
    model_type = "llava_onevision"

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        from transformers import LlavaOnevisionVideoProcessor

        side = config.vision_config.image_size
        return SimpleNamespace(video_processor=LlavaOnevisionVideoProcessor(size={"height": side, "width": side}), tokenizer=None)

    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    def text_attention_modules(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.language_model().layers]

    def video_token_id(self) -> int:
        return self.model.config.video_token_id

    def video_inputs(
        self,
        input_ids: torch.Tensor,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None,
        video: EncodedVideo | None,
    ) -> dict[str, Any]:
        # 1-D positions renumbered contiguously over the kept tokens, as the reference does.
        return {"mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=visual_tokens[None])}}

    def _selector_layer(self) -> nn.Module:
        """The vision layer whose output feeds the projector (its attention drives VisionZip)."""
        config = self.model.config
        layer = config.vision_feature_layer
        if not isinstance(layer, int):  # several layers are concatenated; the deepest one decides
            layer = max(layer, key=lambda index: index % (config.vision_config.num_hidden_layers + 1))
        layers = self.model.model.vision_tower.encoder.layers
        # hidden_states[0] is the embedding output, so hidden_states[i] comes from layer i - 1.
        index = (layer % (len(layers) + 1)) - 1
        if index < 0:
            raise ModelError(f"{self.name!r} feeds its projector from the patch embeddings, which carry no attention")
        return layers[index].self_attn

    def encode(self, frames: Frames, max_pixels: int | None = None, repeat_tolerance: int | None = 0) -> EncodedVideo:
        if max_pixels is not None:  # refused rather than ignored, so no record reports a size it did not get
            side = self.model.config.vision_config.image_size
            raise ModelError(f"--max-pixels does not apply to {self.name!r}: LLaVA-OneVision resizes every frame "
                             f"to its vision tower's {side}x{side}")
        pixels = self.processor.video_processor(videos=[frames.images], return_tensors="pt")["pixel_values_videos"]
        repeats = self.repeats(frames.images, 1, repeat_tolerance)
        if repeats.reused:
            pixels = pixels[:, list(repeats.encoded)]  # (1, U, 3, H, W)
        pixels = pixels.to(self.device, self.model.dtype)
        captured: dict[str, torch.Tensor] = {}

        def capture(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            captured["attention"] = attention_received(query, key, scaling)  # (F, P)
            captured["keys"] = key.float().mean(dim=1)  # (F, P, d)

        with torch.inference_mode(), watch_attention(self.model, "vision_config", {self._selector_layer(): capture}):
            pooled = self.model.model.get_video_features(pixel_values_videos=pixels).pooler_output[0]
        attention, keys = captured["attention"], captured["keys"]
        if self.model.config.vision_feature_select_strategy == "default":  # the projector drops the CLS token
            attention, keys = attention[:, 1:], keys[:, 1:]
        vision = self.model.config.vision_config
        grid = vision.image_size // vision.patch_size
        frames = pixels.shape[1]
        features = pooled[:-1].view(frames, -1, pooled.shape[-1])  # (U, T, D)
        return EncodedVideo(
            features=repeats.spread(features),
            extra=pooled[-1:],
            frame_size=(pixels.shape[-1], pixels.shape[-2]),
            attention=repeats.spread(pool_like_features(attention[..., None], grid)[..., 0]),
            keys=repeats.spread(pool_like_features(keys, grid)),
            reused_frames=repeats.reused,
        )
