"""A tiny random Whisper of the real classes, and videos with an audio track, built offline for the tests.

The Whisper is saved and loaded back through `from_pretrained` like a hub checkpoint: its tokenizer is a
byte-level BPE over a few words with Whisper's own special tokens and 1501 timestamp tokens, in Whisper's
order (the timestamps right after `<|notimestamps|>`, where its generation and decoding look for them).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import frame_pattern, h264_stream
from tokenizers import pre_tokenizers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

RATE = 16000


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine run faster on one thread than contended on several: import it into a
    test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

WORDS = "the a speaker says hello world today we talk about video and sound yes no one two three".split()
LANGUAGES = ("en", "de", "fr")
SPECIAL = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES), "<|translate|>",
           "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


def build_tokenizer() -> WhisperTokenizer:
    letters = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(letters)}
    merges = []
    for word in WORDS:
        spelled = "Ġ" + word[0]  # "Ġ" is the byte-level space: Whisper's words carry the space before them
        if spelled not in vocab:
            merges.append(("Ġ", word[0]))
            vocab[spelled] = len(vocab)
        for letter in word[1:]:
            if spelled + letter not in vocab:
                merges.append((spelled, letter))
                vocab[spelled + letter] = len(vocab)
            spelled += letter
    for token in [*SPECIAL, *TIMESTAMPS]:
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL})
    tokenizer.add_tokens(TIMESTAMPS)
    return tokenizer


def build_tiny_whisper(path: Path, seed: int = 0) -> Path:
    """A 2-layer Whisper (d_model 16) with the real feature extractor (80 mel bins, 30-second windows)."""
    tokenizer = build_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=32, pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|endoftext|>"),
        decoder_start_token_id=ids("<|startoftranscript|>"),
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"), bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"), pad_token_id=ids("<|endoftext|>"), max_length=16,
        is_multilingual=True, lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50, begin_suppress_tokens=[ids("<|endoftext|>")], suppress_tokens=[],
    )
    model.save_pretrained(path)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    """The tiny Whisper, built once per session: import it into a test module to use it."""
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


# --- sound ----------------------------------------------------------------------------------------------


def tone(seconds: float, frequency: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise shaped like speech: a voice band, in 4-per-second syllables with pauses between words."""
    rng = np.random.default_rng(seed)
    noise = np.convolve(rng.standard_normal(round(seconds * RATE)), np.ones(8) / 8, mode="same")
    t = np.arange(noise.size) / RATE
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.5 * t) > -0.5)
    return (0.3 * noise / np.abs(noise).max() * syllables).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def write_clip_with_audio(path: Path, audio: np.ndarray | None, n_frames: int = 24, fps: int = 8,
                          size: tuple[int, int] = (64, 48), rate: int = RATE, channels: int = 1) -> Path:
    """An H.264 + AAC .mp4 whose frames show `frame_pattern(i)` and whose audio is `audio` (mono samples at
    `rate`, copied to every channel); `audio=None` writes no audio stream."""
    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), "w") as container:
        video = h264_stream(container, fps, size)
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=rate)
            sound.layout = layout
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, size), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            samples = np.repeat(audio, channels)[None]  # packed "flt": the channels' samples interleaved
            chunk = 1024
            for start in range(0, audio.size, chunk):
                piece = samples[:, start * channels : (start + chunk) * channels]
                frame = av.AudioFrame.from_ndarray(piece, format="flt", layout=layout)
                frame.sample_rate = rate
                frame.pts = start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return path
