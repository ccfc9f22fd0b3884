"""SmolVLM2 (`smolvlm`): a SigLIP tower whose patches a pixel shuffle folds scale_factor x scale_factor into one
token, and SmolLM2 (a Llama decoder) with 1-D positions.

Frames. Each sampled frame is one image, squashed to the tower's square (512 px for 256M and 500M, 384 for
2.2B): the installed video processor never tiles a video frame as it tiles an image. 32x32 patches of 16 px
shuffled 4x4 make T = 64 tokens (256M, 500M); 27x27 of 14 px shuffled 3x3 make 81 (2.2B).

Time is in the text. The processor replaces the chat template's "<video>" with an intro that says how many
frames of how long a video follow, then each frame's "Frame from MM:SS:" and its T placeholders wrapped in
"<fake_token_around_image><global-img>" ... "<fake_token_around_image>":

    You are provided the following series of six frames from a 0:00:24 [H:MM:SS] video.
    Frame from 00:00:<fake><global-img><image> * T<fake> ... Frame from 00:20:<fake><global-img><image> * T<fake>

The prompt is the processor's own expansion, fed metadata that makes its times the decoder's (frame
"indices" that are seconds at 1 frame per second) and its duration the video's. A compressed prompt keeps
every marker and wrapper and gives frame f exactly its n_f placeholders, as Qwen3-VL's does.

The model checks that the prompt holds one placeholder per feature row, so compression happens on the
features after the tower and projector (`mm_encoder_outputs`), never inside them.

Positions. The decoder takes 1-D positions, and the model's own forward numbers whatever sequence it is given
0, 1, 2, ...: a compressed prompt run through it is numbered contiguously, as the reference renumbers
LLaVA-OneVision's. So kept tokens are renumbered (the single pass keeps their original positions, which its
early layers already rotated the keys with).

VisionZip scores come from the tower's last layer, whose output (after a LayerNorm) the connector shuffles;
scores and keys are averaged over the patches each token folds, by the connector's own pixel shuffle.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.video_utils import VideoMetadata

from ..attention import watch_attention
from ..errors import ModelError
from ..types import EncodedVideo, Frames, Question
from . import register
from .base import VideoModel
from .llava_onevision import attention_received

# A synthetic prompt's video text, about as long as SmolVLM2's tokenizer makes it (a digit a token): the intro
# ("You are provided the following series of thirty-two frames from a 0:00:20 [H:MM:SS] video.") and each
# frame's "\nFrame from 00:05:" with the three wrapper tokens around its placeholders.
_SYNTHETIC_INTRO_TOKENS, _SYNTHETIC_FRAME_TOKENS = 30, 12


@register
class SmolVLM(VideoModel):
    model_type = "smolvlm"

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        from transformers import SmolVLMVideoProcessor

        side = config.vision_config.image_size
        # The published preprocessor configs: images up to 4 tiles a side, which the installed video processor
        # takes for video frames too before it squashes each to the tower's square.
        video_processor = SmolVLMVideoProcessor(
            size={"longest_edge": 4 * side}, max_image_size={"longest_edge": side},
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        )
        return SimpleNamespace(video_processor=video_processor, tokenizer=None)

    def language_model(self) -> nn.Module:
        return self.model.model.text_model

    def text_attention_modules(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.language_model().layers]

    def video_token_id(self) -> int:
        # Video frames take the image placeholder: the model has no other.
        return self.model.config.image_token_id

    # --- vision -------------------------------------------------------------------------------
    def encode(self, frames: Frames, max_pixels: int | None = None, repeat_tolerance: int | None = 0) -> EncodedVideo:
        side = self.model.config.vision_config.image_size
        if max_pixels is not None:  # refused rather than ignored, so no record reports a size it did not get
            raise ModelError(f"--max-pixels does not apply to {self.name!r}: SmolVLM2 resizes every frame to its "
                             f"vision tower's {side}x{side}")
        processed = self.processor.video_processor(videos=[frames.images], do_sample_frames=False, return_tensors="pt")
        pixels = processed["pixel_values"]  # (1, F, 3, S, S)
        repeats = self.repeats(frames.images, 1, repeat_tolerance)
        if repeats.reused:
            pixels = pixels[:, list(repeats.encoded)]
        pixels = pixels.to(self.device, self.model.dtype)
        captured: dict[str, torch.Tensor] = {}

        def capture(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            captured["attention"] = attention_received(query, key, scaling)  # (U, P)
            captured["keys"] = key.float().mean(dim=1)  # (U, P, d)

        block = self.model.model.vision_model.encoder.layers[-1].self_attn  # its output feeds the connector
        with torch.inference_mode(), watch_attention(self.model, "vision_config", {block: capture}):
            features = self.model.model.get_image_features(pixel_values=pixels).pooler_output[0]  # (U*T, D)
        encoded = features.view(len(repeats.encoded), -1, features.shape[-1])  # (U, T, D)
        return EncodedVideo(
            features=repeats.spread(encoded),
            extra=features[:0],
            attention=repeats.spread(self._per_token(captured["attention"][..., None])[..., 0]),
            keys=repeats.spread(self._per_token(captured["keys"])),
            reused_frames=repeats.reused,
            frame_size=(pixels.shape[-1], pixels.shape[-2]),
            timestamps=tuple(frames.timestamps),
            duration_s=frames.duration_s,
        )

    def _per_token(self, values: torch.Tensor) -> torch.Tensor:
        """(U, P, C) per patch -> (U, T, C) per token: the mean over the patches the connector's pixel shuffle
        folds into each token, in its order."""
        scale = self.model.config.scale_factor
        shuffled = self.model.model.connector.pixel_shuffle(values, scale)  # (U, T, C * scale**2), patch by patch
        return shuffled.view(*shuffled.shape[:2], scale**2, values.shape[-1]).mean(dim=2)

    # --- prompt -------------------------------------------------------------------------------
    def prompt_ids(self, question: Question | str, thinking: bool = False) -> torch.Tensor:
        """The chat prompt (1, S) with one placeholder where the template writes the video: the text on either
        side of it tokenized apart, as the processor's expansion of the video begins and ends with text."""
        if self.tokenizer is None:
            return self.synthetic_prompt_ids()
        before, video, after = self.chat_text(question, thinking).partition(self.processor.video_token)
        if not video or self.processor.video_token in after:
            raise ModelError(f"the chat template of {self.name!r} does not place exactly one video")

        def ids(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        return torch.tensor([[*ids(before), self.video_token_id(), *ids(after)]])  # on the host, as a tokenizer's ids

    def uncompressed_prompt_length(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> int:
        # The intro and each frame's time and wrappers come with the video's tokens.
        return int(self._uncompressed_ids(question, video, thinking).shape[0])

    def build_inputs(
        self,
        question: Question | str,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None = None,
        video: EncodedVideo | None = None,
        deepstack: tuple[torch.Tensor, ...] | None = None,
        thinking: bool = False,
    ) -> dict[str, Any]:
        """The prompt with every frame's marker and wrappers and n_f placeholders for frame f, where n_f is how
        many of its tokens `kept_index` (N,) picks, frame-major (None: all of them); `visual_tokens` (N, D)
        fill them in order. `thinking`: see `chat_text`."""
        if deepstack:
            raise ValueError(f"{type(self).__name__} takes no DeepStack features")
        if video is None:
            raise ValueError("SmolVLM2 prompts need the encoded video the visual tokens were taken from")
        _, frame_of = self.kept_by_frame(video, kept_index, visual_tokens)
        full = self._uncompressed_ids(question, video, thinking)  # (S_full,)
        keep, _, _ = self.kept_layout(full, video, frame_of)
        input_ids = full[keep][None].to(self.device)  # (1, S)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=[visual_tokens])},
        }

    def _uncompressed_ids(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> torch.Tensor:
        """(S_full,) the prompt the processor builds for `video`: its intro, and every frame's time, wrappers and
        T placeholders, in place of the chat template's video."""
        if self.tokenizer is None:
            prompt = self.synthetic_prompt_ids()[0]
            at = int((prompt == self.video_token_id()).nonzero()[0])
            text = prompt[:_SYNTHETIC_FRAME_TOKENS].tolist()  # ordinary vocabulary, as `synthetic_prompt_ids` uses
            frame = [*text[:-1], *[self.video_token_id()] * video.tokens_per_frame, text[-1]]
            intro = [text[i % len(text)] for i in range(_SYNTHETIC_INTRO_TOKENS)]
            return torch.cat([prompt[:at], prompt.new_tensor(intro + frame * video.num_frames), prompt[at + 1 :]])
        text = self.chat_text(question, thinking)
        # Times in seconds as frame indices at 1 frame per second: the processor's time of each frame, index / fps,
        # is then exactly the decoder's.
        metadata = VideoMetadata(total_num_frames=video.num_frames, fps=1.0, frames_indices=list(video.timestamps),
                                 duration=video.duration_s)
        # transformers 5.24 counts the frames in the pixels' shape, 5.25 in the metadata: both are given.
        processed = {"video_metadata": [metadata], "pixel_values": torch.empty(1, video.num_frames, 0)}  # on the host
        replacement = self.processor.replace_video_token(processed, 0)
        expanded = self.processor.get_text_with_replacements([text], videos_replacements=[replacement])[0][0]
        ids = self.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if int((ids == self.video_token_id()).sum()) != video.num_frames * video.tokens_per_frame:
            raise ModelError(f"the processor of {self.name!r} does not write one placeholder per visual token")
        return ids
