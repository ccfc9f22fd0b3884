"""The `dytok` command: parses flags into `Settings`, calls the library, renders the result."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import render
from .config import DEFAULT_MODEL, DEFAULT_QUESTION, MODEL_ENV_VAR, Backend, Device, DType, Method, Settings
from .errors import DytokError

app = typer.Typer(
    name="dytok",
    help="Ask a video LLM about a local video, with DyToK question-aware visual-token compression.",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_DEFAULTS = Settings()

# One option set shared by every command that runs the pipeline.
ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", envvar=MODEL_ENV_VAR, help="Hub id or local model directory.", show_envvar=True),
]
PriorModelOption = Annotated[
    Optional[str],
    typer.Option("--prior-model", help="Smaller model of the same family that computes the keyframe prior."),
]
MethodOption = Annotated[Method, typer.Option("--method", help="dytok: question-aware budgets; visionzip: uniform budgets; none: no compression.")]
RatioOption = Annotated[float, typer.Option("--ratio", "-r", help="Fraction of visual tokens kept, in (0, 1].")]
FramesOption = Annotated[int, typer.Option("--frames", "-n", help="Frames sampled uniformly over the video.")]
FpsOption = Annotated[Optional[float], typer.Option("--fps", help="Sample this many frames per second instead of --frames.")]
MaxFramesOption = Annotated[Optional[int], typer.Option("--max-frames", help="Cap on frames sampled with --fps (default: --frames).")]
BackendOption = Annotated[Backend, typer.Option("--backend", help="Video decoder; auto tries decord, then PyAV, then OpenCV.")]
PriorLayersOption = Annotated[
    Optional[str],
    typer.Option("--prior-layers", help="Prior model layers for the keyframe prior: all, A-B or L (default: deepest third)."),
]
DeviceOption = Annotated[Device, typer.Option("--device", help="Where the model runs.")]
DTypeOption = Annotated[DType, typer.Option("--dtype", help="Model weights dtype (auto: bfloat16/float16 on GPU, float32 on CPU).")]
TrustOption = Annotated[bool, typer.Option("--trust-remote-code", help="Allow code shipped with the model to run. Off by default.")]


@app.callback(invoke_without_command=True)
def _group(context: typer.Context) -> None:
    """Ask a video LLM about a local video, with DyToK question-aware visual-token compression."""
    if context.invoked_subcommand is None:
        render.console.print(context.get_help(), markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE)


def _settings(**options) -> Settings:
    try:
        return Settings(**options)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def ask(
    video: Annotated[Path, typer.Argument(help="Video file.", show_default=False)],
    question: Annotated[str, typer.Argument(help="Question about the video.")] = DEFAULT_QUESTION,
    model: ModelOption = DEFAULT_MODEL,
    prior_model: PriorModelOption = None,
    method: MethodOption = _DEFAULTS.method,
    ratio: RatioOption = _DEFAULTS.ratio,
    frames: FramesOption = _DEFAULTS.frames,
    fps: FpsOption = None,
    max_frames: MaxFramesOption = None,
    backend: BackendOption = _DEFAULTS.backend,
    prior_layers: PriorLayersOption = None,
    device: DeviceOption = _DEFAULTS.device,
    dtype: DTypeOption = _DEFAULTS.dtype,
    trust_remote_code: TrustOption = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")] = _DEFAULTS.max_new_tokens,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0 decodes greedily.")] = _DEFAULTS.temperature,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed for sampling.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON record instead of the answer.")] = False,
) -> int:
    """Answer a question about a video (default question: "Describe this video.")."""
    settings = _settings(
        model=model, prior_model=prior_model, method=method, ratio=ratio, frames=frames, fps=fps,
        max_frames=max_frames, backend=backend, prior_layers=prior_layers, device=device, dtype=dtype,
        max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, trust_remote_code=trust_remote_code,
    )
    _check_video_path(video)
    # Imported here so `--help` and usage errors answer without loading torch.
    from .pipeline import Pipeline
    from .record import answer_record, error_record
    from .video import VideoError

    pipeline = Pipeline(settings)
    streaming = not json_output and render.stdout_is_terminal()
    try:
        with render.status(f"Reading {video.name}") as spinner:
            answer = pipeline.ask(
                video,
                question,
                on_text=render.write if streaming else None,
                on_stage=spinner.update if spinner else None,
            )
    except VideoError as error:
        if json_output:
            render.write_json(error_record(str(video), question, settings, pipeline.prior_name, str(error)))
        raise DytokError(str(error)) from None
    if json_output:
        render.write_json(answer_record(answer, settings, pipeline.prior_name))
    elif streaming:
        render.write("\n")
    else:
        render.write(answer.text + "\n")
    return EXIT_OK


def _check_video_path(video: Path) -> None:
    """Fail before the model loads when the video path cannot be right."""
    if not video.exists():
        raise DytokError(f"{video}: no such file")
    if video.is_dir():
        raise DytokError(f"{video}: is a directory, not a video file")


def _quiet_libraries() -> None:
    """Keep stderr to our own messages: library warnings and weight-loading bars are noise here."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors, meaningful exit codes, no tracebacks."""
    command = typer.main.get_command(app)
    try:
        if "--help" not in (argv or sys.argv[1:]):
            _quiet_libraries()
        status = command.main(args=argv, prog_name="dytok", standalone_mode=False)
    except typer.Exit as error:
        status = error.exit_code
    except (typer.Abort, KeyboardInterrupt):
        status = EXIT_INTERRUPTED
    except DytokError as error:
        render.error(str(error))
        status = EXIT_USAGE
    except typer.TyperException as error:  # usage errors: bad flags, missing arguments
        render.error((error.format_message() or "bad usage").splitlines()[0])
        status = getattr(error, "exit_code", EXIT_USAGE)
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EXIT_OK
    except Exception as error:  # a bug of ours or a library's: still one line, unless debugging
        if os.environ.get("DYTOK_DEBUG"):
            raise
        reason = str(error).splitlines()[0] if str(error) else ""
        render.error(f"unexpected {type(error).__name__}: {reason} (set DYTOK_DEBUG=1 for a traceback)")
        status = EXIT_FAILED
    if status == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into an exit status of 130 before we see it
        render.error("interrupted")
    return status if isinstance(status, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
