"""Reasoning before the answer: chat templates with a thinking mode, and the answer kept apart from it.

Published chat templates come in three kinds. Some know a switch, the template variable
`enable_thinking`: one kind answers directly unless it is true (the prompt ends with an empty reasoning
block, `<think>\\n\\n</think>\\n\\n`), another reasons unless it is false (the prompt ends with `<think>\\n`).
Some always reason (the prompt always ends with `<think>\\n`), and most never do. So whether an answer
begins with reasoning is read from the prompt itself: it does when the prompt's last `<think>` token is
not closed by a `</think>` after it. A model may also open the block itself, with `<think>` as its first
generated token.

Everything here works on token ids, with the tokenizer's own `<think>` and `</think>` tokens: the
published tokenizers have them as single tokens (not special ones, so decoding does not drop them). A
tokenizer without them has no reasoning to keep apart.

Gemma 4 marks reasoning otherwise: its template's switch puts `<|think|>` in a system turn before everything,
and the model writes `<|channel>thought\n...<channel|>` before its answer (its larger checkpoints' template
ends a prompt with the empty `<|channel>thought\n<channel|>` unless `enable_thinking`). Its markers are
special tokens, and the block's name after the opening one, "thought" and a line end, belongs to neither the
reasoning nor the answer (as the published response schema parses it): `Markers.label`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria, TextStreamer
from transformers.generation.streamers import BaseStreamer

OPEN, CLOSE = "<think>", "</think>"
# Each published kind of markers: opening, closing, and the text that names the block right after it opens.
MARKER_KINDS = ((OPEN, CLOSE, ""), ("<|channel>", "<channel|>", "thought\n"))
SWITCH = "enable_thinking"  # the template variable of a chat template with a thinking mode


def template_has_switch(template: str | None) -> bool:
    """Whether a chat template reads `enable_thinking`. The processor hands a keyword its template does
    not read to the media processor instead (with a warning), so the switch is passed only to one that does."""
    # The processor's own test for which keywords are the template's (`jinja2.meta` on the parsed template).
    from transformers.utils.chat_template_utils import _get_template_variables

    return SWITCH in _get_template_variables(template)


@dataclass(frozen=True)
class Split:
    """Generated token ids taken apart."""

    reasoning: list[int] | None  # between the markers (None: no reasoning block)
    answer: list[int]  # after the block (all of them without one)
    closed: bool  # False while a reasoning block is open: cut off, or not finished yet


@dataclass(frozen=True)
class Markers:
    """A tokenizer's reasoning markers, as token ids."""

    open: int
    close: int
    label: tuple[int, ...] = ()  # what names the block right after it opens (Gemma 4's "thought\n"); not reasoning

    @classmethod
    def of(cls, tokenizer: Any) -> Markers | None:
        if tokenizer is None:
            return None
        vocabulary = tokenizer.get_vocab()
        for opening, closing, label in MARKER_KINDS:
            if opening in vocabulary and closing in vocabulary:
                named = tuple(tokenizer(label, add_special_tokens=False)["input_ids"]) if label else ()
                return cls(vocabulary[opening], vocabulary[closing], named)
        return None

    def unlabelled(self, reasoning: list[int]) -> list[int]:
        """`reasoning`, the ids inside a block, without the block's name where it begins with it."""
        named = bool(self.label) and tuple(reasoning[: len(self.label)]) == self.label
        return reasoning[len(self.label) :] if named else reasoning

    def opens(self, prompt_ids: Sequence[int]) -> bool:
        """Whether a prompt ends inside a reasoning block, so that the answer's first tokens are reasoning."""
        ids = list(prompt_ids)
        last_open = max((i for i, token in enumerate(ids) if token == self.open), default=-1)
        last_close = max((i for i, token in enumerate(ids) if token == self.close), default=-1)
        return last_open > last_close

    def split(self, generated: Sequence[int], reasoning_first: bool) -> Split:
        """`generated` taken apart; `reasoning_first` says the prompt opened a reasoning block (`opens`)."""
        ids = list(generated)
        if not reasoning_first:
            if not ids or ids[0] != self.open:
                return Split(None, ids, closed=True)
            ids = ids[1:]
        if self.close in ids:
            at = ids.index(self.close)
            return Split(self.unlabelled(ids[:at]), ids[at + 1 :], closed=True)
        return Split(self.unlabelled(ids), [], closed=False)


class ReasoningProgress:
    """Where generation stands, as `Markers.split` of the generated ids would say, kept up to date from the
    tokens that are new since the last look alone: on a GPU, copying every generated id to the host at
    every step costs a copy that grows with the answer. Once the answer has begun nothing more is read:
    its length is the sequence's."""

    def __init__(self, markers: Markers, prompt_length: int, reasoning_first: bool) -> None:
        self.markers = markers
        self.phase = "reasoning" if reasoning_first else "start"  # then "reasoning" or "answer"
        self.read = prompt_length  # positions of the sequence looked at
        self.inside = 0  # tokens inside the block so far
        self.head: list[int] = []  # its first ones, as many as its name has
        self.answer_from = prompt_length  # where the answer begins, once `phase` is "answer"

    def update(self, input_ids: torch.Tensor) -> None:
        length = input_ids.shape[1]
        if self.phase != "answer" and length > self.read:
            for position, token in enumerate(input_ids[0, self.read : length].tolist(), start=self.read):
                if self.phase == "start":
                    self.phase = "reasoning" if token == self.markers.open else "answer"
                    self.answer_from = position
                elif token == self.markers.close:
                    self.phase, self.answer_from = "answer", position + 1
                else:
                    self.inside += 1
                    if len(self.head) < len(self.markers.label):
                        self.head.append(token)
                if self.phase == "answer":
                    break
        self.read = length

    @property
    def reasoning(self) -> int:
        """Tokens of reasoning so far: those inside the block, less its name (`Markers.unlabelled`)."""
        return len(self.markers.unlabelled(self.head)) - len(self.head) + self.inside

    @property
    def closed(self) -> bool:
        """False while a reasoning block is open."""
        return self.phase != "reasoning"

    def answer_tokens(self, length: int) -> int:
        """Tokens of the answer in a sequence of `length`."""
        return length - self.answer_from if self.phase == "answer" else 0


class ReasoningBudget(LogitsProcessor):
    """Ends a reasoning block that has reached `limit` tokens: `</think>` is then the only token allowed,
    so the model answers from what it has reasoned so far instead of running out of tokens before it."""

    def __init__(self, progress: ReasoningProgress, limit: int) -> None:
        self.progress, self.limit = progress, limit

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        progress = self.progress
        progress.update(input_ids)
        if progress.closed or progress.reasoning < self.limit:
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[:, progress.markers.close] = 0.0
        return forced


class AnswerLength(StoppingCriteria):
    """Stops once the answer after any reasoning block has `limit` tokens: `--max-new-tokens` bounds the
    answer alone, whatever the reasoning took."""

    def __init__(self, progress: ReasoningProgress, limit: int) -> None:
        self.progress, self.limit = progress, limit

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.progress.update(input_ids)
        done = self.progress.closed and self.progress.answer_tokens(input_ids.shape[1]) >= self.limit
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _Sink(TextStreamer):
    """Decoded text of the tokens it is given, to a callback as whole words become available, without the
    whitespace before the first word (the blank line after a reasoning block)."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.on_text = on_text
        self.started = False

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        if text:
            self.on_text(text)


class ReasoningStreamer(BaseStreamer):
    """What `generate` produces, as text: the answer's to `on_text`, the reasoning's to `on_reasoning`
    (dropped when None) and a line end when the reasoning ends, the markers to neither. The first `put` is
    the prompt, which says whether the answer begins inside a reasoning block; `markers` None: everything
    is answer."""

    def __init__(
        self,
        tokenizer: Any,
        markers: Markers | None,
        on_text: Callable[[str], None] | None,
        on_reasoning: Callable[[str], None] | None = None,
    ) -> None:
        self.markers = markers
        self.answer = _Sink(tokenizer, on_text) if on_text else None
        self.reasoning = _Sink(tokenizer, on_reasoning) if on_reasoning else None
        self.phase: str | None = None  # None until the prompt is seen; then "start", "reasoning" or "answer"
        self.head: list[int] | None = []  # the block's first tokens, held until they are known not to be its name

    def put(self, value: torch.Tensor) -> None:
        ids = value.reshape(-1).tolist()
        if self.phase is None:
            reasoning_first = self.markers is not None and self.markers.opens(ids)
            self.phase = "reasoning" if reasoning_first else "start" if self.markers is not None else "answer"
            return
        for token in ids:
            self._route(token)

    def _route(self, token: int) -> None:
        markers = self.markers
        if self.phase == "start":
            self.phase = "answer"
            if token == markers.open:
                self.phase = "reasoning"
                return
        if self.phase == "reasoning":
            if token == markers.close:
                self.phase = "answer"
                self._end_reasoning()
                return
            if self.head is not None:  # the block's name, if it begins with it, is neither reasoning nor answer
                self.head.append(token)
                if len(self.head) < len(markers.label) and self.head == list(markers.label[: len(self.head)]):
                    return
                self._put(self.reasoning, markers.unlabelled(self.head))
                self.head = None
                return
            sink = self.reasoning
        else:
            sink = self.answer
        self._put(sink, [token])

    @staticmethod
    def _put(sink: _Sink | None, tokens: list[int]) -> None:
        if sink is not None and tokens:
            sink.put(torch.tensor(tokens))  # on the host, where the text is decoded

    def _end_reasoning(self) -> None:
        if self.head:  # a block shorter than its name: what there was of it
            self._put(self.reasoning, self.head)
        self.head = None
        if self.reasoning is not None:
            self.reasoning.end()
            if self.reasoning.started:
                self.reasoning.on_text("\n")

    def end(self) -> None:
        if self.phase == "reasoning":  # cut off
            self._end_reasoning()
        if self.answer is not None:
            self.answer.end()
