"""What every model family provides, and the chat-model plumbing most families share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, ProcessorMixin

from ..errors import ModelError


@dataclass
class EncodedVideo:
    """The query-independent result of the vision stage for one video (worth caching)."""

    features: torch.Tensor  # (F, T, D) visual tokens per frame, in the LLM's embedding space
    extra: torch.Tensor  # (E, D) tokens that follow the frames and are never compressed (LLaVA's newline)
    attention: torch.Tensor  # (F, T) attention each token receives at the selector layer (float32)
    keys: torch.Tensor  # (F, T, Dk) key metric at that layer, averaged over heads (float32)
    # Consecutive sampled frames that make one frame here (Qwen2.5-VL's temporal patches hold 2); the
    # last frame covers fewer when the sampled count does not divide.
    frames_per_group: int = 1
    # What families with layout-dependent positions (M-RoPE) need again to rebuild the prompt: the
    # vision grid (frames, height, width) in patches before merging, and the seconds one frame spans.
    grid: tuple[int, int, int] | None = None
    frame_seconds: float | None = None

    @property
    def num_frames(self) -> int:
        return self.features.shape[0]

    @property
    def tokens_per_frame(self) -> int:
        return self.features.shape[1]

    def all_tokens(self) -> torch.Tensor:
        return torch.cat([self.features.flatten(0, 1), self.extra])  # (F*T + E, D)

    def kept_index(self, per_frame: list[torch.Tensor]) -> torch.Tensor:
        """(N,) positions in `all_tokens()` of what a selection keeps: `per_frame[f]` indexes frame f's
        T tokens; the extra tokens, never compressed, follow."""
        frames = [f * self.tokens_per_frame + index.cpu() for f, index in enumerate(per_frame)]
        extra = self.num_frames * self.tokens_per_frame + torch.arange(self.extra.shape[0])
        return torch.cat([*frames, extra])


@dataclass
class PromptTensors:
    """A prompt with every visual token in place, as the language model's decoder layers take it."""

    input_ids: torch.Tensor  # (1, S)
    embeddings: torch.Tensor  # (1, S, D) token embeddings with the visual tokens written in
    position_ids: torch.Tensor  # what the rotary embedding takes: (1, S), or (3, 1, S) for M-RoPE
    frame_positions: torch.Tensor  # (F*T,) sequence positions of the frames' tokens, frame-major


class VideoModel:
    """A loaded video LLM of one family: its processor, prompts, vision features and generation.

    Family adapters subclass this, set `model_type`, and implement `encode` and the attention
    layout; one file per family in this package, registered by `config.model_type`.
    """

    model_type: ClassVar[str]
    text_sub_config: ClassVar[str] = "text_config"

    # A synthetic prompt (random-weight models have no tokenizer) is shaped like a real one: a chat
    # preamble before the video, then a one-line question and the generation prompt.
    SYNTHETIC_TEXT_BEFORE, SYNTHETIC_TEXT_AFTER = 14, 24

    def __init__(self, name: str, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        self.name = name
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer  # None for a random-weight model: prompts are synthetic
        if self.tokenizer is not None and all(
            getattr(source, "chat_template", None) is None for source in (processor, self.tokenizer)
        ):
            raise ModelError(f"model {name!r} ships no chat template, so a prompt cannot be built for it")

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        """The family's default media processor for `config`, without a tokenizer (random weights)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_layers(self) -> int:
        return len(self.text_attention_modules())

    # --- family specifics -------------------------------------------------------------------
    def encode(self, images: np.ndarray, fps: float | None = None) -> EncodedVideo:
        """Vision tower, projector and any pooling for frames (F, H, W, 3) uint8 RGB.

        `fps` is the rate the frames were sampled at (frames per second of video), for families whose
        positions encode time; None when unknown.
        """
        raise NotImplementedError

    def text_attention_modules(self) -> list[nn.Module]:
        """The language model's self-attention module of every decoder layer, in order."""
        raise NotImplementedError

    def language_model(self) -> nn.Module:
        """The decoder stack: `layers`, `norm`, `rotary_emb` and its `config` (no LM head)."""
        raise NotImplementedError

    def video_token_id(self) -> int:
        raise NotImplementedError

    def video_inputs(
        self,
        input_ids: torch.Tensor,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None,
        video: EncodedVideo | None,
    ) -> dict[str, Any]:
        """Model keyword arguments that carry pre-computed visual tokens (N, D) for `input_ids`.

        `kept_index` (N,) says where each token sat among the uncompressed video's tokens (None:
        nothing was dropped) and `video` is the uncompressed video they came from, for families
        whose positions depend on them.
        """
        raise NotImplementedError

    # --- shared plumbing --------------------------------------------------------------------
    def video_span_ids(self) -> list[int]:
        """What a chat template writes for one video, with a single placeholder."""
        return [self.video_token_id()]

    def synthetic_prompt_ids(self) -> torch.Tensor:
        """(1, S) ids of ordinary vocabulary around the video span, for models without a tokenizer."""
        special = {self.video_token_id(), *self.video_span_ids()}
        vocabulary = self.model.config.get_text_config().vocab_size
        length = self.SYNTHETIC_TEXT_BEFORE + self.SYNTHETIC_TEXT_AFTER
        ordinary = [i for i in range(1, min(vocabulary, 1000)) if i not in special][:length]
        text = [ordinary[i % len(ordinary)] for i in range(length)]
        before, after = text[: self.SYNTHETIC_TEXT_BEFORE], text[self.SYNTHETIC_TEXT_BEFORE :]
        return torch.tensor([[*before, *self.video_span_ids(), *after]])

    def prompt_ids(self, question: str) -> torch.Tensor:
        """The chat prompt (1, S) with a single video placeholder, ending where the answer begins."""
        if self.tokenizer is None:
            return self.synthetic_prompt_ids()
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if int((ids == self.video_token_id()).sum()) != 1:
            raise ModelError(f"the chat template of {self.name!r} does not place exactly one video token")
        return ids

    def build_inputs(
        self,
        question: str,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None = None,
        video: EncodedVideo | None = None,
    ) -> dict[str, Any]:
        """Prompt with exactly as many video placeholders as `visual_tokens` (N, D) has rows.

        `video` is the encoded video the tokens were taken from; families with M-RoPE need it.
        """
        ids = self.prompt_ids(question)[0]
        at = int((ids == self.video_token_id()).nonzero()[0])
        placeholders = torch.full((visual_tokens.shape[0],), self.video_token_id(), dtype=ids.dtype)
        input_ids = torch.cat([ids[:at], placeholders, ids[at + 1 :]])[None].to(self.device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            **self.video_inputs(input_ids, visual_tokens, kept_index, video),
        }

    def sequence_positions(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Position ids of `inputs` (from `build_inputs`) for the rotary embedding: 1-D (1, S) here."""
        length = inputs["input_ids"].shape[1]
        return torch.arange(length, device=self.device)[None]

    def prompt_tensors(self, question: str, video: EncodedVideo) -> PromptTensors:
        """The uncompressed prompt for a forward pass of our own through the decoder layers."""
        tokens = video.all_tokens()
        inputs = self.build_inputs(question, tokens, video=video)
        visual = self.video_positions(inputs)
        embeddings = self.model.get_input_embeddings()(inputs["input_ids"])
        embeddings[0, visual] = tokens.to(embeddings)
        return PromptTensors(
            input_ids=inputs["input_ids"],
            embeddings=embeddings,
            position_ids=self.sequence_positions(inputs),
            frame_positions=visual[: video.num_frames * video.tokens_per_frame],
        )

    def video_positions(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Sequence positions (N,) of the video placeholders in `inputs`."""
        return (inputs["input_ids"][0] == self.video_token_id()).nonzero()[:, 0]

    def prefill(self, inputs: dict[str, Any]) -> torch.Tensor:
        """One forward pass over the prompt; returns the logits at its last position (1, V)."""
        return self.model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1]

    def generate(
        self,
        inputs: dict[str, Any],
        generation: GenerationConfig,
        logits_processor: LogitsProcessorList | None = None,
        streamer: Any = None,
    ) -> torch.Tensor:
        """New token ids (n,) for `inputs`."""
        prompt_length = inputs["input_ids"].shape[1]
        output = self.model.generate(
            **inputs, generation_config=generation, logits_processor=logits_processor, streamer=streamer
        )
        return output[0, prompt_length:]

    def decode(self, token_ids: torch.Tensor) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
