"""Prefix reuse: the head of a prompt that every question about a video shares, run through
the decoder layers once and kept for the video's later questions.

Every supported family's chat template puts the video before the question, so the prompt up to the last
visual token is the same for every question, and under causal attention what the layers compute for it
(keys and values, a hybrid's recurrent states, hidden states) depends on nothing after it. A later
question goes on from that state, through the same layers, with its own tokens only.

A later prompt reuses the kept head only if it begins with exactly the same tokens: ids, positions,
embeddings (so the same visual tokens) and DeepStack rows. A template that writes question-dependent text
before the video never matches; the head is then run again for each question, which costs what one
pass over the prompt costs anyway: a fallback that cannot change an answer.

What is kept belongs to one pipeline (one model, dtype and method) and one video: `Pipeline` makes a
`PrefixReuse` per video and drops it when the video changes or its questions are done.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..models.base import VideoModel
from ..models.decoder import Decoder
from ..types import Prefix, PromptTensors


def shared_length(prompt: PromptTensors) -> int:
    """How many tokens of `prompt` every question shares if the template writes nothing that depends on
    the question before the video: up to and including the last visual token."""
    return int(prompt.visual_positions.max()) + 1


def _tensors(prompt: PromptTensors) -> list[torch.Tensor | None]:
    """Every tensor of `prompt`, the per-layer DeepStack rows one by one (None for a part the family has not)."""
    values = [getattr(prompt, field.name) for field in dataclasses.fields(prompt)]
    return [tensor for value in values for tensor in (value if isinstance(value, tuple) else (value,))]


def _same(first: PromptTensors, second: PromptTensors) -> bool:
    ours, theirs = _tensors(first), _tensors(second)
    # `torch.equal` is False for tensors of different sizes.
    return len(ours) == len(theirs) and all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b)) for a, b in zip(ours, theirs)
    )


class PrefixReuse:
    """The kept head of one video's prompt, for one pipeline; `reused` says how many prompt tokens the
    last `head` call took from an earlier question (0 when it ran them)."""

    def __init__(self) -> None:
        self._prefix: Prefix | None = None
        self.reused = 0

    def head(self, decoder: Decoder, prompt: PromptTensors, layers: range, keep_hidden: bool = False) -> Prefix | None:
        """The head of `prompt` run through `layers` (from 0): the kept one if `prompt` begins with it,
        else run now and kept instead; None if `prompt` has no head that a question could share (then
        the caller runs the prompt whole). `keep_hidden` keeps the last layer's output for callers that
        go on from it."""
        kept = self._prefix
        if kept is not None and kept.layers == layers and (kept.hidden is not None or not keep_hidden):
            length = kept.length
            # At least two tokens must follow it: the question's last token is run apart (see models.decoder).
            if prompt.length >= length + 2 and _same(kept.prompt, prompt.rows(0, length)):
                self.reused = length
                return kept
        self.reused = 0
        self._prefix = None  # freed before its successor is computed
        length = shared_length(prompt)
        if prompt.length < length + 2:
            return None
        head = prompt.rows(0, length)
        cache = decoder.new_cache()
        with torch.inference_mode():
            hidden = decoder.run(head.embeddings, head, cache, layers)
        self._prefix = Prefix(layers, head, decoder.snapshot(cache, layers), hidden if keep_hidden else None)
        return self._prefix


def cache_before_last(model: VideoModel, prompt: PromptTensors, reuse: PrefixReuse) -> Any | None:
    """The cache `generate` starts from for `prompt`, with every layer's work on the video's prefix
    reused: the question's tokens but the last run through every layer after it (`generate` runs the
    last itself, see `models.decoder`). None when `prompt` has no prefix to share."""
    decoder = model.decoder()
    layers = range(decoder.num_layers)
    head = reuse.head(decoder, prompt, layers)
    if head is None:
        return None
    cache, start = decoder.start(head)
    last = prompt.length - 1
    with torch.inference_mode():
        decoder.run(prompt.embeddings[:, start:last], prompt.rows(start, last), cache, layers)
    return cache
