"""Tiny randomly initialised video LLMs of the real `transformers` classes, built offline.

They are saved with `save_pretrained` and loaded back through the same `from_pretrained` path a
user's hub model takes, so every test exercises the real loading, processing and generation code.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
)
from transformers import (
    Gemma4AudioFeatureExtractor,
    Gemma4Config,
    Gemma4ForConditionalGeneration,
    Gemma4ImageProcessor,
    Gemma4Processor,
    Gemma4VideoProcessor,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
WORDS = (
    "user assistant system what happens in the video is there a person dog cat jump run red blue green "
    "when does how many people describe this frame scene moves left right up down yes no one two three "
    "four five car tree sky water ball man woman child walks sits stands opens closes door window light "
    "dark day night fast slow big small"
).split()
INIT_RANGE = 0.3
PUNCTUATION = list("?.,!:'\"-")

# Qwen2-style chat template, as the LLaVA-OneVision checkpoints ship (media placeholder first).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(
    special_tokens: list[str] = SPECIAL_TOKENS, chat_template: str = CHAT_TEMPLATE, extra_words: tuple[str, ...] = (),
    **roles: str | dict[str, str],
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer; `extra_words` extend the vocabulary (a family's own text, such as
    Qwen3-VL's "<0.5 seconds>" timestamps). Digits are single tokens, so any number tokenizes. `roles` name
    the special tokens' roles where a family's differ from Qwen's (`eos_token`, `extra_special_tokens`, ...)."""
    vocab = {token: i for i, token in enumerate(["[UNK]", *special_tokens, *WORDS, *PUNCTUATION, *extra_words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    if extra_words:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Whitespace()]
        )
    else:
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        additional_special_tokens=special_tokens,
        **{"unk_token": "[UNK]", "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", **roles},
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_byte_level_tokenizer(
    special_tokens: list[str], chat_template: str, extra_words: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer whose merges spell every word of the vocabulary, with or without the
    space before it, as one token. For families whose loader rebuilds the tokenizer from its vocabulary
    and merges as a byte-level BPE (Qwen3.5's), which turns a word-level vocabulary into single letters."""
    letters = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*special_tokens, *letters])}
    merges = []
    for word in dict.fromkeys(word for word in (*WORDS, *extra_words) if len(word) > 1):
        spelled = word[0]
        for letter in word[1:]:
            if spelled + letter not in vocab:
                merges.append((spelled, letter))
                vocab[spelled + letter] = len(vocab)
            spelled += letter
        merges.append(("Ġ", word))  # "Ġ" is the byte-level space
        vocab["Ġ" + word] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>", additional_special_tokens=special_tokens
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _save_model(path: Path, model_class: type, config, tokenizer: PreTrainedTokenizerFast, seed: int) -> None:
    """Initialise `model_class(config)` from `seed` and save it, generating up to the tokenizer's end token."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)


def build_llava_onevision(
    path: Path,
    *,
    seed: int = 0,
    text_layers: int = 4,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 4,
    vision_layers: int = 2,
) -> Path:
    """Save a tiny LLaVA-OneVision (SigLIP + Qwen2) with its processor to `path` and return it."""
    tokenizer = build_tokenizer()
    config = LlavaOnevisionConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
            # Wide initial weights make attention peaked and greedy answers depend on the video,
            # so a compressed run that went wrong shows up as a different answer.
            "initializer_range": INIT_RANGE,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
            "vision_use_head": False,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[[image_size, image_size]],
    )
    _save_model(path, LlavaOnevisionForConditionalGeneration, config, tokenizer, seed)

    size = {"height": image_size, "width": image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[image_size, image_size]]),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path


QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]

# Shaped like Qwen2.5-VL's own template: a default system turn, media wrapped in vision start/end markers.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nyou are a assistant<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen2_5_vl(
    path: Path,
    *,
    seed: int = 0,
    text_layers: int = 4,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    patch_size: int = 4,
    vision_depth: int = 4,
    fullatt_block_indexes: tuple[int, ...] = (1, 2),
    window_size: int = 16,
    max_pixels: int = 32 * 40,
) -> Path:
    """Save a tiny Qwen2.5-VL with its processor to `path` and return it.

    The clips' 64x48 frames are resized to 40x24 pixels (`max_pixels`): a 10x6 patch grid, merged
    2x2 into 5x3 = 15 tokens per temporal patch. The vision attention windows (`window_size`) hold
    2x2 merged tokens, so the tower really reorders patches into windows; the last block is a
    windowed one, so picking the last *full*-attention block matters.
    """
    tokenizer = build_tokenizer(QWEN_SPECIAL_TOKENS, QWEN_CHAT_TEMPLATE)
    head_dim = hidden // heads
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": 4096,
            # Wide initial weights make attention peaked and greedy answers depend on the video.
            "initializer_range": INIT_RANGE,
            # The rotary half-dimension is split between the temporal, height and width positions.
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(head_dim)},
            "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "patch_size": patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": window_size,
            "fullatt_block_indexes": list(fullatt_block_indexes),
            "out_hidden_size": hidden,
            "tokens_per_second": 2,
            "initializer_range": INIT_RANGE,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    _save_model(path, Qwen2_5_VLForConditionalGeneration, config, tokenizer, seed)

    size = {"shortest_edge": (patch_size * 2) ** 2, "longest_edge": max_pixels}
    shared = dict(size=size, patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**shared),
        tokenizer=tokenizer,
        # Frames capped per frame as qwen-vl-utils caps them, which dytok asks its processor for too.
        video_processor=Qwen2VLVideoProcessor(**shared, cap_pixels_per_frame=True),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path


def _mrope_section(head_dim: int) -> list[int]:
    """(t, h, w) shares of the head_dim // 2 rotary frequencies, in Qwen2.5-VL's 2:3:3 proportion."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


# Shaped like Qwen3-VL's own template: no default system turn, media wrapped in vision start/end markers
# (its processor then writes each temporal patch's "<t seconds>" and markers inside them).
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# How the published templates of each kind end the generation prompt, by kind (written here, not copied):
# "direct" (Qwen3.5 0.8B and 2B) an empty reasoning block unless `enable_thinking` is true; "reasons" (Qwen3.5
# 4B and larger) an open one unless it is false; "always" (Qwen3-VL -Thinking, no switch) an open one.
OPEN_BLOCK, EMPTY_BLOCK = "<think>\n", "<think>\n\n</think>\n\n"
THINKING_TAILS = {
    "direct": f"{{% if enable_thinking | default(false) %}}{OPEN_BLOCK}{{% else %}}{EMPTY_BLOCK}{{% endif %}}",
    "reasons": f"{{% if enable_thinking | default(true) %}}{OPEN_BLOCK}{{% else %}}{EMPTY_BLOCK}{{% endif %}}",
    "always": OPEN_BLOCK,
}
THINKING_MARKERS = ["<think>", "</think>"]


def qwen3_chat_template(thinking: str | None) -> str:
    """Qwen3-VL's template shape, its generation prompt ended as the published templates of kind `thinking`
    (a key of `THINKING_TAILS`) end it; None: as the -Instruct ones, without reasoning."""
    if thinking is None:
        return QWEN3_VL_CHAT_TEMPLATE
    generation_prompt = "<|im_start|>assistant\n{% endif %}"
    assert QWEN3_VL_CHAT_TEMPLATE.endswith(generation_prompt)
    return QWEN3_VL_CHAT_TEMPLATE.removesuffix("{% endif %}") + THINKING_TAILS[thinking] + "{% endif %}"
# What Qwen3-VL's timestamps need beyond the shared words: "<12.5 seconds>" is "<", digits, ".", "seconds", ">".
TIMESTAMP_WORDS = ("seconds", "<", ">", *"0123456789")


def _build_qwen3_style(
    path: Path,
    config_class: type,
    model_class: type,
    *,
    seed: int,
    text_layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    rotary: int,
    patch_size: int,
    vision_depth: int,
    text_extra: dict,
    vision_extra: dict,
    tokenizer_builder: Callable[..., PreTrainedTokenizerFast] = build_tokenizer,
    thinking: str | None = None,
) -> Path:
    """Save a tiny model of Qwen3-VL's shape (its processors, prompts and vision tower, interleaved M-RoPE
    over the first `rotary` dimensions of each head) with a family's own `text_extra` / `vision_extra`
    config entries, and a chat template of the published kind `thinking` (see `qwen3_chat_template`), and
    return `path`."""
    template = qwen3_chat_template(thinking)
    tokenizer = tokenizer_builder(QWEN_SPECIAL_TOKENS, template, TIMESTAMP_WORDS)
    if thinking is not None:
        # As in the published tokenizers: single tokens that are not special, so decoding keeps them.
        tokenizer.add_tokens(THINKING_MARKERS)
    head_dim = hidden // heads
    # Interleaved M-RoPE over the rotary // 2 frequencies, in Qwen3-VL's 24:20:20 proportion.
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True,
            "mrope_section": _interleaved_mrope_section(rotary)}
    if rotary != head_dim:
        rope["partial_rotary_factor"] = rotary / head_dim
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        # Wide initial weights make attention peaked and greedy answers depend on the video.
        "initializer_range": INIT_RANGE,
        "rope_parameters": rope,
        "pad_token_id": tokenizer.pad_token_id,
        **text_extra,
    }
    vision = {
        "depth": vision_depth,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 4,
        "patch_size": patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden,
        "num_position_embeddings": 64,  # an 8x8 learned grid, resampled to each video's grid
        "initializer_range": INIT_RANGE,
        **vision_extra,
    }
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    _save_model(path, model_class, config, tokenizer, seed)

    # The clips' 64x48 frames keep their size (a multiple of patch * merge = 16): a 6x8 patch grid,
    # merged 2x2 into 3x4 = 12 tokens per temporal patch, whatever the frame count.
    size = {"shortest_edge": 16 * 16, "longest_edge": 64 * 48 * 64}
    shared = dict(size=size, patch_size=patch_size, temporal_patch_size=2, merge_size=2)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**shared),
        tokenizer=tokenizer,
        # Frames capped per frame as qwen-vl-utils caps them, which dytok asks its processor for too.
        video_processor=Qwen3VLVideoProcessor(**shared, cap_pixels_per_frame=True),
        chat_template=template,
    )
    processor.save_pretrained(path)
    return path


def build_qwen3_vl(
    path: Path,
    *,
    moe: bool = False,
    seed: int = 0,
    text_layers: int = 4,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    patch_size: int = 8,
    vision_depth: int = 3,
    deepstack_layers: tuple[int, ...] = (0, 1),
    thinking: str | None = None,
) -> Path:
    """Save a tiny Qwen3-VL, dense or MoE (4 experts, 2 per token, in every decoder layer), with its
    processor to `path` and return it.

    Its vision tower hands DeepStack features from blocks `deepstack_layers` to the decoder, which adds
    them to the visual positions after its first len(deepstack_layers) layers. Its chat template is an
    -Instruct one, or with `thinking="always"` a -Thinking one."""
    experts = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden, decoder_sparse_step=1)
    classes = (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration) if moe else (
        Qwen3VLConfig, Qwen3VLForConditionalGeneration)
    return _build_qwen3_style(
        path, *classes, seed=seed, text_layers=text_layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
        rotary=hidden // heads, patch_size=patch_size, vision_depth=vision_depth, text_extra=experts if moe else {},
        vision_extra={"deepstack_visual_indexes": list(deepstack_layers)}, thinking=thinking,
    )


def _interleaved_mrope_section(head_dim: int) -> list[int]:
    """(t, h, w) shares of the head_dim // 2 rotary frequencies, in Qwen3-VL's 24:20:20 proportion."""
    half = head_dim // 2
    spatial = half * 20 // 64
    return [half - 2 * spatial, spatial, spatial]


def _qwen3_5_layer_types(layers: int) -> list[str]:
    """Qwen3.5's pattern, full attention every fourth layer (3, 7, ...), the others linear attention; the
    last layer has full attention too when the pattern would give it none (a 3-layer assistant)."""
    types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    if "full_attention" not in types:
        types[-1] = "full_attention"
    return types


def build_qwen3_5(
    path: Path,
    *,
    moe: bool = False,
    seed: int = 0,
    text_layers: int = 8,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    patch_size: int = 8,
    vision_depth: int = 2,
    thinking: str | None = None,
) -> Path:
    """Save a tiny Qwen3.5, dense or MoE (4 experts, 2 per token, and a shared expert), with Qwen3-VL's
    processors to `path` and return it. Its hybrid decoder has full attention at layers 3 and 7 and
    Gated DeltaNet linear attention in the others; its vision tower has no DeepStack. Its chat template has
    no thinking mode, or the published ones' (`thinking`: "direct" as in 0.8B and 2B, "reasons" as in 4B
    and larger)."""
    text = {
        "layer_types": _qwen3_5_layer_types(text_layers),
        # Gated DeltaNet: 2 query/key heads shared by 4 value heads, as the checkpoints share 16 among 32.
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "linear_conv_kernel_dim": 4,
    }
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden, shared_expert_intermediate_size=hidden)
    classes = (Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration) if moe else (
        Qwen3_5Config, Qwen3_5ForConditionalGeneration)
    # Qwen3.5 rotates a part of each head (a quarter in the checkpoints; half here).
    return _build_qwen3_style(
        path, *classes, seed=seed, text_layers=text_layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
        rotary=hidden // heads // 2, patch_size=patch_size, vision_depth=vision_depth, text_extra=text, vision_extra={},
        tokenizer_builder=build_byte_level_tokenizer,  # `transformers` loads Qwen3.5's as a byte-level BPE
        thinking=thinking,
    )


INTERNVL_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
# Shaped like the InternVL -HF checkpoints' template: no default system turn, an image as `<IMG_CONTEXT>` and a video
# as `<video>`, each on a line of its own (the processor then writes "Frame1: <img>...</img>" per frame for it).
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<video>\n{% elif part['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_internvl(
    path: Path,
    *,
    seed: int = 0,
    text_layers: int = 4,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 4,
    vision_layers: int = 2,
) -> Path:
    """Save a tiny InternVL (InternViT, pixel shuffle and projector + Qwen3, as InternVL3.5) with its processor to
    `path` and return it. A frame is one 32x32 tile: 8x8 patches shuffled into 4x4 = 16 tokens."""
    # The processor finds its markers by name on the tokenizer, as the checkpoints' tokenizer_config names them.
    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    words = build_tokenizer(INTERNVL_SPECIAL_TOKENS, INTERNVL_CHAT_TEMPLATE, ("Frame", *"0123456789"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words.backend_tokenizer, unk_token="[UNK]", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=INTERNVL_SPECIAL_TOKENS, extra_special_tokens=named,
    )
    tokenizer.chat_template = INTERNVL_CHAT_TEMPLATE
    config = InternVLConfig(
        text_config={
            "model_type": "qwen3",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": hidden // heads,
            "max_position_embeddings": 4096,
            # Wide initial weights make attention peaked and greedy answers depend on the video.
            "initializer_range": INIT_RANGE,
            "tie_word_embeddings": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
            "attention_bias": True,
            "initializer_range": INIT_RANGE,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=(image_size // patch_size // 2) ** 2,
        tie_word_embeddings=False,
    )
    _save_model(path, InternVLForConditionalGeneration, config, tokenizer, seed)

    # The image processor as the checkpoints ship it. Their video processor config says 384 px and CLIP's
    # normalisation, which dytok does not follow (models/internvl.py); this one agrees with the image processor,
    # so the model's own processor stays an oracle for the frames the adapter makes (tests/test_internvl.py
    # gives it the checkpoints' config back).
    published = dict(size={"height": image_size, "width": image_size}, image_mean=IMAGENET_DEFAULT_MEAN,
                     image_std=IMAGENET_DEFAULT_STD)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(**published),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(**published),
        image_seq_length=config.image_seq_length,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path


# Every supported family's tiny-model builder, by `config.model_type`: the contract suite
# (test_contract.py) runs every oracle over each. Adding a family adds one entry here.
SMOLVLM_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
    "<image>", "<video>",
]
# Shaped like SmolVLM2's published template, which has no video entry: `transformers`' SmolVLM processor renders a
# conversation with a video through its own default template instead (the same turns, "<video>" for the video).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}<image>{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# What the processor writes around a video beyond the shared words: "You are provided the following series of
# six frames from a 0:00:03 [H:MM:SS] video." and "Frame from 00:01:" before each frame.
SMOLVLM_WORDS = (
    "You", "are", "provided", "following", "series", "of", "frames", "from", "Frame", "H", "MM", "SS", "User",
    "Assistant", "[", "]", *"0123456789", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "twenty",
)


def build_smolvlm(
    path: Path,
    *,
    seed: int = 0,
    text_layers: int = 4,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 4,
    scale_factor: int = 2,
    vision_layers: int = 2,
) -> Path:
    """Save a tiny SmolVLM2 (SigLIP-style tower, pixel shuffle, a Llama decoder) with its processor to `path` and
    return it. Every frame is squashed to the tower's 32x32 square: 8x8 patches, shuffled 2x2 into 16 tokens."""
    tokenizer = build_tokenizer(SMOLVLM_SPECIAL_TOKENS, SMOLVLM_CHAT_TEMPLATE, SMOLVLM_WORDS)
    tokenizer.eos_token = "<end_of_utterance>"  # as the published tokenizers end a turn
    config = SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": hidden // heads,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
            # Wide initial weights make attention peaked and greedy answers depend on the video.
            "initializer_range": INIT_RANGE,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "model_type": "smolvlm_vision",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
            "initializer_range": INIT_RANGE,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        tie_word_embeddings=False,
    )
    _save_model(path, SmolVLMForConditionalGeneration, config, tokenizer, seed)

    # As the published preprocessor configs: images up to 4 tiles a side, video frames sampled at 1 fps up to 64 (the
    # installed video processor takes `size` for video too, then squashes each frame to the tower's square).
    shared = dict(size={"longest_edge": 4 * image_size}, max_image_size={"longest_edge": image_size},
                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    sampling = {"fps": 1, "max_frames": 64, "video_size": {"longest_edge": image_size}}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**shared),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(**shared, video_sampling=sampling),
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path


GEMMA4_SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<|turn>", "<turn|>", "<|image>", "<image|>", "<|image|>", "<|video|>", "<|audio>",
    "<audio|>", "<|audio|>", "<|think|>", "<|channel>", "<channel|>",
]
# The roles the published tokenizer gives its tokens; the processor reads the media ones by name.
GEMMA4_ROLES = dict(
    bos_token="<bos>", eos_token="<turn|>", pad_token="<pad>",
    extra_special_tokens={"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
                          "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>"},
)
# What Gemma 4's prompts need beyond the shared words: its assistant's role, its reasoning block's name, and the
# frames' "00:01" timestamps.
GEMMA4_WORDS = ("model", "thought", *"0123456789")
# Shaped like the chat template of Gemma 4 E2B and E4B (written here): turns opened by "<|turn>" and the role
# ("model" for the assistant) and closed by "<turn|>", a video as one "<|video|>" right before its text, a system
# turn holding "<|think|>" when `enable_thinking` is true, and "<|turn>model\n" as the generation prompt.
GEMMA4_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if enable_thinking | default(false) %}<|turn>system\n<|think|>\n<turn|>\n{% endif %}"
    "{% for message in messages %}<|turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|image|>{% elif content['type'] == 'video' %}<|video|>"
    "{% elif content['type'] == 'audio' %}<|audio|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)


def gemma4_layer_types(layers: int) -> list[str]:
    """Sliding-window and global layers in turn, the last one global as in every Gemma 4 (a 3-layer assistant:
    sliding, global, global)."""
    types = ["full_attention" if i % 2 else "sliding_attention" for i in range(layers)]
    types[-1] = "full_attention"
    return types


def build_gemma4(
    path: Path,
    *,
    seed: int = 0,
    text_layers: int = 6,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    sliding_window: int = 64,
    patch_size: int = 4,
    vision_layers: int = 2,
    large: bool = False,
    audio: bool = False,
) -> Path:
    """Save a tiny Gemma 4 with its processor to `path` and return it: of the E2B/E4B kind, or with `large` of
    the 26B-A4B kind.

    Its decoder has what makes the family: sliding-window layers (a window of `sliding_window` tokens, far
    shorter than a prompt with video) between global ones, the last one global, and global layers with wider
    heads than the sliding ones. The E2B/E4B kind has per-layer embeddings, and its last third of layers reads
    the keys and values of the last earlier layer of the same kind (KV sharing: with 6 layers, 4 reads layer 2's
    and 5 reads layer 3's). The 26B-A4B kind has neither; it has a mixture of experts beside each layer's MLP (4,
    2 a token), global layers whose keys are their values, and frames whose tokens attend to each other both
    ways in the sliding layers. With `audio`, the E2B/E4B kind hears too: a 2-layer audio tower of the published
    shape's kind (its feature extractor's 128 mel bins, 40 ms a token). The clips' 64x48 frames are sized by the published video processor's budget of 70
    soft tokens: 72x56 pixels, 18x14 patches of `patch_size`, pooled 2x2 into 63 tokens a frame."""
    tokenizer = build_tokenizer(GEMMA4_SPECIAL_TOKENS, GEMMA4_CHAT_TEMPLATE, GEMMA4_WORDS, **GEMMA4_ROLES)
    # The roles' own list of special tokens replaced the one given: they are special again (none is new).
    tokenizer.add_special_tokens({"additional_special_tokens": GEMMA4_SPECIAL_TOKENS})
    token = tokenizer.convert_tokens_to_ids
    head_dim = hidden // heads
    edge_kind = {"num_kv_shared_layers": text_layers // 3, "hidden_size_per_layer_input": 8, "use_double_wide_mlp": True}
    large_kind = {
        "hidden_size_per_layer_input": 0, "enable_moe_block": True, "num_experts": 4, "top_k_experts": 2,
        "moe_intermediate_size": hidden // 2, "attention_k_eq_v": True, "num_global_key_value_heads": 1,
        "use_bidirectional_attention": "vision",
    }
    config = Gemma4Config(
        text_config={
            "vocab_size": len(tokenizer),
            "vocab_size_per_layer_input": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "global_head_dim": head_dim * 2,
            "layer_types": gemma4_layer_types(text_layers),
            "sliding_window": sliding_window,
            "final_logit_softcapping": 30.0,
            "max_position_embeddings": 4096,
            # The model's own default: its embeddings are scaled by sqrt(width) and every sublayer's output is
            # normalised, and at 0.3 every answer was one token repeated whatever the video (0.02: varied answers
            # that change with the frames).
            "initializer_range": 0.02,
            **(large_kind if large else edge_kind),
            "pad_token_id": token("<pad>"),
            "bos_token_id": token("<bos>"),
            "eos_token_id": token("<turn|>"),
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "head_dim": 8,
            "patch_size": patch_size,
            "pooling_kernel_size": 2,
            "position_embedding_size": 64,
            "initializer_range": INIT_RANGE,
        },
        audio_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            # The first must be 128: the tower sizes its projection from it as if it were the mel bins.
            "subsampling_conv_channels": [128, 4],
            "output_proj_dims": 48,
            "initializer_range": 0.02,
        } if audio else None,
        image_token_id=token("<|image|>"),
        video_token_id=token("<|video|>"),
        boi_token_id=token("<|image>"),
        eoi_token_id=token("<image|>"),
        audio_token_id=token("<|audio|>"),
        boa_token_id=token("<|audio>"),
        eoa_token_index=token("<audio|>"),
        initializer_range=0.02,
    )
    _save_model(path, Gemma4ForConditionalGeneration, config, tokenizer, seed)

    shared = dict(patch_size=patch_size, pooling_kernel_size=2, max_soft_tokens=70)
    processor = Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=Gemma4ImageProcessor(**shared),
        tokenizer=tokenizer,
        video_processor=Gemma4VideoProcessor(**shared),
        chat_template=GEMMA4_CHAT_TEMPLATE,
        image_seq_length=70,
    )
    processor.save_pretrained(path)
    return path


FAMILIES = {
    "llava_onevision": build_llava_onevision,
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "qwen3_vl_moe": partial(build_qwen3_vl, moe=True),
    "qwen3_5": build_qwen3_5,
    "qwen3_5_moe": partial(build_qwen3_5, moe=True),
    "internvl": build_internvl,
    "smolvlm": build_smolvlm,
    # Seed 0 makes a tiny Gemma 4 whose text-only reply ends after one token, too short to tell a cap's.
    "gemma4": partial(build_gemma4, seed=2),
}
