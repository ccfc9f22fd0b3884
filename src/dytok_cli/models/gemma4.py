"""Gemma 4 (`gemma4`: E2B, E4B, 26B-A4B, 31B): a ViT whose patches are pooled k x k into soft tokens, and a
decoder of sliding-window layers between global ones.

Frames and time. Each sampled frame is one frame here. The video processor sizes a frame, aspect kept, to a
budget of soft tokens (70 at its default settings: 66 for 16:9), and the processor writes each frame's time as
text before its tokens, so the video is interleaved with text:

    00:00 <|image> <|video|> * T <image|> 00:01 <|image> ... <image|>

A compressed prompt keeps every timestamp and marker and gives frame f exactly its n_f placeholders. The
prompt is the processor's own expansion of the chat template's video placeholder, fed metadata that makes its
timestamps the decoder's (the times in seconds as frame indices at 1 frame per second). Positions are 1-D: a
two-pass prompt is numbered contiguously, as the reference numbers LLaVA's; the single pass keeps them.

The decoder (`Gemma4Decoder`). `text_config.layer_types` marks most layers `sliding_attention` (a token
attends to the last `sliding_window` tokens only: 512 on E2B/E4B) and every fifth or sixth, and the last,
`full_attention` (global). From a long prompt's last token a sliding layer sees none of the video, so the prior
and the single pass's pruning read global layers only (`attention_layers`). Three more things ride along:

- Per-layer embeddings (E2B, E4B). Every layer adds an input of its own to each token, made from that token
  alone: its id (a placeholder counts as padding) and its input embedding (a visual token's features). A
  prompt carries them in `PromptTensors.layer_inputs`, row for row, so a kept token keeps its own.
- KV sharing (E2B, E4B). The last `num_kv_shared_layers` layers compute no keys or values: each reads those
  of the last earlier layer of its kind (the "store" layer), as that layer returns them in the same forward.
  After pruning the store layer holds the kept tokens only, so every layer reading it sees the same kept set.
- Bidirectional frames (26B-A4B, 31B: `use_bidirectional_attention="vision"`). In the sliding layers the
  tokens of one frame attend to each other both ways; the global layers stay causal. A frame's kept tokens
  do so among themselves. The prompt's token types (`mm_token_type_ids`) say where the frames are.

Audio (E2B, E4B: an audio tower). With `--speech` the model hears the video's audio track itself: the whole
track, in items of 30 seconds (the most the processor gives one item: 750 tokens of 40 ms), in time order, each
written as the processor writes it, `<|audio> <|audio|> * A <audio|>`, in the user turn before the video, so the
prefix every question shares holds it. Audio tokens are never compressed and count in no frame's budget. The
model takes audio only as `input_features`, which its tower encodes on every call, so the audio's soft tokens
(`EncodedVideo.audio`) are written into the prompt's embeddings as the visual tokens are, each as padding in
its per-layer inputs as the model's own forward makes them, and `generate` (which takes no embeddings for this
model) goes on from a cache of the prompt that our walk through the layers filled.

VisionZip scores come from the tower's last layer, whose output the pooler averages k x k into soft tokens:
each patch's attention received and key, within its own frame, averaged over the patches of each soft token.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.masking_utils import (
    blockwise_overlay,
    create_causal_mask,
    create_sliding_window_causal_mask,
    maybe_pad_block_sequence_ids,
    sliding_window_overlay,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.video_utils import VideoMetadata

from ..attention import watch_attention
from ..errors import ModelError
from ..types import EncodedVideo, Frames, PromptTensors, Question
from . import register
from .base import VideoModel
from .decoder import Decoder, cache_argument

# What `mm_token_type_ids` calls a video token (text 0, image 1, video 2, audio 3).
_VIDEO_TOKEN_TYPE = 2
# The most audio the processor gives one item: its feature extractor truncates at 30 seconds.
_AUDIO_ITEM_SECONDS = 30
# A synthetic prompt's timestamp, as long as Gemma's tokenizer makes "00:01" (digits one by one, and ":").
_SYNTHETIC_TIMESTAMP_TOKENS = 5


def frame_block_ids(video: torch.Tensor) -> torch.Tensor:
    """(1, S) bool, True at a frame's tokens -> (1, S) the frame each token belongs to, counted from 0 in the
    order the frames come, or -1 for a token of no frame; a frame is a run of frame tokens (what the model's
    own `get_block_sequence_ids_for_mask` computes from the token types)."""
    before = torch.nn.functional.pad(video[:, :-1], (1, 0), value=False)
    starts = video & ~before
    return torch.where(video, torch.cumsum(starts.int(), dim=1) - 1, -1)


def pooled_token_index(positions: torch.Tensor, kernel: int) -> torch.Tensor:
    """(F, P, 2) patch positions (x, y; -1 for padding) -> (F, P) the soft token each patch is pooled into
    (-1 for padding): the pooler's k x k kernels in raster order (`Gemma4VisionPooler`)."""
    real = (positions >= 0).all(dim=-1)
    clamped = positions.clamp(min=0)
    columns = (clamped[..., 0].max(dim=-1, keepdim=True).values + 1) // kernel
    index = clamped[..., 0] // kernel + columns * (clamped[..., 1] // kernel)
    return torch.where(real, index, -1)


def per_token(values: torch.Tensor, token: torch.Tensor, tokens: int) -> torch.Tensor:
    """(F, P, C) per patch -> (F, T, C), the mean over each soft token's patches; `token` (F, P) from
    `pooled_token_index` (padding patches count nowhere)."""
    frames, _, channels = values.shape
    real = token >= 0
    sums = values.new_zeros(frames, tokens + 1, channels).scatter_add_(
        1, torch.where(real, token, tokens)[..., None].expand(-1, -1, channels), values)
    counts = torch.zeros(frames, tokens + 1, dtype=values.dtype, device=values.device).scatter_add_(
        1, torch.where(real, token, tokens), real.to(values.dtype))
    return (sums / counts.clamp(min=1)[..., None])[:, :tokens]


def attention_received(query: torch.Tensor, key: torch.Tensor, real: torch.Tensor, scaling: float) -> torch.Tensor:
    """(F, H, P, d) x2 and (F, P) real patches -> (F, P): attention each real patch receives from the real
    patches of its frame, averaged over heads and those queries (0 for padding), in float32."""
    received = []
    for q, k, keep in zip(query.float(), key.float(), real):
        weights = (q[:, keep] @ k[:, keep].transpose(-1, -2) * scaling).softmax(dim=-1)  # (H, R, R)
        frame = weights.new_zeros(keep.shape[0])
        frame[keep] = weights.mean(dim=(0, 1))
        received.append(frame)
    return torch.stack(received)


class Gemma4Decoder(Decoder):
    """Gemma 4's decoder walked layer by layer: rotary embeddings and masks by layer kind, each layer's own
    per-layer inputs, and the keys and values KV-shared layers read (see the module's docstring)."""

    def __init__(self, text_model: nn.Module, lm_head: nn.Module, video_token_id: int) -> None:
        super().__init__(text_model, lm_head)
        self.video_token_id = video_token_id
        self.sharing = text_model.config.kv_sharing_modes  # per layer: None, "store" or "reuse"

    def new_cache(self) -> Any:
        cache = super().new_cache()
        # A sliding-window layer's cache keeps only its last window of keys; the single pass picks the kept
        # tokens' keys out of the whole prompt, so it keeps them all. Attention sees the same window either way.
        cache.activate_past_recording()
        return cache

    def _reads_shared(self, index: int) -> bool:
        return self.sharing[index] == "reuse"

    def _store(self, kind: str) -> int:
        """The layer whose keys and values the KV-shared layers of `kind` read."""
        return next(i for i, mode in enumerate(self.sharing) if mode == "store" and self.layer_types[i] == kind)

    def _kind_masks(self, hidden: torch.Tensor, prompt: PromptTensors, cache: Any, layers: range) -> dict[str, Any]:
        """The mask of each layer kind in `layers` for `hidden`, the rows of `prompt`, as new tokens."""
        config = self.text.config
        masks = {}
        for kind in {self.layer_types[i] for i in layers}:
            own = [i for i in layers if self.layer_types[i] == kind and not self._reads_shared(i)]
            arguments: dict[str, Any] = dict(config=config, inputs_embeds=hidden, attention_mask=None)
            if own:  # sized by what a layer of this kind holds before these tokens
                arguments.update(layer_idx=own[0], **cache_argument(create_causal_mask, cache))
                before = cache.get_seq_length(own[0])
            else:  # every one reads the store layer, which holds these tokens alone (see `_shared`)
                arguments.update(cache_argument(create_causal_mask, None))
                before = 0
            if kind == "full_attention":
                masks[kind] = create_causal_mask(**arguments)
            elif config.use_bidirectional_attention == "vision":
                masks[kind] = create_causal_mask(
                    **arguments,
                    or_mask_function=blockwise_overlay(self._frame_blocks(prompt, before, hidden.shape[1])),
                    and_mask_function=sliding_window_overlay(config.sliding_window),
                )
            else:
                masks[kind] = create_sliding_window_causal_mask(**arguments)
        return masks

    def _frame_blocks(self, prompt: PromptTensors, before: int, length: int) -> torch.Tensor:
        """The frame of each token (`frame_block_ids`) by absolute position, as the masks index it: the `before`
        tokens already held count as none (a prompt's later pieces hold no frame tokens), and the positions of
        keys not yet there neither."""
        blocks = frame_block_ids(prompt.input_ids == self.video_token_id)
        blocks = torch.nn.functional.pad(blocks, (before, 0), value=-1)
        return maybe_pad_block_sequence_ids(blocks, None, before + length, 0)

    def _shared(self, cache: Any, layers: range, tokens: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values the KV-shared layers of `layers` read from store layers before `layers` (the single
        pass's layers after K, when K is past the store layers): all their store layer holds, which must be the
        `tokens` these layers run (they were handed over with the store layer's kept keys)."""
        shared = {}
        for kind in {self.layer_types[i] for i in layers if self._reads_shared(i)}:
            store = self._store(kind)
            if store < layers.start:
                keys, values = cache.layers[store].keys, cache.layers[store].values
                if keys.shape[-2] != tokens:
                    raise ValueError(f"layer {store} holds {keys.shape[-2]} tokens, not the {tokens} that "
                                     f"layers {layers.start}-{layers.stop - 1} run")
                shared[kind] = (keys, values)
        return shared

    def run(self, hidden: torch.Tensor, prompt: PromptTensors, cache: Any, layers: range) -> torch.Tensor:
        if not layers:
            return hidden
        kinds = {self.layer_types[i] for i in layers}
        rotary = {kind: self.text.rotary_emb(hidden, prompt.position_ids, kind) for kind in kinds}
        masks = self._kind_masks(hidden, prompt, cache, layers)
        shared = self._shared(cache, layers, hidden.shape[1])  # the store layers in `layers` add theirs as they run
        for index in layers:
            layer = self.text.layers[index]
            kind = self.layer_types[index]
            hidden = layer(
                hidden,
                per_layer_input=None if prompt.layer_inputs is None else prompt.layer_inputs[:, :, index],
                shared_kv_states=shared,
                position_embeddings=rotary[kind],
                attention_mask=masks[kind],
                position_ids=prompt.position_ids,
                use_cache=True,
                **cache_argument(type(layer).forward, cache),
            )
        return hidden

    def kept_cache(self, state: Any, keep: torch.Tensor, layers: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # A KV-shared layer holds nothing of its own: (None, None), as `snapshot` finds it too.
        return [
            (None, None) if self._reads_shared(i) else (state.layers[i].keys[:, :, keep], state.layers[i].values[:, :, keep])
            for i in layers
        ]

    def resume(self, past: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> Any:
        cache = self.new_cache()
        for layer, (keys, values) in enumerate(past):
            if not self._reads_shared(layer):
                cache.update(keys, values, layer)
        return cache


@register
class Gemma4(VideoModel):
    model_type = "gemma4"

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        from transformers import Gemma4AudioFeatureExtractor, Gemma4VideoProcessor

        vision = config.vision_config
        # The published checkpoints' video processor and feature extractor: the class defaults (70 soft tokens a
        # frame; 128 mel bins of 16 kHz audio).
        video_processor = Gemma4VideoProcessor(patch_size=vision.patch_size, pooling_kernel_size=vision.pooling_kernel_size)
        return SimpleNamespace(video_processor=video_processor, feature_extractor=Gemma4AudioFeatureExtractor(),
                               tokenizer=None)

    def _text_config(self) -> Any:
        return self.model.config.get_text_config()

    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    def text_attention_modules(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.language_model().layers]

    def attention_layers(self) -> tuple[int, ...]:
        return tuple(i for i, kind in enumerate(self._text_config().layer_types) if kind == "full_attention")

    def kv_cache_bytes(self, sequence_length: int) -> int:
        # Only the layers that make keys and values hold them (a KV-shared layer reads another's), each with its
        # kind's heads; a sliding-window layer keeps its last window but one between steps.
        text = self._text_config()
        element = torch.finfo(self.model.dtype).bits // 8
        total = 0
        for index, kind in enumerate(text.layer_types):
            if text.kv_sharing_modes[index] == "reuse":
                continue
            layer = text.per_layer_config[index]
            positions = min(sequence_length, text.sliding_window - 1) if kind == "sliding_attention" else sequence_length
            total += 2 * layer.num_key_value_heads * layer.head_dim * positions * element
        return total

    def decoder(self) -> Decoder:
        return Gemma4Decoder(self.language_model(), self.model.get_output_embeddings(), self.video_token_id())

    def video_token_id(self) -> int:
        return self.model.config.video_token_id

    def _bidirectional_frames(self) -> bool:
        return self._text_config().use_bidirectional_attention == "vision"

    # --- vision -------------------------------------------------------------------------------
    def encode(self, frames: Frames, max_pixels: int | None = None, repeat_tolerance: int | None = 0) -> EncodedVideo:
        processor = self.processor.video_processor
        if max_pixels is not None:  # refused rather than ignored, so no record reports a size it did not get
            raise ModelError(f"--max-pixels does not apply to {self.name!r}: Gemma 4's processor sizes every frame to "
                             f"a budget of {processor.max_soft_tokens} soft tokens, the fewest it offers")
        processed = processor(videos=[frames.images], do_sample_frames=False, return_tensors="pt")
        repeats = self.repeats(frames.images, 1, repeat_tolerance)
        encoded = list(repeats.encoded)
        pixels = processed["pixel_values_videos"][encoded].to(self.device, self.model.dtype)  # (U, P, C)
        positions = processed["video_position_ids"][encoded].to(self.device)  # (U, P, 2)
        captured: dict[str, Any] = {}

        def capture(query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
            captured.update(query=query, key=key, scaling=scaling)

        block = self.model.model.vision_tower.encoder.layers[-1].self_attn  # its output feeds the pooler
        with torch.inference_mode(), watch_attention(self.model, "vision_config", {block: capture}):
            output = self.model.model.get_video_features(
                pixel_values_videos=pixels, video_position_ids=positions,
                num_frames_per_video=torch.tensor([len(encoded)]),  # on the host: the tower reads it as a list
            )
        features = output.pooler_output[0]
        tokens = features.shape[0] // len(encoded)
        token = pooled_token_index(positions, self.model.config.vision_config.pooling_kernel_size)
        attention = attention_received(captured["query"], captured["key"], token >= 0, captured["scaling"])
        patch = self.model.config.vision_config.patch_size
        return EncodedVideo(
            features=repeats.spread(features.view(len(encoded), tokens, -1)),
            extra=features[:0],
            attention=repeats.spread(per_token(attention[..., None], token, tokens)[..., 0]),
            keys=repeats.spread(per_token(captured["key"].float().mean(dim=1), token, tokens)),
            reused_frames=repeats.reused,
            frame_size=(int(positions[0, :, 0].max() + 1) * patch, int(positions[0, :, 1].max() + 1) * patch),
            timestamps=tuple(frames.timestamps),
        )

    # --- audio --------------------------------------------------------------------------------
    def hears_audio(self) -> bool:
        return self.model.config.audio_config is not None

    def encode_audio(self, samples: np.ndarray) -> tuple[torch.Tensor, ...]:
        extractor = self.processor.feature_extractor
        step = _AUDIO_ITEM_SECONDS * extractor.sampling_rate
        items = [samples[start : start + step] for start in range(0, samples.shape[0], step)]
        # All items at once, padded to the longest, as the processor extracts them.
        features = extractor(items, return_tensors="pt")
        with torch.inference_mode():
            output = self.model.model.get_audio_features(
                features["input_features"].to(self.device, self.model.dtype), features["input_features_mask"].to(self.device)
            )
        # An item's padding makes tokens the model strips; the rest are its own.
        return tuple(tokens[real] for tokens, real in zip(output.pooler_output, output.attention_mask))

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
        """The prompt with every timestamp and frame f's first n_f placeholders, where n_f is how many of frame
        f's tokens `kept_index` (N,) picks, frame-major (None: all of them); `visual_tokens` (N, D) fill them in
        order. `thinking`: see `chat_text`. With audio (`video.audio`), `generate` goes on from a cache of the
        prompt with the audio and visual tokens written in."""
        if video is None or not video.audio:
            return self.layout_inputs(question, visual_tokens, kept_index, video, deepstack, thinking)
        prompt = self.prompt_tensors(question, video, visual_tokens, kept_index, deepstack or (), thinking)
        # `generate` takes no embeddings for this model: it goes on from a cache of the prompt but its last token
        # (a text token, which it runs itself: see `models.decoder`).
        decoder = self.decoder()
        cache = decoder.new_cache()
        last = prompt.length - 1
        with torch.inference_mode():
            decoder.run(prompt.embeddings[:, :last], prompt.rows(0, last), cache, range(decoder.num_layers))
        return {
            "input_ids": prompt.input_ids,
            "attention_mask": torch.ones_like(prompt.input_ids),
            "position_ids": prompt.position_ids,
            **cache_argument(type(self.model).forward, cache),
        }

    def layout_inputs(
        self,
        question: Question | str,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None = None,
        video: EncodedVideo | None = None,
        deepstack: tuple[torch.Tensor, ...] | None = None,
        thinking: bool = False,
    ) -> dict[str, Any]:
        """`build_inputs` as the model's own forward takes them: the ids, and the visual tokens beside them."""
        if deepstack:
            raise ValueError("Gemma 4 takes no DeepStack features")
        if video is None:
            raise ValueError("Gemma 4 prompts need the encoded video the visual tokens were taken from")
        _, frame_of = self.kept_by_frame(video, kept_index, visual_tokens)
        full = self._uncompressed_ids(question, video, thinking)  # (S_full,)
        keep, _, _ = self.kept_layout(full, video, frame_of)
        input_ids = full[keep][None].to(self.device)  # (1, S)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=[visual_tokens])},
        }
        if self._bidirectional_frames():  # the token types say where the frames that attend both ways are
            inputs["mm_token_type_ids"] = (input_ids == self.video_token_id()).long() * _VIDEO_TOKEN_TYPE
        return inputs

    def uncompressed_prompt_length(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> int:
        # Each frame brings its timestamp's tokens and its markers beside its visual tokens.
        return int(self._uncompressed_ids(question, video, thinking).shape[0])

    def _audio_token_ids(self) -> tuple[int, int, int]:
        """(begin, placeholder, end) of an audio item."""
        config = self.model.config
        return config.boa_token_id, config.audio_token_id, config.eoa_token_index

    def _as_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`input_ids` with each placeholder of a visual or audio token as padding, as the model's own forward
        makes the per-layer inputs."""
        placeholders = (input_ids == self.video_token_id()) | (input_ids == self.model.config.audio_token_id)
        return input_ids.masked_fill(placeholders, self._text_config().pad_token_id)

    def _uncompressed_ids(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> torch.Tensor:
        """(S_full,) the prompt the processor builds for `video`: every frame's timestamp, markers and T
        placeholders in place of the chat template's single video placeholder."""
        prompt = self.prompt_ids(question, thinking)[0]
        at = int((prompt == self.video_token_id()).nonzero()[0])
        config = self.model.config
        begin, placeholder, end = self._audio_token_ids()
        if self.tokenizer is None:
            timestamp = prompt[:_SYNTHETIC_TIMESTAMP_TOKENS]  # ordinary vocabulary, as `synthetic_prompt_ids` uses
            frame = [*timestamp.tolist(), config.boi_token_id, *[self.video_token_id()] * video.tokens_per_frame,
                     config.eoi_token_id]
            heard = [token for item in video.audio for token in (begin, *[placeholder] * item.shape[0], end)]
            return torch.cat([prompt[:at], prompt.new_tensor(heard + frame * video.num_frames), prompt[at + 1 :]])
        # Times in seconds as frame indices at 1 frame per second: the processor's timestamps are then the frames'.
        metadata = VideoMetadata(total_num_frames=video.num_frames, fps=1.0, frames_indices=list(video.timestamps))
        layout = {"num_soft_tokens_per_video": [video.tokens_per_frame], "video_metadata": [metadata]}
        replacement = self.processor.replace_video_token(layout, 0)
        text = self.chat_text(question, thinking, audio_items=len(video.audio))
        processor = self.processor
        heard = [f"{processor.boa_token}{processor.audio_token * item.shape[0]}{processor.eoa_token}" for item in video.audio]
        expanded = processor.get_text_with_replacements(
            [text], videos_replacements=[replacement], audio_replacements=heard
        )[0][0]
        ids = self.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if (
            int((ids == self.video_token_id()).sum()) != video.num_frames * video.tokens_per_frame
            or int((ids == placeholder).sum()) != sum(item.shape[0] for item in video.audio)
        ):
            raise ModelError(f"the processor of {self.name!r} does not write one placeholder per visual or audio token")
        return ids

    def prompt_tensors(
        self,
        question: Question | str,
        video: EncodedVideo,
        visual_tokens: torch.Tensor | None = None,
        kept_index: torch.Tensor | None = None,
        deepstack: tuple[torch.Tensor, ...] = (),
        thinking: bool = False,
    ) -> PromptTensors:
        prompt = super().prompt_tensors(question, video, visual_tokens, kept_index, deepstack, thinking)
        if video.audio:  # in the order the items come, as the model scatters them
            heard = (prompt.input_ids[0] == self.model.config.audio_token_id).nonzero()[:, 0]
            prompt.embeddings[0, heard] = torch.cat(video.audio).to(prompt.embeddings)
        text = self.language_model()
        if not text.hidden_size_per_layer_input:
            return prompt
        # As the model's own forward makes them: from each token's id, a placeholder's counting as padding, and
        # from its input embedding, a visual or audio token's features.
        layer_inputs = text.project_per_layer_inputs(prompt.embeddings, text.get_per_layer_inputs(self._as_text(prompt.input_ids), None))
        return dataclasses.replace(prompt, layer_inputs=layer_inputs)
