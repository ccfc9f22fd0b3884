"""Train a small video LLM of a real `transformers` class from random weights on the generated task
(`tasks.py`), on a CPU, and save it as a checkpoint `dytok --model DIR` loads like any other.

    python benchmarks/trained/train.py llava-ov benchmarks/trained/models/llava-ov
    python benchmarks/trained/train.py qwen3.5 benchmarks/trained/models/qwen3.5

Two families, each its real classes with the configs shrunk: LLaVA-OneVision (SigLIP + Qwen2, 2x2
pooling, the newline token) and Qwen3.5 (its own vision tower, and the hybrid decoder: full attention,
Gated DeltaNet, full attention twice, so the single pass prunes at a real full-attention layer with a
linear-attention layer after it, and the prior has three layers to read). Tokenizers are built offline from the prompts' own words:
word-level for LLaVA-OneVision, byte-level BPE for Qwen3.5 (whose loader rebuilds it as one).

Training inputs are exactly what `dytok eval` gives the model at ratio 1: each video is written as
an mp4, decoded by dytok's own reader (`--frames 32`), preprocessed by the checkpoint's own processor,
and the prompt (lmms-eval's VideoMME prompt, as `eval` writes it) is built by dytok's own adapter for
the family, with the visual tokens handed over as `generate` gets them (`mm_encoder_outputs`). The loss
is the model's own cross-entropy on the answer: the option's letter, then the end-of-turn token.
Every video is asked all four kinds of question, so its vision pass and the prompt up to the video's
end serve four answers. A curriculum starts with large targets shown in several frames and reaches the
test split's small ones, in 1-3 frames, at 60 % of training (Qwen3.5: it keeps to the large ones for
the first 30 %, and reaches the small ones at 80 %).

Seeded (`--seed`, and the train split's seed for the videos); float32; one thread. The validation
split's accuracy at ratio 1 is printed as training goes, and the model is saved at each validation
with `training.json` beside it (settings, minutes, CPU minutes, the validation accuracies). Retraining
reproduces the figures, not the bytes: float sums in another order make the weights drift apart within
a few steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "src"))

import tasks  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    DynamicCache,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessor,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling  # noqa: E402

from dytok_cli.apps.eval import Item, prompt  # noqa: E402
from dytok_cli.config import Device, DType  # noqa: E402
from dytok_cli.media.video import read_video  # noqa: E402
from dytok_cli.models import load_model  # noqa: E402

# One thread: on a 2-core machine that other jobs load, two threads spin waiting for each other (measured
# here, load average about 9: 20-40 s a step with two, 4 s with one; tests/conftest.py found the same).
THREADS = 1
# Peak learning rates, measured on short runs (for Qwen3.5's four-layer decoder as for LLaVA-OneVision's).
LEARNING_RATES = {"llava-ov": 2e-3, "qwen3.5": 2e-3}
LETTERS = "ABCD"

# --- tokenizers ------------------------------------------------------------------------------------------

LLAVA_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
# Qwen2-style chat template, as the LLaVA-OneVision checkpoints ship it (the video first in the user turn).
LLAVA_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]
# Qwen3-VL's template shape (Qwen3.5 ships one like it): no system turn, media inside vision markers, and an
# instruct model's generation prompt (no reasoning block).
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def prompts() -> dict[str, str]:
    """The text `dytok eval` asks each kind of question with (lmms-eval's VideoMME prompt)."""
    return {
        kind: prompt(Item(kind, "", question, options, "A"))
        for kind, (question, options) in tasks.QUESTIONS.items()
    }


def _texts() -> list[str]:
    """Every text the model reads besides the video: the prompts, the chat roles, the answers, and the
    "<0.25 seconds>" timestamps Qwen's processor writes."""
    return [*prompts().values(), "user assistant", *LETTERS, "<0.25 seconds> 0123456789"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every piece of the prompts: no unknown tokens."""
    split = pre_tokenizers.Whitespace()
    pieces = dict.fromkeys(piece for text in _texts() for piece, _ in split.pre_tokenize_str(text))
    vocab = {token: i for i, token in enumerate(["[UNK]", *LLAVA_SPECIAL, *pieces])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = split
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=LLAVA_SPECIAL,
    )
    tokenizer.chat_template = LLAVA_TEMPLATE
    return tokenizer


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE whose merges spell every piece of the prompts (with the space before it, as the
    byte-level pre-tokenizer cuts them) as one token; digits stay single bytes."""
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    letters = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*QWEN_SPECIAL, *letters])}
    merges = []
    pieces = dict.fromkeys(piece for text in _texts() for piece, _ in split.pre_tokenize_str(text))
    for piece in pieces:
        spelled = piece[0]
        for letter in piece[1:]:
            if spelled + letter not in vocab:
                merges.append((spelled, letter))
                vocab[spelled + letter] = len(vocab)
            spelled += letter
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = split
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>", additional_special_tokens=QWEN_SPECIAL
    )
    tokenizer.chat_template = QWEN_TEMPLATE
    return tokenizer


# --- the two families ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What a family's small model is made of."""

    text_layers: int
    hidden: int
    heads: int
    kv_heads: int
    vision_layers: int
    vision_hidden: int
    vision_heads: int
    patch: int


SHAPES = {
    "llava-ov": Shape(text_layers=4, hidden=128, heads=4, kv_heads=2, vision_layers=3, vision_hidden=64, vision_heads=4, patch=8),
    "qwen3.5": Shape(text_layers=4, hidden=128, heads=4, kv_heads=2, vision_layers=3, vision_hidden=64, vision_heads=4, patch=8),
}


# The checkpoints' pattern is three Gated DeltaNet layers then one full-attention layer. With only one or two
# full-attention layers the answer reached the video too slowly to learn in the time (measured here, colour
# questions alone on easy targets: eight layers, 3 + 1 twice, at chance after 200 steps and 0.5 after 600 of
# the full curriculum; four, linear and full alternating, at chance after 160 steps; four with one linear
# layer, this pattern, 0.71 after 180 steps; four full-attention ones 0.53 after 200, with the merger's output
# scaled down fourfold, which made this pattern worse, 0.47). One linear layer still makes the
# decoder a hybrid for dytok: the priors read full-attention layers (2 and 3; 0), and `dytok-fastv` prunes at 0 with the
# linear layer after it.
QWEN_LAYERS = ("full_attention", "linear_attention", "full_attention", "full_attention")


def init_range(width: int) -> float:
    """The initial weights' standard deviation: 1/sqrt(width), so a layer's maps neither shrink nor grow
    what passes through them. The checkpoints' 0.02 is that for widths near 2500; at a width of 128 it
    shrinks every attention and MLP output about fivefold, and the video then reaches the answer so
    faintly that training stalls at guessing (measured here: no better than chance after 100 steps)."""
    return round(width**-0.5, 4)


def decoder_config(shape: Shape, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """What both families' text decoders take alike: the tokenizer's vocabulary, the shape's widths, layers
    and heads, and weights drawn at `init_range`."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": shape.hidden,
        "intermediate_size": shape.hidden * 3,
        "num_hidden_layers": shape.text_layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": 4096,
        "initializer_range": init_range(shape.hidden),
    }


def build_llava_onevision(path: Path, shape: Shape, seed: int) -> None:
    tokenizer = word_tokenizer()
    side = tasks.SIZE
    config = LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", **decoder_config(shape, tokenizer), "tie_word_embeddings": False},
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": shape.vision_hidden,
            "intermediate_size": shape.vision_hidden * 3,
            "num_hidden_layers": shape.vision_layers,
            "num_attention_heads": shape.vision_heads,
            "image_size": side,
            "patch_size": shape.patch,
            "vision_use_head": False,
            "initializer_range": init_range(shape.vision_hidden),
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[[side, side]],
    )
    _save_initial(path, LlavaOnevisionForConditionalGeneration, config, tokenizer, seed)
    size = {"height": side, "width": side}
    LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[side, side]]),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(side // shape.patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_TEMPLATE,
    ).save_pretrained(path)


def build_qwen3_5(path: Path, shape: Shape, seed: int) -> None:
    tokenizer = byte_tokenizer()
    head_dim = shape.hidden // shape.heads
    rotary = head_dim // 2  # Qwen3.5 rotates part of each head (a quarter in the checkpoints)
    half = rotary // 2
    spatial = half * 20 // 64  # interleaved M-RoPE's (t, h, w) shares, in Qwen3-VL's 24:20:20 proportion
    config = Qwen3_5Config(
        text_config={
            **decoder_config(shape, tokenizer),
            "head_dim": head_dim,
            "rope_parameters": {
                "rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True,
                "mrope_section": [half - 2 * spatial, spatial, spatial], "partial_rotary_factor": rotary / head_dim,
            },
            "pad_token_id": tokenizer.pad_token_id,
            "layer_types": list(QWEN_LAYERS),
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            "linear_key_head_dim": 32,
            "linear_value_head_dim": 32,
            "linear_conv_kernel_dim": 4,
        },
        vision_config={
            "depth": shape.vision_layers,
            "hidden_size": shape.vision_hidden,
            "intermediate_size": shape.vision_hidden * 3,
            "num_heads": shape.vision_heads,
            "patch_size": shape.patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": shape.hidden,
            "num_position_embeddings": (tasks.SIZE // shape.patch) ** 2,  # the frames' own patch grid
            "initializer_range": init_range(shape.vision_hidden),
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    _save_initial(path, Qwen3_5ForConditionalGeneration, config, tokenizer, seed)
    # Frames keep their 48x48 (a multiple of patch x merge): 3x3 merged tokens per temporal patch of 2 frames.
    pixels = tasks.SIZE * tasks.SIZE
    size = {"shortest_edge": pixels, "longest_edge": pixels * tasks.FRAMES}
    shared = dict(size=size, patch_size=shape.patch, temporal_patch_size=2, merge_size=2)
    Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**shared),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**shared, cap_pixels_per_frame=True),
        chat_template=QWEN_TEMPLATE,
    ).save_pretrained(path)


BUILDERS = {"llava-ov": build_llava_onevision, "qwen3.5": build_qwen3_5}


def _save_initial(path: Path, model_class: type, config: Any, tokenizer: PreTrainedTokenizerFast, seed: int) -> None:
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)


# --- inputs, as dytok builds them -----------------------------------------------------------------------


def decoded(video: tasks.Video, scratch: Path) -> np.ndarray:
    """The frames dytok's reader gives for `video` once written as the split's mp4s are: (F, H, W, 3)."""
    path = scratch / "video.mp4"
    tasks.write_mp4(path, video.frames)
    return read_video(path, num_frames=tasks.FRAMES).images


class Family:
    """The model behind dytok's adapter, and how a batch of videos becomes its inputs with gradients."""

    def __init__(self, adapter: Any, scratch: Path) -> None:
        self.adapter = adapter
        self.model = adapter.model
        tokenizer = adapter.tokenizer
        self.letters = [tokenizer.convert_tokens_to_ids(letter) for letter in LETTERS]
        assert all(len(tokenizer(letter, add_special_tokens=False)["input_ids"]) == 1 for letter in LETTERS)
        self.end = tokenizer.eos_token_id
        # A video's encoding as dytok makes it, for what the prompt needs of it (grid, timestamps): every video
        # of the task has the same frame count, size and times, so one serves all.
        sample = tasks.make_video(tasks.video_rng("train", -1 % 2**31))
        frames = read_video(self._write(sample, scratch), num_frames=tasks.FRAMES)
        self.template = adapter.encode(frames)
        self.timestamps = frames.timestamps
        self.prompts = {kind: self._prompt(text) for kind, text in prompts().items()}

    @staticmethod
    def _write(video: tasks.Video, scratch: Path) -> Path:
        path = scratch / "template.mp4"
        tasks.write_mp4(path, video.frames)
        return path

    def _prompt(self, text: str) -> dict[str, torch.Tensor]:
        """The prompt ids (and positions) dytok's adapter builds for `text` with every visual token,
        followed by an answer's two tokens."""
        template = self.template
        tokens = template.all_tokens()
        inputs = self.adapter.build_inputs(text, tokens, None, video=template)
        ids = inputs["input_ids"][0]
        prompt = {"input_ids": torch.cat([ids, ids.new_zeros(2)])}
        if "position_ids" in inputs:
            positions = inputs["position_ids"][:, 0]  # (3, S)
            after = positions.max() + 1 + torch.arange(2)
            prompt["position_ids"] = torch.cat([positions, after.expand(3, 2)], dim=1)
        return prompt

    def features(self, images: list[np.ndarray]) -> Any:
        raise NotImplementedError

    def encoder_output(self, features: Any) -> Any:
        raise NotImplementedError

    def _targets(self, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The answer's two tokens (batch, 2) for option indices `answers`, and their letters' ids."""
        letters = torch.tensor(self.letters)[answers]
        return torch.stack([letters, torch.full_like(letters, self.end)], dim=1), letters

    def _scored(self, logits: torch.Tensor, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on the letter and the end token from the scores that predict them (batch, 2,
        vocab), and whether greedy decoding gives the letter."""
        targets, letters = self._targets(answers)
        scores = logits.float()
        loss = torch.nn.functional.cross_entropy(scores.flatten(0, 1), targets.flatten())
        return loss, scores[:, 0].argmax(-1) == letters

    def loss(self, features: Any, kind: str, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own forward over the whole prompt and answer of question `kind` for a batch of
        videos: the loss on the answer, and whether greedy decoding gives its letter."""
        batch = answers.shape[0]
        prompt = self.prompts[kind]
        ids = prompt["input_ids"][None].repeat(batch, 1)
        ids[:, -2:] = self._targets(answers)[0]
        extra = {}
        if "position_ids" in prompt:
            extra["position_ids"] = prompt["position_ids"][:, None].repeat(1, batch, 1)
        output = self.model(
            input_ids=ids, attention_mask=torch.ones_like(ids), mm_encoder_outputs={"video": self.encoder_output(features)},
            logits_to_keep=3, use_cache=False, **extra,
        )
        return self._scored(output.logits[:, :2], answers)

    def whole_losses(self, features: Any, made: list[tasks.Video]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """`loss` for every kind of question about the videos `made`, each prompt run whole."""
        return {kind: self.loss(features, kind, torch.tensor([v.answer(kind) for v in made])) for kind in tasks.KINDS}

    def losses(self, features: Any, made: list[tasks.Video]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """`whole_losses`, with the prompt's head (up to the video's last token, the same for every question)
        run once, as dytok's prefix reuse runs it: under causal attention nothing in it depends on the
        question, so the four questions go on from a copy of its cache each. Exact (`check_shared_head`
        compares it with `whole_losses` when training starts) and about half the cost."""
        batch = len(made)
        ids = next(iter(self.prompts.values()))["input_ids"]
        head = int((ids == self.adapter.video_token_id()).nonzero().max()) + 1
        head_ids = ids[:head][None].repeat(batch, 1)
        first = self.prompts[tasks.KINDS[0]]
        extra = {"position_ids": first["position_ids"][:, None, :head].repeat(1, batch, 1)} if "position_ids" in first else {}
        output = self.model(
            input_ids=head_ids, mm_encoder_outputs={"video": self.encoder_output(features)}, logits_to_keep=1,
            use_cache=True, **extra,
        )
        results = {}
        for kind in tasks.KINDS:
            answers = torch.tensor([video.answer(kind) for video in made])
            prompt = self.prompts[kind]
            assert torch.equal(prompt["input_ids"][:head], ids[:head])
            tail = prompt["input_ids"][head:][None].repeat(batch, 1)
            tail[:, -2:] = self._targets(answers)[0]
            if "position_ids" in prompt:
                positions = prompt["position_ids"][:, None, head:].repeat(1, batch, 1)
            else:
                positions = torch.arange(head, prompt["input_ids"].shape[0])[None].repeat(batch, 1)
            out = self.model(
                input_ids=tail, cache=branch(output.cache, self.model.config.text_config), position_ids=positions,
                logits_to_keep=3, use_cache=True,
            )
            results[kind] = self._scored(out.logits[:, :2], answers)
        return results


def branch(cache: DynamicCache, config: Any) -> DynamicCache:
    """A new cache holding what `cache` holds, for one question to go on from, leaving `cache` and its
    autograd history as they are: attention layers share its keys and values (a layer grows by
    concatenation, a new tensor); linear-attention layers get clones of its states, and replace them
    when they update instead of copying into them in place, so the states that the update follows stay
    as backward needs them."""
    copy = DynamicCache(config=config)
    for source, layer in zip(cache.layers, copy.layers):
        if hasattr(source, "recurrent_states"):
            layer.lazy_initialization(conv_states=source.conv_states[0], conv_kernel_size=source.conv_kernel_size[0])
            layer.lazy_initialization(recurrent_states=source.recurrent_states[0])
            layer.conv_states[0] = source.conv_states[0].clone()
            layer.recurrent_states[0] = source.recurrent_states[0].clone()
            layer.has_previous_state[0] = True
            layer.cumulative_length_linear.copy_(source.cumulative_length_linear)
            layer.update_conv_state = _replacing_conv_update(layer)
            layer.update_recurrent_state = _replacing_recurrent_update(layer)
        else:
            layer.update(source.keys, source.values)
    return copy


def _replacing_conv_update(layer: Any) -> Any:
    def update(conv_states: torch.Tensor, state_idx: int = 0, **kwargs: Any) -> torch.Tensor:
        full = torch.cat([layer.conv_states[state_idx], conv_states], dim=-1)
        layer.cumulative_length_linear.add_(conv_states.shape[-1])
        layer.conv_states[state_idx] = full[..., -layer.conv_kernel_size[state_idx]:]
        return full

    return update


def _replacing_recurrent_update(layer: Any) -> Any:
    def update(recurrent_states: torch.Tensor, state_idx: int = 0, **kwargs: Any) -> torch.Tensor:
        layer.recurrent_states[state_idx] = recurrent_states
        return recurrent_states

    return update


class LlavaFamily(Family):
    def features(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = self.adapter.processor.video_processor(videos=images, return_tensors="pt")["pixel_values_videos"]
        return self.model.model.get_video_features(pixel_values_videos=pixels).pooler_output  # (B, F*T + 1, D)

    def encoder_output(self, features: torch.Tensor) -> Any:
        return BaseModelOutputWithPooling(pooler_output=features)


class QwenFamily(Family):
    def features(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        patches = [self.adapter.patches(frames, None) for frames in images]
        pixels = torch.cat([p["pixel_values_videos"] for p in patches])
        grid = torch.cat([p["video_grid_thw"] for p in patches])
        assert all(tuple(p["video_grid_thw"][0].tolist()) == self.template.grid for p in patches)
        return list(self.model.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid).pooler_output)

    def encoder_output(self, features: list[torch.Tensor]) -> Any:
        return BaseModelOutputWithPooling(pooler_output=features)


FAMILIES = {"llava-ov": LlavaFamily, "qwen3.5": QwenFamily}


# --- training --------------------------------------------------------------------------------------------


EASY = tasks.Difficulty(size=(16, 20), frames=(6, 8))  # a large target in most of a quarter of the video
# Per family, the shares of training the curriculum keeps to `EASY` and after which the target is as hard
# to see as in the test split. Qwen3.5 took about 250 steps to begin answering colour on large targets,
# and a curriculum that made them harder from the start (as LLaVA-OneVision's does) lost what it had
# begun: colour 0.5 of a step's videos at step 350, 0.2 at 500 (measured here).
CURRICULUM = {"llava-ov": (0.0, 0.6), "qwen3.5": (0.3, 0.8)}
SPREAD = 0.3  # how much easier than the current level a video may be
STEPS = {"llava-ov": 1200, "qwen3.5": 1500}


def curriculum(progress: float, rng: random.Random, hold: float, until: float) -> tasks.Difficulty:
    """How hard one training video's target is: `EASY` for the first `hold` of training, then between
    it and the test split's, harder as training goes on, each video drawn from the last `SPREAD` of the
    way so far (easier ones keep coming for a while); the test split's from `until` of training on.
    Early on, a target that covers much of the video shows in what attention spread evenly over it
    reads, so the answer can be learned before the attention that finds one small target is."""
    level = min(1.0, max(0.0, progress - hold) / (until - hold))
    share = 1.0 if level >= 1 else max(0.0, level - SPREAD * rng.random())

    def between(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return tuple(round(x + (y - x) * share) for x, y in zip(a, b))

    return tasks.Difficulty(size=between(EASY.size, tasks.TEST.size), frames=between(EASY.frames, tasks.TEST.frames))


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def validation_set(count: int, scratch: Path) -> tuple[list[np.ndarray], list[tasks.Video]]:
    made = [tasks.make_video(tasks.video_rng("val", i)) for i in range(count)]
    return [decoded(video, scratch) for video in made], made


def evaluate(family: Family, images: list[np.ndarray], made: list[tasks.Video], batch: int) -> dict[str, float]:
    """Greedy first-token accuracy per kind of question at ratio 1 (every visual token)."""
    family.model.eval()
    right = {kind: 0 for kind in tasks.KINDS}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            features = family.features(images[start : start + batch])
            for kind, (_, correct) in family.losses(features, made[start : start + batch]).items():
                right[kind] += int(correct.sum())
    family.model.train()
    return {kind: right[kind] / len(images) for kind in tasks.KINDS}


def check_shared_head(family: Family, images: list[np.ndarray], made: list[tasks.Video]) -> None:
    """Running the prompt's head once for the four questions must give the losses of the whole prompts."""
    with torch.no_grad():
        features = family.features(images)
        shared, whole = family.losses(features, made), family.whole_losses(features, made)
    for kind in tasks.KINDS:
        # float32 noise over a few hundred tokens, measured about 1e-6; a wrong position or cache is far off.
        difference = abs(float(shared[kind][0]) - float(whole[kind][0]))
        assert difference < 1e-4, f"{kind}: the shared head changes the loss by {difference}"


def save(model: Any, args: argparse.Namespace, validation: list[dict], started: float) -> None:
    """The weights (safetensors), and beside them `training.json`: the command's settings, what training
    took on this machine and how it went on the validation split."""
    model.eval()
    model.save_pretrained(args.output)
    model.train()
    record = {
        "family": args.family,
        "settings": {key: value for key, value in vars(args).items() if key not in ("family", "output")},
        "shape": SHAPES[args.family].__dict__,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        # The process's CPU time says what the work costs whatever else the machine was doing.
        "cpu_minutes": round(time.process_time() / 60, 1),
        "load_average": os.getloadavg(),
        "validation": validation,
    }
    (args.output / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=SHAPES)
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the family's, STEPS)")
    parser.add_argument("--batch", type=int, default=8, help="videos a step, each asked all four questions")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the family's, LEARNING_RATES)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val", type=int, default=64, help="validation videos (each asked all four questions)")
    parser.add_argument("--val-every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (the schedule still ends)")
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = LEARNING_RATES[args.family]
    if args.steps is None:
        args.steps = STEPS[args.family]

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[args.family]
    BUILDERS[args.family](args.output, shape, args.seed)
    adapter = load_model(str(args.output), device=Device.cpu, dtype=DType.float32, trust_remote_code=False)
    model = adapter.model.train()
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        family = FAMILIES[args.family](adapter, scratch)
        print(f"{args.family}: {parameters / 1e6:.2f} M parameters; prompt tokens "
              f"{ {kind: int(p['input_ids'].shape[0]) for kind, p in family.prompts.items()} }", file=sys.stderr)
        val_images, val_made = validation_set(args.val, scratch)
        check_shared_head(family, val_images[:2], val_made[:2])
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                      lr=args.lr, betas=(0.9, 0.98))
        started = time.perf_counter()
        index = 0
        draws = random.Random(args.seed)
        history = []
        validation: list[dict] = []
        for step in range(args.steps):
            made = []
            for _ in range(args.batch):
                difficulty = curriculum(step / args.steps, draws, *CURRICULUM[args.family])
                made.append(tasks.make_video(tasks.video_rng("train", index), difficulty))
                index += 1
            images = [decoded(video, scratch) for video in made]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
            features = family.features(images)
            results = family.losses(features, made)
            total = sum(loss for loss, _ in results.values())
            marks = {kind: float(correct.float().mean()) for kind, (_, correct) in results.items()}
            optimizer.zero_grad(set_to_none=True)
            (total / len(tasks.KINDS)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            history.append((float(total.detach()) / len(tasks.KINDS), marks))
            if (step + 1) % 25 == 0:
                recent = history[-25:]
                mean_loss = sum(h[0] for h in recent) / len(recent)
                accuracy = {k: round(sum(h[1][k] for h in recent) / len(recent), 2) for k in tasks.KINDS}
                elapsed = time.perf_counter() - started
                print(f"step {step + 1} loss {mean_loss:.3f} train {accuracy} size {difficulty.size} "
                      f"frames {difficulty.frames} {elapsed / 60:.1f} min", file=sys.stderr, flush=True)
            if (step + 1) % args.val_every == 0 or step + 1 == args.steps:
                accuracy = evaluate(family, val_images, val_made, args.batch)
                validation.append({"step": step + 1, "minutes": round((time.perf_counter() - started) / 60, 1),
                                   "accuracy": accuracy})
                print(f"val at step {step + 1}: {accuracy}", file=sys.stderr, flush=True)
                # Saved at every validation, so a run stopped early still leaves its latest model.
                save(model, args, validation, started)
            if args.minutes is not None and time.perf_counter() - started > 60 * args.minutes:
                print(f"stopped at step {step + 1}: --minutes {args.minutes}", file=sys.stderr)
                if validation[-1]["step"] != step + 1:
                    validation.append({"step": step + 1, "minutes": round((time.perf_counter() - started) / 60, 1),
                                       "accuracy": evaluate(family, val_images, val_made, args.batch)})
                    save(model, args, validation, started)
                break
        print(json.dumps(validation[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
