"""The one validated, frozen set of settings shared by the library and the CLI; defaults live here only."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import Enum

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
MODEL_ENV_VAR = "DYTOK_MODEL"
DEFAULT_QUESTION = "Describe this video."
DEFAULT_TOP = 8  # keyframes `dytok inspect --export-keyframes` writes


class Method(str, Enum):
    dytok = "dytok"  # question-aware frame budgets from the keyframe prior, VisionZip within frames
    visionzip = "visionzip"  # the same selector with uniform frame budgets (no prior pass)
    dytok_fastv = "dytok-fastv"  # one prefill: prior and pruning inside the LLM at layer --prune-layer
    none = "none"  # every visual token, as the model runs on its own


class Backend(str, Enum):
    auto = "auto"
    decord = "decord"
    pyav = "pyav"
    opencv = "opencv"


class ImageFormat(str, Enum):
    jpg = "jpg"
    png = "png"


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


def default_model() -> str:
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL


def parse_prior_layers(spec: str | None, num_layers: int) -> tuple[int, ...]:
    """Resolve `all`, `A-B` (inclusive), `L`, or None (the deepest third) to layer indices.

    The deepest third of Qwen2-0.5B's 24 layers is 16-23, the layers of the reference's published runs.
    """
    if spec is None:
        return tuple(range(num_layers - math.ceil(num_layers / 3), num_layers))
    text = spec.strip().lower()
    if text == "all":
        return tuple(range(num_layers))
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-", 1))
        else:
            first = last = int(text)
    except ValueError:
        raise ValueError(f"--prior-layers must be 'all', 'A-B' or a layer number, not {spec!r}") from None
    if not 0 <= first <= last < num_layers:
        raise ValueError(f"--prior-layers {spec!r} is outside the prior model's layers 0-{num_layers - 1}")
    return tuple(range(first, last + 1))


def default_prune_layer(num_layers: int) -> int:
    """The last layer of the first quarter (5 of Qwen2-0.5B's 0-23).

    FastV pruned after layer 2; DyToK finds the keyframe prior sharper deeper in. A quarter of the
    layers still runs every visual token: at ratio 0.25 the prefill costs about 0.44 of the full one.
    """
    return max(num_layers // 4 - 1, 0)


def resolve_prune_layer(prune_layer: int | None, num_layers: int) -> int:
    layer = default_prune_layer(num_layers) if prune_layer is None else prune_layer
    if not 0 <= layer < num_layers:
        raise ValueError(f"--prune-layer {layer} is outside the model's layers 0-{num_layers - 1}")
    return layer


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    prior_model: str | None = None  # None: the answering model is its own prior
    # Measured fastest end to end on the default model, with the prior free (README, Performance).
    method: Method = Method.dytok_fastv
    ratio: float = 0.25
    frames: int = 32
    fps: float | None = None  # when set, sample by time instead of a fixed frame count
    max_frames: int | None = None
    backend: Backend = Backend.auto
    prior_layers: str | None = None  # None: the deepest third of the prior model's layers (dytok-fastv: 0..K)
    prune_layer: int | None = None  # dytok-fastv's K; None: `default_prune_layer`
    device: Device = Device.auto
    dtype: DType = DType.auto
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy decoding
    seed: int | None = None
    trust_remote_code: bool = False
    decode_timeout: float | None = 120.0  # seconds per video; None or 0 decodes in-process, unbounded

    def __post_init__(self) -> None:
        if self.decode_timeout == 0:  # "no limit", as `--decode-timeout 0` says
            object.__setattr__(self, "decode_timeout", None)
        if not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio <= 1.0):
            raise ValueError(f"--ratio must be in (0, 1], not {self.ratio}")
        if self.frames < 1:
            raise ValueError(f"--frames must be at least 1, not {self.frames}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"--fps must be a positive number, not {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1, not {self.max_frames}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"--temperature must be 0 (greedy) or positive, not {self.temperature}")
        if self.decode_timeout is not None and not self.decode_timeout > 0:
            raise ValueError(f"--decode-timeout must be a number of seconds, or 0 for no limit, not {self.decode_timeout}")
        if self.prior_layers is not None:
            # Syntax is checked now; the range once the prior model's depth is known.
            parse_prior_layers(self.prior_layers, num_layers=10**6)
        if self.prune_layer is not None and self.prune_layer < 0:
            raise ValueError(f"--prune-layer must be a layer number (0 or more), not {self.prune_layer}")
        if self.prior_model is not None and self.method is not Method.dytok:
            raise ValueError(f"--prior-model only applies to --method dytok, not {self.method.value}")

    @property
    def sampling(self) -> dict:
        """Keyword arguments for `video.read_video`."""
        if self.fps is not None:
            return {"num_frames": None, "fps": self.fps, "max_frames": self.max_frames or self.frames}
        return {"num_frames": self.frames, "fps": None, "max_frames": None}
