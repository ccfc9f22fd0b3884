"""What every model family provides, and the chat-model plumbing most families share."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    ProcessorMixin,
    StoppingCriteriaList,
)

from ..errors import ModelError
from ..math.repeats import Repeats, find_repeats, tower_frames
from ..types import EncodedVideo, Frames, PromptTensors, Question
from .decoder import Decoder
from .thinking import Markers, Split, template_has_switch


class VideoModel:
    """A loaded video LLM of one family: its processor, prompts, vision features and generation.

    Family adapters subclass this, set `model_type`, and implement `encode` and the attention
    layout; one file per family in this package, registered by `config.model_type`.
    """

    model_type: ClassVar[str]
    text_sub_config: ClassVar[str] = "text_config"
    # Whether the visual tokens a compressed prompt keeps keep their uncompressed positions (M-RoPE
    # families must), or are renumbered contiguously as the reference does for 1-D positions. The
    # single pass always keeps them: its early layers already rotated the keys with them.
    keeps_uncompressed_positions: ClassVar[bool] = False

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
        # Reasoning (see `thinking`): the tokenizer's markers, and whether the template has a thinking switch.
        self.markers = Markers.of(self.tokenizer)
        template = getattr(processor, "chat_template", None)
        self.thinking_switch = template_has_switch(template.get("default") if isinstance(template, dict) else template)

    @classmethod
    def processor_for(cls, config: Any) -> Any:
        """The family's default media processor for `config`, without a tokenizer (random weights)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_layers(self) -> int:
        return len(self.language_model().layers)

    def attention_layers(self) -> tuple[int, ...]:
        """The decoder layers with softmax attention, the only ones whose query/key states the prior and
        the single pass can read; every layer unless the family's decoder is a hybrid."""
        return tuple(range(self.num_layers))

    def kv_cache_bytes(self, sequence_length: int) -> int:
        """Bytes of the key/value cache the model's own `generate` holds for a prompt of `sequence_length`
        positions: every position in every attention layer (a hybrid's linear-attention layers hold a state of
        fixed size instead, whatever the length)."""
        text = self.model.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        element = torch.finfo(self.model.dtype).bits // 8
        return 2 * len(self.attention_layers()) * text.num_key_value_heads * head_dim * sequence_length * element

    # --- family specifics -------------------------------------------------------------------
    def encode(self, frames: Frames, max_pixels: int | None = None, repeat_tolerance: int | None = 0) -> EncodedVideo:
        """Vision tower, projector and any pooling for the sampled frames; a family whose positions
        encode time reads it from the frames' timing here. `max_pixels` caps each frame's pixels for a
        family that sizes its frames (None: as its reference preprocessing does); one whose frames have a
        fixed size refuses it. A tower frame none of whose pixels differs by more than `repeat_tolerance`
        levels from the one encoded before it (0: bit-for-bit equal; None: never) is not encoded again: it
        takes that one's features (`find_repeats`)."""
        raise NotImplementedError

    @staticmethod
    def repeats(images: np.ndarray, per_group: int, tolerance: int | None) -> Repeats:
        """Which tower frames of the sampled `images` (F, H, W, 3) to encode, `per_group` sampled frames
        each: not those that repeat the one encoded before within `tolerance` (None: every one)."""
        groups = tower_frames(images, per_group)
        return Repeats.none(len(groups)) if tolerance is None else find_repeats(groups, tolerance)

    def text_attention_modules(self) -> list[nn.Module | None]:
        """The language model's self-attention module of every decoder layer, in order (None for a layer
        without one: see `attention_layers`)."""
        raise NotImplementedError

    def language_model(self) -> nn.Module:
        """The decoder stack: `layers`, `norm`, `rotary_emb` and its `config` (no LM head)."""
        raise NotImplementedError

    def decoder(self) -> Decoder:
        """The decoder walked layer by layer by the single pass; the Qwen2-style stack by default."""
        return Decoder(self.language_model(), self.model.get_output_embeddings())

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
    def hears_audio(self) -> bool:
        """Whether the model takes a video's audio track itself (`encode_audio`), not as a transcript."""
        return False

    def encode_audio(self, samples: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The soft tokens of `samples` (N,) float32 mono at 16 kHz, one (A_i, D) tensor per item the model
        hears, in time order (`EncodedVideo.audio`); only for a model that `hears_audio`."""
        raise NotImplementedError

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
        return torch.tensor([[*before, *self.video_span_ids(), *after]])  # on the host, as a tokenizer's ids

    def chat_text(self, question: Question | str, thinking: bool = False, audio_items: int = 0) -> str:
        """The chat template's text for `question` with one video placeholder, ending where the answer
        begins: the video and the first question in the first user turn, then any earlier turns.

        `thinking` is the template's thinking switch where it has one (off: the model answers directly).
        Qwen's templates change only the text after the last turn with it, so never the prompt up to the video;
        Gemma 4's adds a system turn before everything, so a prompt prefix is not shared across the switch.
        `audio_items` audio placeholders go before the video (`EncodedVideo.audio`), so the prefix every question
        shares holds them too."""
        question = Question.of(question)
        media = [*[{"type": "audio"}] * audio_items, {"type": "video"}]
        messages = [{"role": "user", "content": [*media, {"type": "text", "text": question.first_turn_text()}]}]
        for turn, (asked, answered) in enumerate(question.history):
            if turn:
                messages.append({"role": "user", "content": [{"type": "text", "text": asked}]})
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answered}]})
        if question.history:
            messages.append({"role": "user", "content": [{"type": "text", "text": question.text}]})
        switch = {"enable_thinking": thinking} if self.thinking_switch else {}
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **switch)

    def text_prompt_ids(self, text: str, thinking: bool = False) -> torch.Tensor:
        """(1, S): the chat prompt for `text` alone, without a video, ending where the answer begins. A model
        without a tokenizer gets ordinary ids about as many as a tokenizer makes of `text` (4 characters each)."""
        if self.tokenizer is None:
            special = {self.video_token_id(), *self.video_span_ids()}
            vocabulary = self.model.config.get_text_config().vocab_size
            ordinary = [i for i in range(1, min(vocabulary, 1000)) if i not in special]
            length = self.SYNTHETIC_TEXT_BEFORE + max(1, len(text) // 4)
            return torch.tensor([[ordinary[i % len(ordinary)] for i in range(length)]])  # on the host, as a tokenizer's
        messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        switch = {"enable_thinking": thinking} if self.thinking_switch else {}
        chat = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **switch)
        return self.tokenizer(chat, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def prompt_ids(self, question: Question | str, thinking: bool = False) -> torch.Tensor:
        """The chat prompt (1, S) with a single video placeholder, ending where the answer begins."""
        if self.tokenizer is None:
            return self.synthetic_prompt_ids()
        text = self.chat_text(question, thinking)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if int((ids == self.video_token_id()).sum()) != 1:
            raise ModelError(f"the chat template of {self.name!r} does not place exactly one video token")
        return ids

    def uncompressed_prompt_length(self, question: Question | str, video: EncodedVideo, thinking: bool = False) -> int:
        """Tokens of the prompt for `question` about `video` with every visual token: its text and the
        video's tokens (what a server reports as the prompt, whatever compression keeps of it)."""
        text = self.prompt_ids(question, thinking).shape[1] - 1  # less the one video placeholder
        return text + video.num_frames * video.tokens_per_frame + video.extra.shape[0]

    def build_inputs(
        self,
        question: Question | str,
        visual_tokens: torch.Tensor,
        kept_index: torch.Tensor | None = None,
        video: EncodedVideo | None = None,
        deepstack: tuple[torch.Tensor, ...] | None = None,
        thinking: bool = False,
    ) -> dict[str, Any]:
        """Prompt with exactly as many video placeholders as `visual_tokens` (N, D) has rows.

        `video` is the encoded video the tokens were taken from; families with M-RoPE need it.
        `deepstack` is what families with DeepStack inject beside the tokens (each (N, D)); others have none.
        `thinking` is the chat template's thinking switch (`chat_text`).
        """
        if deepstack:
            raise ValueError(f"{type(self).__name__} takes no DeepStack features")
        ids = self.prompt_ids(question, thinking)[0]
        at = int((ids == self.video_token_id()).nonzero()[0])
        placeholders = ids.new_full((visual_tokens.shape[0],), self.video_token_id())
        input_ids = torch.cat([ids[:at], placeholders, ids[at + 1 :]])[None].to(self.device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            **self.video_inputs(input_ids, visual_tokens, kept_index, video),
        }

    @staticmethod
    def kept_by_frame(video: EncodedVideo, kept_index: torch.Tensor | None,
                      visual_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a family whose prompt keeps per-frame markers: `kept_index` (N,) on the host (None: every
        token of `video`) and the frame each of its tokens belongs to (N,), checked to pick `visual_tokens`'
        N rows frame by frame."""
        frames, per_frame = video.num_frames, video.tokens_per_frame
        # The prompt is laid out on the host, its ids as the tokenizer made them, and moved when whole.
        index = torch.arange(frames * per_frame) if kept_index is None else kept_index.cpu()  # on the host
        frame_of = index // per_frame
        if (
            index.shape != (visual_tokens.shape[0],) or bool((index >= frames * per_frame).any())
            or bool((frame_of.diff() < 0).any())
        ):
            raise ValueError(
                f"kept_index must pick {visual_tokens.shape[0]} of the video's {frames * per_frame} tokens "
                f"frame by frame, got shape {tuple(index.shape)}"
            )
        return index, frame_of

    def kept_layout(self, full: torch.Tensor, video: EncodedVideo,
                    frame_of: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where a compressed prompt's tokens stand in the uncompressed prompt `full` (S_full,) of a family that
        keeps per-frame markers: frame f's n_f kept tokens (`frame_of` (N,), from `kept_by_frame`) take its
        first n_f placeholders and the rest of its placeholders go. Returns `keep` (S_full,), what the
        compressed prompt keeps; `slots` (N,), the placeholders the kept tokens take; and every placeholder's
        position (F*T,), frame-major. All on the host."""
        frames, per_frame = video.num_frames, video.tokens_per_frame
        placeholders = (full == self.video_token_id()).nonzero()[:, 0]  # (F*T,) frame-major
        counts = torch.bincount(frame_of, minlength=frames)  # (F,) n_f
        taken = torch.arange(per_frame)[None] < counts[:, None]  # (F, T) on the host
        slots = placeholders.view(frames, per_frame)[taken]  # (N,)
        keep = torch.ones(full.shape[0], dtype=torch.bool)  # on the host
        keep[placeholders] = False
        keep[slots] = True
        return keep, slots, placeholders

    def layout_inputs(self, *arguments: Any, **keywords: Any) -> dict[str, Any]:
        """The ids `prompt_tensors` lays its rows out by: `build_inputs`'s, unless a family hands `generate`
        embeddings it makes from those rows (Gemma 4 with audio)."""
        return self.build_inputs(*arguments, **keywords)

    def sequence_positions(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Position ids of `inputs` (from `build_inputs`) for the rotary embedding: 1-D (1, S) here."""
        length = inputs["input_ids"].shape[1]
        return torch.arange(length, device=self.device)[None]

    def prompt_tensors(
        self,
        question: Question | str,
        video: EncodedVideo,
        visual_tokens: torch.Tensor | None = None,
        kept_index: torch.Tensor | None = None,
        deepstack: tuple[torch.Tensor, ...] = (),
        thinking: bool = False,
    ) -> PromptTensors:
        """The prompt for a walk of our own through the decoder layers: with every visual token of
        `video`, or with the `visual_tokens` (N, D) that `kept_index` (N,) picks from it, frames' first
        and extra tokens last, and those frame tokens' DeepStack rows `deepstack` (as `Plan` holds them)."""
        frame_tokens = video.num_frames * video.tokens_per_frame
        if visual_tokens is None:
            visual_tokens, kept_index = video.all_tokens(), None
            deepstack = tuple(layer.flatten(0, 1) for layer in video.deepstack)
        else:
            frame_tokens = int((kept_index < frame_tokens).sum())
        inputs = self.layout_inputs(
            question, visual_tokens, kept_index, video=video, deepstack=deepstack or None, thinking=thinking
        )
        visual = self.video_positions(inputs)
        embeddings = self.model.get_input_embeddings()(inputs["input_ids"])
        embeddings[0, visual] = visual_tokens.to(embeddings)
        extra = visual_tokens.shape[0] - frame_tokens  # the tokens after the frames carry no DeepStack features: add nothing
        return PromptTensors(
            input_ids=inputs["input_ids"],
            embeddings=embeddings,
            position_ids=self.sequence_positions(inputs),
            visual_positions=visual,
            frame_positions=visual[:frame_tokens],
            deepstack=tuple(torch.cat([layer, layer.new_zeros(extra, layer.shape[-1])]) for layer in deepstack),
        )

    def video_positions(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Sequence positions (N,) of the video placeholders in `inputs`."""
        return (inputs["input_ids"][0] == self.video_token_id()).nonzero()[:, 0]

    def generate(
        self,
        inputs: dict[str, Any],
        generation: GenerationConfig,
        logits_processor: LogitsProcessorList | None = None,
        streamer: Any = None,
        *,
        stopping_criteria: StoppingCriteriaList | None = None,
    ) -> torch.Tensor:
        """New token ids (n,) for `inputs`."""
        prompt_length = inputs["input_ids"].shape[1]
        output = self.model.generate(
            **inputs, generation_config=generation, logits_processor=logits_processor, streamer=streamer,
            stopping_criteria=stopping_criteria,
        )
        return output[0, prompt_length:]

    def decode(self, token_ids: torch.Tensor) -> str:
        if self.tokenizer is None:  # random weights of a shape without a tokenizer: the ids are the answer
            return "token ids " + " ".join(str(int(token)) for token in token_ids.flatten())
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    def can_think(self) -> bool:
        """Whether the model can reason before answering: its chat template has a thinking switch, or its
        prompt opens a reasoning block anyway (a model that always reasons)."""
        return self.thinking_switch or (self.tokenizer is not None and self.reasons_first(self.prompt_ids("")))

    def reasons_first(self, prompt_ids: torch.Tensor) -> bool:
        """Whether the answer to the prompt `prompt_ids` (1, S) begins inside a reasoning block."""
        return self.markers is not None and self.markers.opens(prompt_ids[0].tolist())

    def split_reasoning(self, prompt_ids: torch.Tensor, token_ids: torch.Tensor) -> Split:
        """The new tokens `token_ids` (n,) of the prompt `prompt_ids` (1, S), reasoning apart from answer."""
        generated = token_ids.tolist()
        if self.markers is None:
            return Split(None, generated, closed=True)
        return self.markers.split(generated, self.reasons_first(prompt_ids))
