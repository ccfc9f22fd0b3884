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

if TYPE_CHECKING:
    from pathlib import Path

    from .config import Backend, Device, DType, Method, Settings
    from .errors import DytokError, InputError, ModelError, ModelUnavailable
    from .pipeline import Pipeline
    from .types import Answer, Plan, Question, Visual

__all__ = [
    "Answer", "Backend", "DType", "Device", "DytokError", "InputError", "Method", "ModelError", "ModelUnavailable",
    "Pipeline", "Plan", "Question", "Settings", "Visual", "ask",
]

# Everything is imported on first use: `import dytok_cli` costs nothing, so the `dytok` command's entry point
# (a module of this package) takes charge of Ctrl-C as soon as Python has started, and --help stays quick.
_LAZY = {
    "Backend": "config", "DType": "config", "Device": "config", "Method": "config", "Settings": "config",
    "DytokError": "errors", "InputError": "errors", "ModelError": "errors", "ModelUnavailable": "errors",
    "Pipeline": "pipeline",
    "Answer": "types", "Plan": "types", "Question": "types", "Visual": "types",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def ask(video: str | Path, question: str | Question, **settings: Any) -> Answer:
    """Answer one question about one video; `settings` are `Settings` fields (model, method, ratio, ...).

    Loads the model for this one call: to ask several questions, keep a `Pipeline`.
    """
    from .config import Settings
    from .pipeline import Pipeline

    return Pipeline(Settings(**settings)).ask(video, question)
