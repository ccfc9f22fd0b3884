"""InternVL, the `-HF` checkpoints (`internvl`: InternVL3 and InternVL3.5): InternViT, a pixel shuffle that
puts each 2x2 block of patches into one token, an MLP projector, and a Qwen2 or Qwen3 decoder with 1-D
rotary positions.

Frames. A sampled frame is one 448x448 tile: 32x32 patches of 14 pixels, shuffled into 16x16 = 256
tokens. The model takes a video as a batch of such images: its `image_token_id` placeholders are
filled with the frames' features, and it checks that their count equals the features'. So the
compressed prompt holds exactly the kept tokens' placeholders, and their features go in with them.

Preprocessing, a decision. The model cards' video recipe (`load_video`) resizes each frame to one
448x448 tile (bicubic, `max_num=1`) and normalises it with ImageNet's mean and std: exactly what the
checkpoint's image processor does to an image it does not cut into tiles. The InternVL3.5 `-HF`
checkpoints also ship a video processor config at 384 px with CLIP's mean and std (the class defaults
left by the conversion; OpenGVLab/InternVL#1222; vLLM takes the image processor's size instead), and a
384 px frame is neither what the tower was trained at nor 256 tokens. So frames go through the
installed video processor with the size, resampling and normalisation of the installed image
processor, whatever the video processor's own config says (`tests/test_internvl.py` holds them to the
image processor's own output for every frame). A frame's size is fixed, so `--max-pixels` is refused.

Prompt. The chat template writes `<video>`, which the processor expands to one line per frame,
`Frame{i}: <img>` + 256 placeholders + `</img>` (its `replace_video_token`); the adapter asks the
installed processor for that expansion rather than writing it again. A compressed prompt keeps every
frame's line and markers, with exactly its budget of placeholders. Within our own prompts the
template's `<video>` stands as one placeholder (`prompt_ids`), as a video placeholder does in every
family's.

Positions are 1-D, and a compressed two-pass prompt (`dytok`, `visionzip`) numbers its tokens
contiguously, as the reference code does for the 1-D family it ships (LLaVA-OneVision) and as
LLaVA-OneVision does here: the decoder has no spatial or temporal axis whose geometry renumbering
would break, so the compressed prompt is simply a shorter prompt, and `generate` numbers it itself.
The single pass keeps the positions its early layers rotated the keys with (`prefill/single_pass`).

VisionZip (`--method visionzip`, and `dytok`'s in-frame selection) gets its scores as in the other
families: attention received and keys at the vision layer that feeds the projector, the CLS token
dropped, averaged over the patches the model's own pixel shuffle puts into each token. It is offered
with a caveat, not refused: on InternVL, pruning by the vision encoder's attention has been reported
to do worse than random choice (the shuffle folds four patches' channels into one token, so a
patch's attention in the encoder says little about the token the decoder sees). The question-aware
prior read in the decoder, which `dytok-fastv` (the default) uses both for frame budgets and for the
tokens kept, does not depend on it; `dytok` still spends each frame's budget by encoder attention.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..attention import watch_attention
from ..errors import ModelError
from ..types import EncodedVideo, Frames, Question
from . import register
from .base import VideoModel
from .llava_onevision import attention_received

# Frames at a time when turning vision-layer attention into "attention received": InternViT's 1,025 tokens
# a 448 px frame make a (4, 16, 1025, 1025) float32 matrix of 270 MB.
_ATTENTION_FRAMES = 4
# What the image processor decides of a frame beside its size, which the video processor is told (see the module's
# docstring).
_PUBLISHED = ("resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")
# A synthetic prompt's frame line, as long as Qwen's tokenizer makes it: "Frame" "1" ":" " " "<img>" before the
# frame's tokens, "</img>" "\n" after them.
_SYNTHETIC_BEFORE, _SYNTHETIC_AFTER = 5, 2


@register
class InternVL(VideoModel):
    model_type = "internvl"
    # 1-D positions, renumbered over what a compressed prompt keeps (see the module's docstring).
    keeps_uncompressed_positions: ClassVar[bool] = False

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        from transformers import GotOcr2ImageProcessor, InternVLVideoProcessor
        from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        height, width = config.vision_config.image_size
        # The checkpoints' image processor (preprocessor_config.json), which gives frames their size.
        image_processor = GotOcr2ImageProcessor(
            size={"height": height, "width": width}, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD
        )
        return SimpleNamespace(image_processor=image_processor, video_processor=InternVLVideoProcessor(), tokenizer=None)

    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    def text_attention_modules(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.language_model().layers]

    def video_token_id(self) -> int:
        return self.model.config.image_token_id

    # --- vision -------------------------------------------------------------------------------
    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """(F, 3, S, S) the sampled frames `images` (F, H, W, 3) as the model cards' video recipe makes them:
        the installed video processor with the installed image processor's size and normalisation."""
        published = self.processor.image_processor
        size = {"height": published.size.height, "width": published.size.width}
        options = {name: getattr(published, name) for name in _PUBLISHED}
        processed = self.processor.video_processor(videos=[images], size=size, do_sample_frames=False, return_tensors="pt",
                                                   **options)
        return processed["pixel_values_videos"][0]

    def _selector_layer(self) -> nn.Module:
        """The vision layer whose output feeds the projector (its attention drives VisionZip)."""
        layers = self.model.model.vision_tower.encoder.layer
        # hidden_states[0] is the embedding output, so hidden_states[i] comes from layer i - 1.
        index = self.model.config.vision_feature_layer % (len(layers) + 1) - 1
        if index < 0:
            raise ModelError(f"{self.name!r} feeds its projector from the patch embeddings, which carry no attention")
        return layers[index].attention

    def _token_patches(self, grid: int) -> torch.Tensor:
        """(T, k): the patches (raster indices of the grid x grid) that the model's own pixel shuffle puts
        into each of a frame's T tokens, k of them (4 at the checkpoints' downsample ratio of 0.5)."""
        index = torch.arange(grid * grid, dtype=torch.float32, device=self.device).view(1, grid, grid, 1)
        shuffled = self.model.model.pixel_shuffle(index, scale_factor=self.model.config.downsample_ratio)
        return shuffled.reshape(-1, shuffled.shape[-1]).long()

    def encode(self, frames: Frames, max_pixels: int | None = None, repeat_tolerance: int | None = 0) -> EncodedVideo:
        if max_pixels is not None:  # refused rather than ignored, so no record reports a size it did not get
            size = self.processor.image_processor.size
            raise ModelError(f"--max-pixels does not apply to {self.name!r}: InternVL resizes every frame "
                             f"to one {size.width}x{size.height} tile")
        pixels = self.pixels(frames.images)
        repeats = self.repeats(frames.images, 1, repeat_tolerance)
        if repeats.reused:
            pixels = pixels[list(repeats.encoded)]
        pixels = pixels.to(self.device, self.model.dtype)
        captured: dict[str, torch.Tensor] = {}

        def capture(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            captured["attention"] = torch.cat([
                attention_received(query[start : start + _ATTENTION_FRAMES], key[start : start + _ATTENTION_FRAMES], scaling)
                for start in range(0, query.shape[0], _ATTENTION_FRAMES)
            ])  # (U, 1 + P)
            captured["keys"] = key.float().mean(dim=1)  # (U, 1 + P, d)

        with torch.inference_mode(), watch_attention(self.model, "vision_config", {self._selector_layer(): capture}):
            features = self.model.model.get_image_features(pixel_values=pixels).pooler_output  # (U, T, D)
        # The projector sees the patches without the CLS token, shuffled into tokens.
        attention, keys = captured["attention"][:, 1:], captured["keys"][:, 1:]
        patches = self._token_patches(int(attention.shape[1] ** 0.5))  # (T, k)
        return EncodedVideo(
            features=repeats.spread(features),
            extra=features[0, :0],
            attention=repeats.spread(attention[:, patches].mean(dim=-1)),
            keys=repeats.spread(keys[:, patches].mean(dim=-2)),
            frame_size=(pixels.shape[-1], pixels.shape[-2]),
            reused_frames=repeats.reused,
        )

    # --- prompt -------------------------------------------------------------------------------
    def prompt_ids(self, question: Question | str, thinking: bool = False) -> torch.Tensor:
        """The chat prompt (1, S) with the template's `<video>` as the single video placeholder."""
        if self.tokenizer is None:
            return self.synthetic_prompt_ids()
        ids = self.tokenizer(self.chat_text(question, thinking), add_special_tokens=False, return_tensors="pt")["input_ids"]
        video = ids == self.tokenizer.convert_tokens_to_ids(self.processor.video_token)
        if int(video.sum()) != 1:
            raise ModelError(f"the chat template of {self.name!r} does not place exactly one video token")
        return ids.masked_fill(video, self.video_token_id())

    def uncompressed_prompt_length(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> int:
        # Each frame brings its "Frame{i}:" line and image markers beside its visual tokens.
        return int(self._uncompressed_ids(question, video, thinking).shape[0])

    def _uncompressed_ids(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> torch.Tensor:
        """(S_full,) the prompt the processor builds for `video`: every frame's line, markers and T
        placeholders in place of the chat template's `<video>`."""
        prompt = self.prompt_ids(question, thinking)[0]
        at = int((prompt == self.video_token_id()).nonzero()[0])
        if self.tokenizer is None:  # ordinary vocabulary for the line's text and markers, as `synthetic_prompt_ids` uses
            before, after = prompt[:_SYNTHETIC_BEFORE].tolist(), prompt[:_SYNTHETIC_AFTER].tolist()
            line = [*before, *[self.video_token_id()] * video.tokens_per_frame, *after]
            return torch.cat([prompt[:at], prompt.new_tensor(line * video.num_frames), prompt[at + 1 :]])
        # The processor counts a video's frames by its pixels' first dimension; only that count is read.
        counted = {"pixel_values_videos": [torch.empty(video.num_frames, 0)]}  # on the host
        replacement = self.processor.replace_video_token(counted, 0)
        expanded = self.processor.get_text_with_replacements([self.chat_text(question, thinking)],
                                                             videos_replacements=[replacement])[0][0]
        ids = self.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if int((ids == self.video_token_id()).sum()) != video.num_frames * video.tokens_per_frame:
            raise ModelError(f"the processor of {self.name!r} does not write one placeholder per visual token "
                             f"({self.processor.image_seq_length} a frame, the vision tower makes {video.tokens_per_frame})")
        return ids

    def build_inputs(
        self,
        question: Question | str,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None = None,
        video: EncodedVideo | None = None,
        deepstack: tuple[torch.Tensor, ...] | None = None,
        thinking: bool = False,
    ) -> dict[str, Any]:
        """The prompt with every frame's line and frame f's n_f placeholders, where n_f is how many of its
        tokens `kept_index` (N,) picks, frame-major (None: all of them); `visual_tokens` (N, D) fill them
        in order. `thinking`: see `chat_text`."""
        if deepstack:
            raise ValueError(f"{type(self).__name__} takes no DeepStack features")
        if video is None:
            raise ValueError("InternVL prompts need the encoded video the visual tokens were taken from")
        _, frame_of = self.kept_by_frame(video, kept_index, visual_tokens)
        full = self._uncompressed_ids(question, video, thinking)  # (S_full,)
        keep, _, _ = self.kept_layout(full, video, frame_of)
        input_ids = full[keep][None].to(self.device)  # (1, S)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            **self.video_inputs(input_ids, visual_tokens, kept_index, video),
        }

    def video_inputs(
        self,
        input_ids: torch.Tensor,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None,
        video: EncodedVideo | None,
    ) -> dict[str, Any]:
        # The model fills its image placeholders with these, a video's frames being images to it.
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=visual_tokens[None])}}
