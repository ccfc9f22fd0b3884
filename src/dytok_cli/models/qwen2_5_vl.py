"""Qwen2.5-VL (windowed ViT with 2x2 patch merging + Qwen2.5 with M-RoPE).

Frames. The vision tower embeds `temporal_patch_size` (2) consecutive frames as one temporal patch
and everything after it works on those, so a DyToK "frame" here is one temporal patch: a group of
2 sampled frames, with T = its tokens after the 2x2 spatial merge. For an odd frame count the
processor repeats the last frame to fill the last group, as Qwen always does, so that group shows
one frame (`EncodedVideo.frames_per_group` tells the pipeline which sampled frames a group covers).
dytok has already sampled the frames (`--frames`/`--fps`), so the processor is told not to sample
again, and is given the sampling rate: Qwen2.5-VL's temporal positions count seconds.

VisionZip scores come from the last full-attention vision block (`fullatt_block_indexes[-1]`):
the windowed blocks only let a patch attend inside its window, so the attention a patch receives
there says nothing about its importance in the frame. Even a full-attention block attends within
one temporal patch at a time (the tower packs all of them into one sequence split by `cu_seqlens`),
so "attention received" is computed per temporal patch, exactly as the block attends, never across
the packed sequence. The tower holds patches in window order, in runs of spatial_merge_size**2
patches that the merger turns into one LLM token; scores are averaged over each run and put back in
the order the merged tokens reach the LLM with the model's own window index.

Positions. Every kept visual token keeps the (t, h, w) M-RoPE position it has in the uncompressed
prompt, and the text after the video keeps its uncompressed positions too: the model's own
`get_rope_index` runs once on the uncompressed prompt and its output is indexed at the kept tokens.
Those positions go to `generate` as `position_ids` (3, 1, S_kept); each decoding step then
continues from the last prompt position + 1, as the model's own `generate` does for the
uncompressed prompt (the model's cached `rope_deltas` are never consulted when positions are given).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.vision_utils import get_vision_window_index

from ..types import EncodedVideo, Frames
from . import register
from .qwen import QwenVideoModel
from .vision_attention import video_features_with_scores

# How `get_rope_index` tells placeholder kinds apart: text 0, image 1, video 2.
_VIDEO_TOKEN_TYPE = 2


@register
class Qwen2_5_VL(QwenVideoModel):
    model_type = "qwen2_5_vl"

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        from transformers import Qwen2VLVideoProcessor

        vision = config.vision_config
        video_processor = Qwen2VLVideoProcessor(
            patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size, merge_size=vision.spatial_merge_size
        )
        return SimpleNamespace(video_processor=video_processor, tokenizer=None)

    @staticmethod
    def capped_size(video_processor: Any, max_pixels: int, num_frames: int) -> dict[str, int]:
        # Qwen2-VL's processor caps each frame at its `longest_edge`.
        size = video_processor.size
        return {"shortest_edge": size["shortest_edge"], "longest_edge": min(size["longest_edge"], max_pixels)}

    @staticmethod
    def sampled_fps(frames: Frames) -> float | None:
        """Sampled frames per second of video, counted as Qwen's processors do; None when unknown."""
        if frames.video_fps > 0 and frames.total_frames > 0:
            return len(frames.indices) / frames.total_frames * frames.video_fps
        return None

    def encode(self, frames: Frames, max_pixels: int | None = None, repeat_tolerance: int | None = 0) -> EncodedVideo:
        images, fps = frames.images, self.sampled_fps(frames)
        count = len(images)
        # Without a rate the processor assumes its default (24 fps), as it does for any bare frames.
        metadata = None if fps is None else [{"total_num_frames": count, "fps": fps, "frames_indices": list(range(count))}]
        processed = self.patches(images, max_pixels, video_metadata=metadata)
        vision = self.model.config.vision_config
        repeats = self.repeats(images, vision.temporal_patch_size, repeat_tolerance)
        pixels, grid_thw = self.encoded_patches(processed, repeats)
        block = self.model.model.visual.blocks[vision.fullatt_block_indexes[-1]].attn
        output, attention, keys = video_features_with_scores(
            self.model, block, pixels, grid_thw, order=self._token_order(grid_thw)
        )
        features = output.pooler_output[0]  # (U*T, D), the LLM's order
        groups, height, width = processed["video_grid_thw"][0].tolist()
        return EncodedVideo(
            features=repeats.spread(features.view(len(repeats.encoded), -1, features.shape[-1])),
            extra=features[:0],
            attention=repeats.spread(attention),
            keys=repeats.spread(keys),
            reused_frames=repeats.reused,
            frames_per_group=vision.temporal_patch_size,
            grid=(groups, height, width),
            frame_size=self.frame_size(grid_thw),
            # What Qwen's processor computes: seconds one temporal patch spans (24 fps when unknown).
            frame_seconds=vision.temporal_patch_size / (fps or 24.0),
        )

    def _token_order(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """(F*T,): for each merged token in the LLM's order, the run of patches it came from in the
        vision tower's window order."""
        vision = self.model.config.vision_config
        window_index, _ = get_vision_window_index(
            grid_thw.cpu(), spatial_merge_size=vision.spatial_merge_size, window_size=vision.window_size,
            patch_size=vision.patch_size,
        )
        # Run j holds merged token window_index[j]; the tower undoes it with the same argsort.
        return torch.argsort(window_index).to(grid_thw.device)

    def video_inputs(
        self,
        input_ids: torch.Tensor,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None,
        video: EncodedVideo | None,
    ) -> dict[str, Any]:
        if video is None or video.grid is None:
            raise ValueError("Qwen2.5-VL positions need the encoded video the visual tokens were taken from")
        return {
            "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=[visual_tokens])},
            "position_ids": self.position_ids(input_ids, kept_index, video),
        }

    def position_ids(self, input_ids: torch.Tensor, kept_index: torch.Tensor | None, video: EncodedVideo) -> torch.Tensor:
        """M-RoPE positions (3, 1, S) for `input_ids` (1, S), whose video placeholders stand for the
        tokens `kept_index` picks from `video`: each at its place in the uncompressed prompt."""
        ids, device = input_ids[0], input_ids.device
        placeholders = (ids == self.video_token_id()).nonzero()[:, 0]
        at, kept = int(placeholders[0]), placeholders.numel()
        full = video.num_frames * video.tokens_per_frame
        index = torch.arange(kept) if kept_index is None else kept_index  # on the host, as every kept index
        if index.shape != (kept,) or int(index.max()) >= full:
            raise ValueError(f"kept_index must pick {kept} of the video's {full} tokens, got shape {tuple(index.shape)}")
        full_ids = torch.cat([ids[:at], ids.new_full((full,), self.video_token_id()), ids[at + kept :]])[None]
        token_types = (full_ids == self.video_token_id()).int() * _VIDEO_TOKEN_TYPE
        positions, _ = self.model.model.get_rope_index(
            full_ids,
            mm_token_type_ids=token_types,
            video_grid_thw=torch.tensor([list(video.grid)], device=device),
            second_per_grid_ts=torch.tensor([video.frame_seconds], device=device),
        )  # (3, 1, S_full)
        keep = torch.cat([
            torch.arange(at, device=device),
            at + index.to(device),
            torch.arange(at + full, full_ids.shape[1], device=device),
        ])  # (S,)
        return positions[:, :, keep]
