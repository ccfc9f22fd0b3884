"""Qwen3-VL, dense (`qwen3_vl`) and MoE (`qwen3_vl_moe`): a ViT with 2x2 patch merging and DeepStack,
and Qwen3 with interleaved M-RoPE. The MoE variant differs only in the decoder's MLP, so one adapter
serves both.

Frames and time. As for Qwen2.5-VL, the vision tower embeds `temporal_patch_size` (2) consecutive
sampled frames as one temporal patch, so a DyToK frame is one temporal patch (an odd count repeats the
last frame, as the processor does). Time is not in the positions any more but in the text: the
processor writes each patch's timestamp, "<t seconds>" (the mean of its frames' times), before the
patch's placeholders, so the video is interleaved with text:

    <vision_start> <0.3 seconds> <vision_start> pad * T <vision_end> <1.4 seconds> ... <vision_end>

A compressed prompt keeps every timestamp and marker and gives patch f exactly its n_f placeholders.
The prompt is the processor's own expansion of the chat template's video placeholder, fed metadata
that makes its timestamps the decoder's: frame "indices" that are the times in seconds at 1 frame per
second (each patch's mean repeated once per frame, so the processor's mean is exactly that mean).

DeepStack. The vision tower also returns features from a few of its blocks (`deepstack_visual_indexes`),
one (N, D) tensor each, in the same token order as the main features; the decoder adds the k-th to the
hidden states at the visual positions after its decoder layer k. They travel in `EncodedVideo.deepstack`
(F, T, D) each, are selected and merged exactly as the main features (`methods.stacked_features`), and reach
`generate` beside the visual tokens through `mm_encoder_outputs`.

Positions. Every kept token keeps its (t, h, w) position in the uncompressed prompt and every text
token (timestamps included) keeps its own: the model's own `get_rope_index` runs once on the
uncompressed prompt and is indexed at what the compressed prompt keeps (as for Qwen2.5-VL). So do the
single pass's kept tokens, whose DeepStack rows travel with them (`models/decoder.py`).

VisionZip scores come from the tower's last block, the one whose output feeds the merger. Every block
attends within one temporal patch at a time (the tower packs them into one sequence split by
`cu_seqlens`), so "attention received" is computed per patch. The tower holds patches in the
processor's order, runs of spatial_merge_size**2 patches per merged token, merged tokens in raster
order (no windows, unlike Qwen2.5-VL), so scores are averaged over each run and need no reordering.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    BaseModelOutputWithDeepstackFeatures,
)
from transformers.video_utils import VideoMetadata

from ..errors import ModelError
from ..types import EncodedVideo, Frames, Question
from . import register
from .qwen import QwenVideoModel
from .vision_attention import video_features_with_scores

# How `get_rope_index` tells placeholder kinds apart: text 0, image 1, video 2.
_VIDEO_TOKEN_TYPE = 2
# A synthetic prompt's timestamp, as long as Qwen's tokenizer makes "<0.5 seconds>": "<" "0" "." "5" " seconds" ">".
_SYNTHETIC_TIMESTAMP_TOKENS = 6


@register
class Qwen3VL(QwenVideoModel):
    model_type = "qwen3_vl"

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        from transformers import Qwen3VLVideoProcessor

        vision = config.vision_config
        # The published checkpoints' video processor settings (video_preprocessor_config.json).
        video_processor = Qwen3VLVideoProcessor(
            patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
            merge_size=vision.spatial_merge_size, size={"shortest_edge": 4096, "longest_edge": 25165824},
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        )
        return SimpleNamespace(video_processor=video_processor, tokenizer=None)

    @staticmethod
    def capped_size(video_processor: Any, max_pixels: int, num_frames: int) -> dict[str, int]:
        # Qwen3-VL's processor reads `longest_edge` as the whole video's budget and gives each frame an
        # even share of it: a budget of `max_pixels` a frame.
        size = video_processor.size
        return {"shortest_edge": size["shortest_edge"], "longest_edge": min(size["longest_edge"], max_pixels * num_frames)}

    # --- vision -------------------------------------------------------------------------------
    def encode(self, frames: Frames, max_pixels: int | None = None, repeat_tolerance: int | None = 0) -> EncodedVideo:
        # Each temporal patch's time, written into the prompt, is the mean of its frames' decoder times.
        images, timestamps = frames.images, frames.timestamps
        vision = self.model.config.vision_config
        per_group = vision.temporal_patch_size
        if len(images) < per_group:  # the processor refuses less than one temporal patch; it pads with the last frame
            images = np.concatenate([images, np.repeat(images[-1:], per_group - len(images), axis=0)])
        processed = self.patches(images, max_pixels)
        repeats = self.repeats(images, per_group, repeat_tolerance)
        pixels, grid_thw = self.encoded_patches(processed, repeats)
        block = self.model.model.visual.blocks[-1].attn  # its output feeds the merger
        output, attention, keys = video_features_with_scores(self.model, block, pixels, grid_thw)
        groups, height, width = processed["video_grid_thw"][0].tolist()

        def per_frame(features: torch.Tensor) -> torch.Tensor:
            return repeats.spread(features.view(len(repeats.encoded), -1, features.shape[-1]))  # (U*T, D) -> (F, T, D)

        return EncodedVideo(
            features=per_frame(output.pooler_output[0]),
            extra=output.pooler_output[0][:0],
            attention=repeats.spread(attention),
            keys=repeats.spread(keys),
            reused_frames=repeats.reused,
            frames_per_group=per_group,
            grid=(groups, height, width),
            frame_size=self.frame_size(grid_thw),
            timestamps=tuple(
                float(np.mean(timestamps[start : start + per_group])) for start in range(0, len(timestamps), per_group)
            ),
            # A tower without DeepStack (Qwen3.5's) returns no such features.
            deepstack=tuple(per_frame(layer[0]) for layer in getattr(output, "deepstack_features", None) or ()),
        )

    # --- prompt -------------------------------------------------------------------------------
    def build_inputs(
        self,
        question: Question | str,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None = None,
        video: EncodedVideo | None = None,
        deepstack: tuple[torch.Tensor, ...] | None = None,
        thinking: bool = False,
    ) -> dict[str, Any]:
        """The prompt with every timestamp and frame n_f placeholders, where n_f is how many of frame f's
        tokens `kept_index` (N,) picks, frame-major (None: all of them); `visual_tokens` (N, D) fill
        them in order. `deepstack` holds those tokens' DeepStack features, each (N, D); None takes
        `video`'s own, which only a prompt that keeps every token can. `thinking`: see `chat_text`."""
        if video is None or video.grid is None:
            raise ValueError("Qwen3-VL prompts need the encoded video the visual tokens were taken from")
        index, frame_of = self.kept_by_frame(video, kept_index, visual_tokens)
        if deepstack is None:
            if kept_index is not None and video.deepstack:
                raise ValueError("a compressed Qwen3-VL prompt needs the kept tokens' own DeepStack features")
            deepstack = tuple(layer.flatten(0, 1) for layer in video.deepstack)

        full = self._uncompressed_ids(question, video, thinking)  # (S_full,)
        keep, slots, placeholders = self.kept_layout(full, video, frame_of)
        # For each position of the compressed prompt, the uncompressed one whose M-RoPE position it takes.
        source = torch.arange(full.shape[0])  # on the host
        source[slots] = placeholders[index]
        input_ids = full[keep][None].to(self.device)  # (1, S)
        encoder_output = BaseModelOutputWithDeepstackFeatures(
            pooler_output=[visual_tokens], deepstack_features=[[layer] for layer in deepstack]
        )
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_encoder_outputs": {"video": encoder_output},
            "position_ids": self._uncompressed_positions(full, video)[:, :, source[keep].to(self.device)],
        }

    def uncompressed_prompt_length(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> int:
        # Each patch of frames brings its timestamp's tokens and its vision markers beside its visual tokens.
        return int(self._uncompressed_ids(question, video, thinking).shape[0])

    def _uncompressed_ids(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> torch.Tensor:
        """(S_full,) the prompt the processor builds for `video`: every patch's timestamp, markers and T
        placeholders in place of the chat template's single video placeholder."""
        prompt = self.prompt_ids(question, thinking)[0]
        at = int((prompt == self.video_token_id()).nonzero()[0])
        if self.tokenizer is None:
            timestamp = prompt[: _SYNTHETIC_TIMESTAMP_TOKENS]  # ordinary vocabulary, as `synthetic_prompt_ids` uses
            config = self.model.config
            patch = [*timestamp.tolist(), config.vision_start_token_id,
                     *[self.video_token_id()] * video.tokens_per_frame, config.vision_end_token_id]
            return torch.cat([prompt[:at], prompt.new_tensor(patch * video.num_frames), prompt[at + 1 :]])
        text = self.chat_text(question, thinking)
        per_group = video.frames_per_group
        # Times in seconds as frame indices at 1 frame per second: the processor's timestamp of each patch,
        # the mean of its frames' index / fps, is then exactly the patch's time.
        metadata = VideoMetadata(
            total_num_frames=video.num_frames * per_group, fps=1.0,
            frames_indices=[seconds for seconds in video.timestamps for _ in range(per_group)],
        )
        grid = {"video_grid_thw": torch.tensor([list(video.grid)]), "video_metadata": [metadata]}  # on the host
        # The processor's own expansion of the template's video span, which changes between releases
        # (5.25 drops the template's outer vision markers, since every patch carries its own).
        replacement = self.processor.replace_video_token(grid, 0)
        expanded = self.processor.get_text_with_replacements([text], videos_replacements=[replacement])[0][0]
        ids = self.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if int((ids == self.video_token_id()).sum()) != video.num_frames * video.tokens_per_frame:
            raise ModelError(f"the processor of {self.name!r} does not write one placeholder per visual token")
        return ids

    def _uncompressed_positions(self, ids: torch.Tensor, video: EncodedVideo) -> torch.Tensor:
        """The model's own M-RoPE positions (3, 1, S_full) for the uncompressed prompt `ids` (S_full,)."""
        ids = ids[None].to(self.device)
        positions, _ = self.model.model.get_rope_index(
            ids,
            mm_token_type_ids=(ids == self.video_token_id()).int() * _VIDEO_TOKEN_TYPE,
            video_grid_thw=torch.tensor([list(video.grid)], device=self.device),
        )
        return positions


@register
class Qwen3VLMoe(Qwen3VL):
    """The MoE decoder changes the MLP only: prompts, positions, attention and DeepStack are the dense model's."""

    model_type = "qwen3_vl_moe"
