"""dytok: ask a video LLM about a local video, made fast by DyToK question-aware visual-token compression.

The library under the `dytok` command::

    from dytok_cli import Pipeline, Settings

    pipeline = Pipeline(Settings(ratio=0.25))           # the model loads on first use, once
    video = pipeline.prepare("clip.mp4")                # decoding and the vision pass, once per video
    for question in ("What happens?", "Is there a dog?"):
        answer = pipeline.ask(video, question)
        print(answer.text, answer.plan.budgets.tolist())  # the answer, and the tokens each frame kept

`Settings` is validated on construction (choices may be given as strings); `Pipeline.plan` stops before
generation (the budgets `dytok inspect` shows); `ask` is a one-shot shortcut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Backend, Device, DType, Method, Settings
from .errors import DytokError, InputError, ModelError
from .types import Question

if TYPE_CHECKING:
    from pathlib import Path

    from .pipeline import Pipeline
    from .types import Answer, Plan, Visual

__all__ = [
    "Answer", "Backend", "DType", "Device", "DytokError", "InputError", "Method", "ModelError", "Pipeline", "Plan",
    "Question", "Settings", "Visual", "ask",
]

# What needs torch is imported on first use, so `import dytok_cli` (and the CLI's --help) stays quick.
_LAZY = {"Pipeline": "pipeline", "Answer": "types", "Plan": "types", "Visual": "types"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def ask(video: str | Path, question: str | Question, **settings: Any) -> Answer:
    """Answer one question about one video; `settings` are `Settings` fields (model, method, ratio, ...).

    Loads the model for this one call: to ask several questions, keep a `Pipeline`.
    """
    from .pipeline import Pipeline

    return Pipeline(Settings(**settings)).ask(video, question)
