"""The data that passes between the stages: decoded frames, the encoded video, the prompt a
decoder walk runs on, the per-video visual work, and the per-question plan and answer.

Every stage may import this module and it imports no stage, so no stage ever imports a later one.
It imports no heavy library at run time either: the bounded decoder's worker process imports
`Frames` from here without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .math.selectors.base import FrameSelection


@dataclass(frozen=True)
class Question:
    """What is asked about a video, with what the prompt carries beside it.

    The video opens the conversation, followed by `context` (text that goes with the video, such as the
    lines said over the sampled frames) and the first question; `history` holds the conversation's
    earlier (question, answer) turns, oldest first, and `text` is asked after them. Everything here comes
    after the video, so the prompt up to the video's last token is the same for every question about it.
    """

    text: str
    history: tuple[tuple[str, str], ...] = ()
    context: str = ""

    @classmethod
    def of(cls, question: str | Question) -> Question:
        return question if isinstance(question, Question) else cls(question)

    def first_turn_text(self) -> str:
        """The text that follows the video in the conversation's first user turn."""
        first = self.history[0][0] if self.history else self.text
        return f"{self.context}\n{first}" if self.context else first


@dataclass(frozen=True)
class Frames:
    """The sampled frames of one video, as the decoder gave them."""

    images: np.ndarray  # (F, H, W, 3) uint8 RGB, upright
    indices: tuple[int, ...]  # source frame number of each sampled frame
    timestamps: tuple[float, ...]  # seconds from the stream start, from the decoder's pts
    backend: str  # "decord" | "pyav" | "opencv": the one that actually decoded
    video_fps: float
    total_frames: int  # frames the container claims (or the readable prefix of a truncated file)
    duration_s: float
    fps_frames: int | None = None  # frames `fps` picked before `max_frames` thinned them; None without fps

    def group_starts(self, per_group: int, times: tuple[float, ...] = ()) -> Frames:
        """The first sampled frame of each group of `per_group` that a model merges into one frame.

        Reports and keyframe exports then have one entry per budgeted frame, timed where it starts, or at
        `times` (one per group) when the model's prompt gives its frames times of its own.
        """
        if per_group == 1 and not times:
            return self
        firsts = range(0, len(self.indices), per_group)
        return dataclasses.replace(
            self,
            images=self.images[list(firsts)],
            indices=tuple(self.indices[i] for i in firsts),
            timestamps=times or tuple(self.timestamps[i] for i in firsts),
        )


@dataclass(frozen=True)
class Line:
    """One line said in a video: a subtitle cue or a transcribed stretch of speech, in seconds from the start.

    It is on screen (or said) over [start, end): a frame at `end` is past it."""

    start: float
    end: float
    text: str


# `Transcript.source` when the answering model heard the audio track itself (`VideoModel.hears_audio`).
HEARD = "native audio"


@dataclass(frozen=True)
class Transcript:
    """What is said in one video: the lines of a subtitle file, or of its audio track transcribed."""

    source: str | None  # the subtitle file read, "speech (MODEL)", or HEARD; None when none gave anything
    lines: tuple[Line, ...]  # in time order, none past the video's end
    # One line saying why nothing is said (no subtitles found, a file that does not parse, no audio
    # track, silence): the video is then answered from its frames alone.
    note: str | None = None


@dataclass
class EncodedVideo:
    """The query-independent result of the vision stage for one video (worth caching)."""

    features: torch.Tensor  # (F, T, D) visual tokens per frame, in the LLM's embedding space
    extra: torch.Tensor  # (E, D) tokens that follow the frames and are never compressed (LLaVA's newline)
    attention: torch.Tensor  # (F, T) attention each token receives at the selector layer (float32)
    keys: torch.Tensor  # (F, T, Dk) key metric at that layer, averaged over heads (float32)
    # Consecutive sampled frames that make one frame here (Qwen's temporal patches hold 2); the
    # last frame covers fewer when the sampled count does not divide.
    frames_per_group: int = 1
    # What families with layout-dependent positions (M-RoPE) need again to rebuild the prompt: the
    # vision grid (frames, height, width) in patches before merging, and the seconds one frame spans.
    grid: tuple[int, int, int] | None = None
    frame_seconds: float | None = None
    # (width, height) in pixels of each frame as the vision tower saw it, after the family's resizing.
    frame_size: tuple[int, int] | None = None
    # Seconds at which the prompt shows each frame, for families that write time into the text
    # (Qwen3-VL's "<t seconds>": the mean of a temporal patch's frames' decoder times); else empty.
    timestamps: tuple[float, ...] = ()
    # Seconds the whole video lasts, for families whose prompt says it (SmolVLM2's "from a 0:01:05 video"); else None.
    duration_s: float | None = None
    # (F, T, D) each: features of the same tokens from earlier vision layers that the decoder adds to
    # its hidden states at the visual positions after its first layers (Qwen3-VL's DeepStack); else empty.
    deepstack: tuple[torch.Tensor, ...] = ()
    # Frames whose pixels repeat the frame's before them, so the vision tower did not encode them again.
    reused_frames: int = 0
    # (A_i, D) each: the soft tokens of the video's audio track, one tensor per item the model hears, in time
    # order, for a model that hears audio itself (Gemma 4 E2B/E4B with --speech); never compressed; else empty.
    audio: tuple[torch.Tensor, ...] = ()

    @property
    def num_frames(self) -> int:
        return self.features.shape[0]

    @property
    def tokens_per_frame(self) -> int:
        return self.features.shape[1]

    def all_tokens(self) -> torch.Tensor:
        import torch

        return torch.cat([self.features.flatten(0, 1), self.extra])  # (F*T + E, D)

    def kept_index(self, per_frame: list[torch.Tensor]) -> torch.Tensor:
        """(N,) positions in `all_tokens()` of what a selection keeps: `per_frame[f]` indexes frame f's
        T tokens; the extra tokens, never compressed, follow."""
        import torch

        # Copied to the host once, not frame by frame: each copy from a GPU waits for it.
        frames = torch.cat([f * self.tokens_per_frame + index for f, index in enumerate(per_frame)]).cpu()
        extra = self.num_frames * self.tokens_per_frame + torch.arange(self.extra.shape[0])
        return torch.cat([frames, extra])


@dataclass
class PromptTensors:
    """A prompt with its visual tokens in place, as a walk through the decoder layers takes it."""

    input_ids: torch.Tensor  # (1, S)
    embeddings: torch.Tensor  # (1, S, D) token embeddings with the visual tokens written in
    position_ids: torch.Tensor  # what the rotary embedding takes: (1, S), or (3, 1, S) for M-RoPE
    visual_positions: torch.Tensor  # (N,) sequence positions of the visual tokens, frame-major, extras last
    frame_positions: torch.Tensor  # (F*T,) the first F*T of them: the frames' tokens
    # Per early decoder layer, (N, D) added to the hidden states at `visual_positions` after that
    # layer (Qwen3-VL's DeepStack); empty for families without.
    deepstack: tuple[torch.Tensor, ...] = ()
    # (1, S, L, P): what each of the L decoder layers takes beside the hidden states, for each token, made from
    # that token alone (Gemma 4's per-layer embeddings); None for families without.
    layer_inputs: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]

    def rows(self, start: int, stop: int) -> PromptTensors:
        """Tokens `start`..`stop - 1` alone, as a walk that continues from a cache of the earlier ones takes them."""
        inside = (self.visual_positions >= start) & (self.visual_positions < stop)
        frames = self.frame_positions
        return PromptTensors(
            input_ids=self.input_ids[:, start:stop],
            embeddings=self.embeddings[:, start:stop],
            position_ids=self.position_ids[..., start:stop],
            visual_positions=self.visual_positions[inside] - start,
            frame_positions=frames[(frames >= start) & (frames < stop)] - start,
            deepstack=tuple(rows[inside] for rows in self.deepstack),
            layer_inputs=None if self.layer_inputs is None else self.layer_inputs[:, start:stop],
        )


@dataclass
class Prefix:
    """The head of a prompt that is the same for every question about one video, run once
    through decoder layers 0.. and kept for the video's later questions (`prefill/prefix.py`)."""

    layers: range  # the layers it ran through, from 0
    prompt: PromptTensors  # its tokens: a later prompt reuses it only if it begins with exactly these
    past: Any  # what `layers` hold after it, as `Decoder.resume` takes it
    hidden: torch.Tensor | None  # (1, P, D) the last of `layers`' output, when a caller goes on from it

    @property
    def length(self) -> int:
        return self.prompt.length


@dataclass
class PrunedPrefill:
    """A single-pass prefill stopped after layer K and pruned there: what the later layers and
    decoding need (dytok-fastv)."""

    prune_layer: int
    keep: torch.Tensor  # (S_kept,) sequence positions kept, ascending
    prompt: PromptTensors  # the kept tokens: ids, original positions, visual rows and their layer inputs
    hidden: torch.Tensor  # (1, S_kept, D) layer K's output at the kept positions
    past: Any  # the decoder's cache of layers 0..K for the kept tokens but the last (see `models.decoder`)


@dataclass
class Visual:
    """The query-independent work for one video: decoded frames and what the vision stage made of them."""

    video: str
    frames: Frames
    encoded: EncodedVideo  # for the answering model
    prior_encoded: EncodedVideo  # for the prior model (the same object when the model is its own prior)
    timings: dict[str, float]  # decode_s, vision_s, and prior_vision_s with an assistant prior model
    # What is said in it, when the settings ask for subtitles or speech (`Pipeline.prepare`).
    transcript: Transcript | None = None
    cached: bool = False  # read back from a vision cache, not decoded and encoded in this call

    def take_timings(self) -> dict[str, float]:
        """The cost of this work for the first question that uses it; later questions got it free."""
        timings, self.timings = self.timings, {"decode_s": 0.0, "vision_s": 0.0}
        return dict(timings)


@dataclass
class Plan:
    """Where the visual-token budget goes for one (video, question): everything but the answer."""

    video: str
    question: Question
    frames: Frames  # one per model frame: the first sampled frame of each (see `Frames.group_starts`)
    encoded: EncodedVideo
    weights: torch.Tensor  # (F,) normalised frame weights (uniform unless the prior ran)
    budgets: torch.Tensor  # (F,) tokens kept per frame
    selections: list[FrameSelection] | None  # None when nothing was compressed
    visual_tokens: torch.Tensor  # (N, D) what the LLM receives: kept frame tokens, then the extra tokens
    kept_index: torch.Tensor  # (N,) where each of those tokens sat in the uncompressed video's tokens
    timings: dict[str, float] = field(default_factory=dict)
    # dytok-fastv: the prefill, run up to the prune layer and pruned there; `answer` finishes it.
    prefill: PrunedPrefill | None = None
    # (N, D) each: the DeepStack features of the `visual_tokens` rows, for families that have them.
    deepstack: tuple[torch.Tensor, ...] = ()
    # Prompt tokens whose work through the layers the method reuses an earlier question about the same
    # video did (prefix reuse); set by the pipeline.
    reused_prefix_tokens: int = 0
    # What is said in the video, when the settings ask for it; `subtitles` are the lines of it the prompt
    # holds (those over the sampled frames, as `question.context`) and `subtitle_tokens` the prompt tokens
    # they take. Budgets apply to the visual tokens only.
    transcript: Transcript | None = None
    subtitles: tuple[Line, ...] = ()
    subtitle_tokens: int = 0
    # The chat template's thinking switch the prompt was built with (`VideoModel.chat_text`); set by the pipeline.
    thinking: bool = False

    @property
    def kept_tokens(self) -> int:
        return int(self.budgets.sum())


@dataclass
class Answer:
    plan: Plan
    text: str  # the answer alone, without any reasoning before it
    token_ids: list[int]  # every token generated, reasoning and its markers included
    timings: dict[str, float]
    stopped: bool = False  # ended early because the caller asked (`Pipeline.answer`'s `stop`)
    reasoning: str | None = None  # what the model reasoned before answering; None when it did not
