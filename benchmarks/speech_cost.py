"""What `--speech` costs per minute of audio on this machine: Whisper with random weights of a real checkpoint's
shape (its config values below, from the public checkpoint's config.json), through `transformers`' own
automatic-speech-recognition pipeline as dytok runs it (`Transcriber`); nothing is downloaded.

Compute does not depend on the weights, but how long the decoder runs does: random weights never stop on
their own, so each 30-second window is made to decode as many tokens as speech gives (--tokens: about 150
words a minute, 1.3 tokens a word, and segment timestamps: 110 per window). A minute is two windows. CPU-seconds
(the process's CPU time) are what a shared machine disturbs least; wall time on it is slower than on a quiet one.

    python benchmarks/speech_cost.py [--model base] [--beams 1] [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

# From openai/whisper-tiny's and openai/whisper-base's config.json (the same vocabulary and mel bins).
SHAPES = {
    "tiny": dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
                 encoder_ffn_dim=1536, decoder_ffn_dim=1536),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
                 encoder_ffn_dim=2048, decoder_ffn_dim=2048),
}
RATE = 16000
TEXT_TOKENS = 50257  # Whisper's byte-level BPE; its special and timestamp tokens follow, 51865 in all


def tokenizer_of_whispers_layout():
    """A byte-level BPE of Whisper's size with Whisper's special tokens and timestamps at Whisper's ids."""
    from tokenizers import pre_tokenizers
    from transformers import WhisperTokenizer
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    letters = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(letters)}
    merges = []
    for first in letters:
        for second in letters:
            if len(vocab) == TEXT_TOKENS:
                break
            merges.append((first, second))
            vocab[first + second] = len(vocab)
    languages = [f"<|{code}|>" for code in list(LANGUAGES)[:99]]  # the 99 of the checkpoints before large-v3
    special = ["<|endoftext|>", "<|startoftranscript|>", *languages, "<|translate|>", "<|transcribe|>",
               "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    for token in [*special, *timestamps]:
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.add_tokens(timestamps)
    return tokenizer, languages


def random_whisper(shape: str, folder: Path) -> Path:
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    tokenizer, languages = tokenizer_of_whispers_layout()
    ids = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, max_source_positions=1500,
                           max_target_positions=448, **SHAPES[shape])
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"), eos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"), max_length=448, is_multilingual=True,
        lang_to_id={language: ids(language) for language in languages},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50, begin_suppress_tokens=[220, ids("<|endoftext|>")],
    )
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def speech_like(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * rng.standard_normal(t.size) * np.clip(np.sin(2 * np.pi * 4 * t), 0, None)).astype(np.float32)


def aac_file(path: Path, samples: np.ndarray) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        for start in range(0, samples.size, 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    parser.add_argument("--beams", type=int, default=1, help="1: greedy, as dytok decodes; 5: the pipeline's default")
    parser.add_argument("--tokens", type=int, default=110, help="tokens decoded per 30-second window")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's); 1 is the least disturbed "
                        "by other work on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers.utils import logging

    logging.set_verbosity_error()
    from dytok_cli.config import Device, DType
    from dytok_cli.media.audio import read_audio
    from dytok_cli.media.speech import Transcriber

    with tempfile.TemporaryDirectory() as temporary:
        folder = random_whisper(args.model, Path(temporary) / f"whisper-{args.model}")
        minute = aac_file(Path(temporary) / "minute.m4a", speech_like(60.0))
        started = time.perf_counter()
        samples = read_audio(minute)
        decode_s = time.perf_counter() - started

        recognizer = Transcriber(str(folder), device=Device.cpu, dtype=DType.float32, decode_timeout=None).recognizer
        window = {"raw": samples[: 30 * RATE], "sampling_rate": RATE}
        options = dict(return_timestamps=True, generate_kwargs={"num_beams": args.beams, "max_new_tokens": args.tokens,
                                                               "min_new_tokens": args.tokens})
        recognizer(dict(window), **options)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeat):
            started, used = time.perf_counter(), time.process_time()
            recognizer(dict(window), **options)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - used)
    per_window = statistics.median(times)
    cpu_per_window = statistics.median(cpu)
    parameters = sum(p.numel() for p in recognizer.model.parameters()) / 1e6
    print(f"whisper-{args.model} shape ({parameters:.0f}M parameters, random weights), {args.beams} beam(s), "
          f"{args.tokens} tokens per 30-s window, float32 on {torch.get_num_threads()} CPU threads")
    print(f"per 30-s window: {per_window:.2f} s (median of {args.repeat}: {', '.join(f'{t:.2f}' for t in times)}), "
          f"{cpu_per_window:.2f} CPU-seconds")
    print(f"per minute of audio: {2 * per_window:.1f} s transcribing ({2 * cpu_per_window:.1f} CPU-seconds) + "
          f"{decode_s:.2f} s decoding the audio (PyAV)")


if __name__ == "__main__":
    main()
