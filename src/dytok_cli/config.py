"""The one validated, frozen set of settings shared by the library and the CLI; defaults live here only."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_type_hints

from .math.layers import parse_prior_layers

# The model a laptop user starts from: of the shipped shapes under 1B, the more accurate on Video-MME and
# measured the quicker to a first answer on a CPU (docs/models.md, "The default model").
DEFAULT_MODEL = "Qwen/Qwen3.5-0.8B"
MODEL_ENV_VAR = "DYTOK_MODEL"
DEFAULT_QUESTION = "Describe this video."
DEFAULT_TOP = 8  # keyframes `dytok inspect --export-keyframes` writes
FIND_TOP = 5  # time ranges `dytok find` prints
DEFAULT_RATIO = 0.25  # for a method that compresses; one that does not keeps every token (ratio 1)
# The smallest Whisper whose transcripts are worth reading (docs/subtitles.md says why and what it costs).
DEFAULT_SPEECH_MODEL = "openai/whisper-base"

# Shipped model shapes (configs only, values from the public checkpoints) for `--random-weights`.
PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    """The shipped presets' names, read without importing torch (for --help and early errors)."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.json"))

# `dytok summarize`: frames per second over the whole video, by where the model runs (docs/summarize.md
# measures what an hour costs on a CPU); the most frames a window keeps; windows between shot cuts of at
# least and at most these seconds; the longest text written at a time (a description, a chapter, the summary).
SUMMARY_FPS = {"cpu": 0.25, "accelerator": 0.5}
SUMMARY_MAX_FRAMES = 32
SUMMARY_MIN_WINDOW_S, SUMMARY_MAX_WINDOW_S = 10.0, 60.0
SUMMARY_MAX_NEW_TOKENS = 160
# `dytok ask` without --whole says once that --whole exists when a video's sampled frames lie this many seconds
# apart or more: a 10-minute video at the default 32 frames, where a minute holds three frames.
WHOLE_HINT_GAP_S = 600 / 32


@dataclass(frozen=True)
class MethodTraits:
    """What a method is, as the settings and the reports need to know it; what it does is its strategy
    (`methods.py`)."""

    compresses: bool = True  # --ratio applies
    separate_prior_pass: bool = False  # a prior model runs its own prefill (--prior-model)
    prunes_in_prefill: bool = False  # pruned inside the answer's prefill (--prune-layer)
    # The answer sees the same visual tokens whatever the question, so its whole prompt prefix is the same
    # for every question about a video and is reused.
    same_tokens_for_every_question: bool = False

    @property
    def reads_prior(self) -> bool:
        return self.separate_prior_pass or self.prunes_in_prefill


class Method(str, Enum):
    dytok = "dytok"  # question-aware frame budgets from a separate prior pass, VisionZip within frames
    visionzip = "visionzip"  # the same selector with uniform frame budgets (no prior pass)
    dytok_fastv = "dytok-fastv"  # one prefill: prior and pruning inside the LLM at layer --prune-layer
    none = "none"  # every visual token, as the model runs on its own

    @property
    def traits(self) -> MethodTraits:
        return _METHOD_TRAITS[self]


_METHOD_TRAITS = {
    Method.dytok: MethodTraits(separate_prior_pass=True),  # which tokens a frame keeps depends on the question
    Method.visionzip: MethodTraits(same_tokens_for_every_question=True),
    Method.dytok_fastv: MethodTraits(prunes_in_prefill=True),
    Method.none: MethodTraits(compresses=False, same_tokens_for_every_question=True),
}

# What a compressing method is measured against (`bench`, `eval`): the model as it is, every visual token.
BASELINE = Method.none


class Lever(str, Enum):
    """A speed lever `bench --lever` measures on and off in one run."""

    reuse_repeats = "reuse-repeats"

    def is_on(self, settings: Settings) -> bool:
        return settings.repeats is not None

    def switched(self, settings: Settings, on: bool) -> dict[str, Any]:
        """The `Settings` fields that turn this lever on (as `settings` have it, or its default) or off."""
        return {"repeats": (settings.repeats or 0) if on else None}


class Backend(str, Enum):
    auto = "auto"
    decord = "decord"
    pyav = "pyav"
    opencv = "opencv"


class ImageFormat(str, Enum):
    jpg = "jpg"
    png = "png"


class SummaryFormat(str, Enum):
    """What `dytok summarize` writes: the summary and chapters (md, json), or a chapter file."""

    md = "md"
    json = "json"
    vtt = "vtt"
    srt = "srt"
    youtube = "youtube"
    ffmetadata = "ffmetadata"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


# The fields that hold a choice, and the enum each takes: strings are coerced to it.
_CHOICES: dict[str, type[Enum]] = {}


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a pipeline computes. Validated on construction, so a bad value fails
    here with a message naming the flag, never later inside a model; choices may be given as strings."""

    model: str = DEFAULT_MODEL
    prior_model: str | None = None  # None: the answering model is its own prior
    # Measured fastest end to end on the default model, with the prior free (docs/performance.md).
    method: Method = Method.dytok_fastv
    ratio: float | None = None  # None: DEFAULT_RATIO, or 1 for a method that keeps every token
    frames: int = 32
    fps: float | None = None  # when set, sample by time instead of a fixed frame count
    max_frames: int | None = None
    # The most pixels a frame reaches the vision tower with, for families that size frames (Qwen); None: as
    # the family's reference preprocessing sizes them.
    max_pixels: int | None = None
    backend: Backend = Backend.auto
    # Encode a tower frame (a sampled frame; two for Qwen) that repeats the one encoded before it only once:
    # it takes that one's features. A repeat has no pixel more than `repeats` levels off: at 0, bit-for-bit
    # equal, so the features are exactly what encoding it again gives; above 0, lossy; None: every frame is
    # encoded.
    repeats: int | None = 0
    prior_layers: str | None = None  # None: the deepest third of the prior model's layers (dytok-fastv: 0..K)
    prune_layer: int | None = None  # dytok-fastv's K; None: `default_prune_layer`
    device: Device = Device.auto
    dtype: DType = DType.auto
    max_new_tokens: int = 256  # the answer's; reasoning before it has its own allowance
    # Let a model whose chat template has a thinking mode reason before it answers; off, it answers directly
    # (a model that always reasons still does, and its reasoning is kept apart from the answer either way).
    think: bool = False
    # The most reasoning tokens before the answer, for `think` and for models that always reason: then the
    # reasoning is ended, so there is always an answer.
    max_reasoning_tokens: int = 4096
    temperature: float = 0.0  # 0: greedy decoding
    seed: int | None = None
    trust_remote_code: bool = False
    decode_timeout: float | None = 120.0  # seconds per video; None or 0 decodes in-process, unbounded
    # Keep the LLM's work on a video's prompt prefix for its later questions.
    prefix_cache: bool = True
    # What is said in the video, placed after it in the prompt: a subtitle file ("auto": the one named like
    # the video beside it; a directory: the one named like the video there), and/or with `speech` its audio
    # track transcribed by `speech_model` (a Whisper checkpoint; None: DEFAULT_SPEECH_MODEL) when no
    # subtitles are found.
    subtitles: str | None = None
    speech: bool = False
    speech_model: str | None = None

    # Models of the named shape (a preset, or a model's config) with random weights: no download, noise answers.
    random_weights: bool = False

    def __post_init__(self) -> None:
        if self.decode_timeout == 0:  # "no limit", as `--decode-timeout 0` says
            object.__setattr__(self, "decode_timeout", None)
        for name, choice in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, choice):
                object.__setattr__(self, name, _coerce(name, choice, value))
        method = self.method.traits
        if self.ratio is None:
            object.__setattr__(self, "ratio", DEFAULT_RATIO if method.compresses else 1.0)
        if not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio <= 1.0):
            raise ValueError(f"--ratio must be in (0, 1], not {self.ratio}")
        # A flag the method would silently ignore is refused, so a record never reports a setting that did not apply.
        if not method.compresses and self.ratio != 1:
            raise ValueError(f"--ratio does not apply to --method {self.method.value}, which keeps every visual token")
        if self.prune_layer is not None and not method.prunes_in_prefill:
            raise ValueError(f"--prune-layer only applies to --method {_methods_that('prunes_in_prefill')}")
        if self.prior_layers is not None and not method.reads_prior:
            raise ValueError(f"--prior-layers only applies to --method {_methods_that('reads_prior')}")
        if self.prior_model is not None and not method.separate_prior_pass:
            raise ValueError(f"--prior-model only applies to --method {_methods_that('separate_prior_pass')}, not {self.method.value}")
        if self.max_frames is not None and self.fps is None:
            raise ValueError("--max-frames only applies with --fps (--frames already says how many frames)")
        if self.seed is not None and self.temperature == 0:
            raise ValueError("--seed only applies when sampling (--temperature above 0); greedy decoding is deterministic")
        if self.frames < 1:
            raise ValueError(f"--frames must be at least 1, not {self.frames}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"--fps must be a positive number, not {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1, not {self.max_frames}")
        if self.repeats is not None and not 0 <= self.repeats <= 255:
            raise ValueError(f"--repeats must be 0 to 255 levels, or off, not {self.repeats}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"--max-pixels must be a number of pixels, 1 or more, not {self.max_pixels}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")
        if self.max_reasoning_tokens < 1:
            raise ValueError(f"--max-reasoning-tokens must be at least 1, not {self.max_reasoning_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"--temperature must be 0 (greedy) or positive, not {self.temperature}")
        if self.decode_timeout is not None and not self.decode_timeout > 0:
            raise ValueError(f"--decode-timeout must be a number of seconds, or 0 for no limit, not {self.decode_timeout}")
        if self.prior_layers is not None:
            # Syntax is checked now; the range once the prior model's depth is known.
            parse_prior_layers(self.prior_layers, num_layers=10**6)
        if self.prune_layer is not None and self.prune_layer < 0:
            raise ValueError(f"--prune-layer must be a layer number (0 or more), not {self.prune_layer}")
        if self.random_weights:
            for flag, name in (("--model", self.model), ("--prior-model", self.prior_model)):
                if name is not None and (problem := shape_name_problem(flag, name)):
                    raise ValueError(problem)
        if self.subtitles is not None and not isinstance(self.subtitles, str):
            object.__setattr__(self, "subtitles", os.fspath(self.subtitles))  # a Path names a file or directory too
        if self.subtitles is not None and not self.subtitles.strip():
            raise ValueError("--subtitles must name a file, a directory or auto")
        if self.speech_model is not None and not self.speech:
            raise ValueError("--speech-model only applies with --speech")

    @property
    def uses_transcript(self) -> bool:
        """Whether what is said in the video goes into the prompt (subtitles or speech)."""
        return self.subtitles is not None or self.speech

    @classmethod
    def for_methods(cls, methods: list[Method], **fields: Any) -> list[Settings]:
        """One Settings per method from one set of flags, each without the flags its method does not take,
        so one command line can compare methods (`bench`); a flag that none of them takes is refused."""
        for flag, trait in _METHOD_FLAGS.items():
            if fields.get(flag) is not None and not any(getattr(method.traits, trait) for method in methods):
                raise ValueError(f"--{flag.replace('_', '-')} only applies to --method {_methods_that(trait)}")
        return [cls(**_taken(fields, method), method=method) for method in methods]

    def with_method(self, method: Method, ratio: float | None = None) -> Settings:
        """These settings for another method and ratio, without the flags that method does not take."""
        return dataclasses.replace(self, **{**_taken(dataclasses.asdict(self), method), "ratio": ratio}, method=method)

    @property
    def sampling(self) -> dict:
        """Keyword arguments for `video.read_video`."""
        if self.fps is not None:
            return {"num_frames": None, "fps": self.fps, "max_frames": self.max_frames or self.frames}
        return {"num_frames": self.frames, "fps": None, "max_frames": None}


_CHOICES.update(
    {name: hint for name, hint in get_type_hints(Settings).items() if isinstance(hint, type) and issubclass(hint, Enum)}
)


def with_levers(settings: Settings, compared: Sequence[Lever], on: Sequence[Lever]) -> Settings:
    """`settings` with each of the `compared` levers on where it is in `on`, off where not."""
    changes: dict[str, Any] = {}
    for lever in compared:
        changes.update(lever.switched(settings, lever in on))
    return dataclasses.replace(settings, **changes)


# The flags that only some methods take, and the strategy trait that says which.
_METHOD_FLAGS = {"prior_model": "separate_prior_pass", "prior_layers": "reads_prior", "prune_layer": "prunes_in_prefill"}


def _taken(fields: dict[str, Any], method: Method) -> dict[str, Any]:
    """`fields` without the method-specific flags `method` does not take."""
    dropped = {flag: None for flag, trait in _METHOD_FLAGS.items() if not getattr(method.traits, trait)}
    return {**{name: value for name, value in fields.items() if name != "method"}, **dropped}


def _methods_that(trait: str) -> str:
    return " or ".join(method.value for method in Method if getattr(method.traits, trait))


def shape_name_problem(flag: str, name: str) -> str | None:
    """Why `name` cannot give a random-weight model its shape, or None. A name without "/" that is no
    preset nor a local directory is a misspelled preset (a model's hub id has an owner): said at once,
    with the presets, rather than after asking the hub."""
    shipped = preset_names()
    if "/" in name or name in shipped or Path(name).expanduser().exists():
        return None
    close = difflib.get_close_matches(name, shipped, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"{flag} {name!r} is not a preset; {hint}presets: {', '.join(shipped)} "
            "(or give a hub id or model directory, whose config gives the shape)")


def _coerce(name: str, choice: type[Enum], value: object) -> Enum:
    try:
        return choice(value)
    except ValueError:
        valid = ", ".join(repr(member.value) for member in choice)
        raise ValueError(f"--{name.replace('_', '-')} must be one of {valid}, not {value!r}") from None
