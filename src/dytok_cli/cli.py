"""The `dytok` command: parses flags into `Settings`, calls the library, renders the result."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import render
from .config import (
    DEFAULT_MODEL, DEFAULT_QUESTION, DEFAULT_TOP, MODEL_ENV_VAR, Backend, Device, DType, ImageFormat, Method, Settings,
)
from .errors import DytokError, Interrupted

app = typer.Typer(
    name="dytok",
    help="Ask a video LLM about a local video, with DyToK question-aware visual-token compression.",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_DEFAULTS = Settings()
# Preset names for --help, read without importing torch.
_PRESETS = sorted(p.stem for p in (Path(__file__).parent / "presets").glob("*.json"))

# One option set shared by every command that runs the pipeline.
ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", envvar=MODEL_ENV_VAR, help="Hub id or local model directory.", show_envvar=True),
]
PriorModelOption = Annotated[
    Optional[str],
    typer.Option("--prior-model", help="Smaller model of the same family that computes the keyframe prior."),
]
MethodOption = Annotated[Method, typer.Option("--method", help="dytok: question-aware budgets; dytok-fastv: the same, pruned inside one prefill; visionzip: uniform budgets; none: no compression.")]
RatioOption = Annotated[float, typer.Option("--ratio", "-r", help="Fraction of visual tokens kept, in (0, 1].")]
FramesOption = Annotated[int, typer.Option("--frames", "-n", help="Frames sampled uniformly over the video.")]
FpsOption = Annotated[Optional[float], typer.Option("--fps", help="Sample this many frames per second instead of --frames.")]
MaxFramesOption = Annotated[Optional[int], typer.Option("--max-frames", help="Cap on frames sampled with --fps (default: --frames).")]
BackendOption = Annotated[Backend, typer.Option("--backend", help="Video decoder; auto tries decord, then PyAV, then OpenCV.")]
PriorLayersOption = Annotated[
    Optional[str],
    typer.Option("--prior-layers", help="Prior model layers for the keyframe prior: all, A-B or L (default: deepest third)."),
]
PruneLayerOption = Annotated[
    Optional[int],
    typer.Option("--prune-layer", help="dytok-fastv: decoder layer after which visual tokens are pruned (default: the last of the first quarter)."),
]
DeviceOption = Annotated[Device, typer.Option("--device", help="Where the model runs.")]
DTypeOption = Annotated[DType, typer.Option("--dtype", help="Model weights dtype (auto: bfloat16/float16 on GPU; on CPU bfloat16 where it has native bf16, else float32).")]
TrustOption = Annotated[bool, typer.Option("--trust-remote-code", help="Allow code shipped with the model to run. Off by default.")]
DecodeTimeoutOption = Annotated[
    Optional[float],
    typer.Option("--decode-timeout", help="Give up decoding one video after this many seconds (0: no limit)."),
]
CacheDirOption = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="Keep decoded frames and vision features here, reused across runs."),
]


@app.callback(invoke_without_command=True)
def _group(context: typer.Context) -> None:
    """Ask a video LLM about a local video, with DyToK question-aware visual-token compression."""
    if context.invoked_subcommand is None:
        render.console.print(context.get_help(), markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE)


_SETTINGS_FIELDS = frozenset(field.name for field in dataclasses.fields(Settings))


def _settings(parameters: dict[str, Any], **overrides: Any) -> Settings:
    """Settings from a command's parameters: every parameter named like a Settings field, then `overrides`."""
    options = {name: value for name, value in parameters.items() if name in _SETTINGS_FIELDS}
    try:
        return Settings(**{**options, **overrides})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def ask(
    arguments: Annotated[
        list[str],
        typer.Argument(
            metavar="VIDEO... [QUESTION]",
            help="Video files, directories of videos, or - to read paths from stdin. Without -q, a last "
            "argument that is not a path or a video file name is the question.",
            show_default=False,
        ),
    ],
    question: Annotated[
        Optional[list[str]], typer.Option("--question", "-q", help="A question (repeat for several).")
    ] = None,
    questions_file: Annotated[
        Optional[Path], typer.Option("--questions", help="File with one question per line.")
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", help="Look for videos in subdirectories too.")] = False,
    null_separated: Annotated[bool, typer.Option("-0", "--null", help="Paths on stdin are NUL-separated.")] = False,
    model: ModelOption = DEFAULT_MODEL,
    prior_model: PriorModelOption = None,
    method: MethodOption = _DEFAULTS.method,
    ratio: RatioOption = _DEFAULTS.ratio,
    frames: FramesOption = _DEFAULTS.frames,
    fps: FpsOption = None,
    max_frames: MaxFramesOption = None,
    backend: BackendOption = _DEFAULTS.backend,
    prior_layers: PriorLayersOption = None,
    prune_layer: PruneLayerOption = None,
    device: DeviceOption = _DEFAULTS.device,
    dtype: DTypeOption = _DEFAULTS.dtype,
    trust_remote_code: TrustOption = False,
    decode_timeout: DecodeTimeoutOption = _DEFAULTS.decode_timeout,
    cache_dir: CacheDirOption = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")] = _DEFAULTS.max_new_tokens,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature; 0 decodes greedily.")] = _DEFAULTS.temperature,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed for sampling.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON record (an array of them for several pairs).")] = False,
    jsonl_output: Annotated[bool, typer.Option("--jsonl", help="Print one JSON record per line as each pair completes.")] = False,
) -> int:
    """Answer questions about videos (default question: "Describe this video.")."""
    settings = _settings(locals())
    if json_output and jsonl_output:
        raise typer.BadParameter("--json and --jsonl cannot be used together")
    # Imported here so `--help` and usage errors answer without loading torch.
    with render.status("Loading…"):
        from . import batch
        from .cache import VisualCache
        from .pipeline import Pipeline
        from .video import thinning_note

    inputs, questions = batch.split_arguments(arguments, list(question or []))
    if questions_file is not None:
        questions = [*(question or []), *batch.read_questions(questions_file)]
    if inputs.count(batch.STDIN) > 1:
        raise typer.BadParameter("- (stdin) can be given only once")
    # One video named directly is the simple `dytok ask video.mp4 "..."`: if it cannot be read
    # nothing was done, so it is a usage error; in a batch a broken file is one failure among many.
    single = len(inputs) == 1 and inputs[0] != batch.STDIN and not Path(inputs[0]).is_dir()
    if batch.STDIN in inputs and sys.stdin.isatty():
        separator = "NUL-separated" if null_separated else "one per line"
        render.note(f"reading video paths from stdin ({separator}); end with Ctrl-D")
    videos = list(batch.expand_inputs(inputs, recursive=recursive, stdin=sys.stdin, nul=null_separated))
    if inputs == [batch.STDIN] and not videos:
        raise DytokError("no video paths on stdin")
    if not videos:
        raise DytokError(f"no video files in {' '.join(inputs)} (extensions: {', '.join(sorted(batch.VIDEO_EXTENSIONS))})")

    pairs = len(videos) * len(questions)
    pipeline = Pipeline(settings, cache=VisualCache(cache_dir) if cache_dir else None)
    stream = not (json_output or jsonl_output) and render.stdout_is_terminal()
    collected: list[dict] = []
    errors: list[str] = []
    completed = 0

    def emit(outcome: batch.Outcome) -> None:
        nonlocal completed
        completed += 1
        progress.advance()
        record = outcome.record
        if record["error"]:
            errors.append(record["error"])
            if not single:
                progress.error(record["error"])  # it names the video
        if jsonl_output:
            render.write_json(record, indent=None)
        elif json_output:
            collected.append(record)
        elif outcome.answer is not None:
            heading = f"# {record['video']}: {record['question']}\n" if pairs > 1 else ""
            with progress.paused():
                render.write("\n" if stream else f"{heading}{outcome.answer.text}\n")

    def before_pair(video: str, question: str) -> None:
        progress.start_video(video)
        if stream and pairs > 1:
            with progress.paused():
                render.write(f"# {video}: {question}\n")

    def prepared(visual: Any) -> None:
        if note := thinning_note(visual.frames):
            progress.note(f"{visual.video}: {note}")

    with render.BatchProgress(pairs, live=pairs > 1) as progress:
        try:
            failed = batch.run(
                pipeline, videos, questions, emit, on_pair=before_pair, on_prepared=prepared, on_stage=progress.stage,
                on_text=progress.streaming(render.write) if stream else None,
            )
        except KeyboardInterrupt:
            render.end_line()  # a partly streamed answer: the message goes below it
            raise Interrupted(f"interrupted after {completed} of {pairs} answers") from None
    if json_output:
        render.write_json(collected[0] if pairs == 1 else collected)
    if failed and single:
        raise DytokError(errors[0])
    return EXIT_FAILED if failed else EXIT_OK


@app.command()
def inspect(
    video: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file.", show_default=False)],
    question: Annotated[
        Optional[str],
        typer.Option(
            "--question", "-q", help=f"Question the keyframe prior is computed for (default: {DEFAULT_QUESTION!r})."
        ),
    ] = None,
    show_budgets: Annotated[
        Optional[bool],
        typer.Option(
            "--show-budgets/--no-show-budgets",
            help="Print the per-frame budget table on stdout (default: on, except with --json, or with "
            "--export-keyframes when stdout is not a terminal).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the JSON record: ask's without answer, plus each frame's rank.")
    ] = False,
    export_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--export-keyframes", metavar="DIR", help="Write the top-ranked frames and keyframes.json/.csv to DIR."
        ),
    ] = None,
    top: Annotated[
        Optional[int],
        typer.Option("--top", min=1, help=f"Keyframes to export (default {DEFAULT_TOP}, at most the frames sampled)."),
    ] = None,
    image_format: Annotated[
        Optional[ImageFormat], typer.Option("--format", help="Keyframe image format (default jpg).")
    ] = None,
    sheet: Annotated[
        bool,
        typer.Option("--sheet", help="Also write DIR/contact_sheet.png: every frame, its budget, the top K outlined."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace DIR if it exists and is not empty.")] = False,
    model: ModelOption = DEFAULT_MODEL,
    prior_model: PriorModelOption = None,
    method: MethodOption = _DEFAULTS.method,
    ratio: RatioOption = _DEFAULTS.ratio,
    frames: FramesOption = _DEFAULTS.frames,
    fps: FpsOption = None,
    max_frames: MaxFramesOption = None,
    backend: BackendOption = _DEFAULTS.backend,
    prior_layers: PriorLayersOption = None,
    prune_layer: PruneLayerOption = None,
    device: DeviceOption = _DEFAULTS.device,
    dtype: DTypeOption = _DEFAULTS.dtype,
    trust_remote_code: TrustOption = False,
    decode_timeout: DecodeTimeoutOption = _DEFAULTS.decode_timeout,
    cache_dir: CacheDirOption = None,
) -> int:
    """Show where DyToK spends the visual tokens of a video, and export its keyframes; nothing is generated."""
    settings = _settings(locals())
    if json_output and show_budgets:
        raise typer.BadParameter("--show-budgets and --json both write to stdout; choose one")
    if export_dir is None:
        used = {"--top": top is not None, "--format": image_format is not None, "--sheet": sheet, "--force": force}
        if any(used.values()):
            flags = ", ".join(flag for flag, given in used.items() if given)
            raise typer.BadParameter(f"{flags}: only used with --export-keyframes DIR")
    if show_budgets is None:
        # A script that only wants files (or JSON) gets a clean stdout; a bare run still shows the table.
        show_budgets = not json_output and (export_dir is None or render.stdout_is_terminal())
    # Imported here so `--help` and usage errors answer without loading torch; a refused target too.
    from . import export

    if export_dir is not None:
        export.check_target(export_dir, force)
    with render.status("Loading…"):
        from .cache import VisualCache
        from .pipeline import Pipeline
        from .record import inspect_record
        from .video import thinning_note

    if question is None:
        question = DEFAULT_QUESTION
        render.note(f"no --question given; using {DEFAULT_QUESTION!r}")

    pipeline = Pipeline(settings, cache=VisualCache(cache_dir) if cache_dir else None)
    with render.status("Starting") as spinner:
        visual = pipeline.prepare(video, on_stage=spinner.update if spinner else None)
        if note := thinning_note(visual.frames):
            render.note(f"{video}: {note}")
        plan = pipeline.plan(visual, question, on_stage=spinner.update if spinner else None)
    record = inspect_record(plan, settings, pipeline.prior_name)
    if export_dir is not None:
        written = export.export_keyframes(
            record, plan.frames.images, export_dir, top=top or DEFAULT_TOP,
            image_format=image_format or ImageFormat.jpg, sheet=sheet, force=force,
        )
        extra = " and a contact sheet" if written.contact_sheet else ""
        render.note(f"wrote {len(written.keyframes)} keyframes{extra} to {export_dir}")
    if json_output:
        render.write_json(record)
    if show_budgets:
        render.budgets_table(record, pipeline.prior_layers if pipeline.prior_name else None)
    return EXIT_OK


def _parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--ratios must be numbers separated by commas, not {text!r}") from None
    if not ratios or not all(0 < ratio <= 1 for ratio in ratios):
        raise typer.BadParameter(f"--ratios must each be in (0, 1], not {text!r}")
    return ratios


@app.command()
def bench(
    video: Annotated[Path, typer.Argument(help="Video file to run on.", show_default=False)],
    model: ModelOption = DEFAULT_MODEL,
    random_weights: Annotated[
        bool,
        typer.Option("--random-weights", help="Random weights with the model's real shape (no download); "
                     "--model may then name a preset: " + ", ".join(_PRESETS) + "."),
    ] = False,
    prior_model: PriorModelOption = None,
    methods: Annotated[
        Optional[list[Method]],
        typer.Option("--method", help="Method to measure; repeat to compare several in one run (default: dytok-fastv)."),
    ] = None,
    ratios: Annotated[str, typer.Option("--ratios", help="Ratios to measure, comma-separated; 1 is the uncompressed baseline.")] = "1,0.5,0.25,0.1",
    frames: FramesOption = 8,
    backend: BackendOption = _DEFAULTS.backend,
    prior_layers: PriorLayersOption = None,
    prune_layer: PruneLayerOption = None,
    device: DeviceOption = _DEFAULTS.device,
    dtype: DTypeOption = _DEFAULTS.dtype,
    trust_remote_code: TrustOption = False,
    question: Annotated[str, typer.Option("--question", "-q", help="Question asked on every run.")] = DEFAULT_QUESTION,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Timed runs per ratio (the median is reported).")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs per ratio first.")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens generated per run (end-of-sequence ignored).")] = 32,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Show every measure in the table, not only the main ones.")] = False,
) -> int:
    """Measure speed and memory per ratio in one process, against ratio 1 in the same run."""
    measured = _parse_ratios(ratios)
    if wide and json_output:
        raise typer.BadParameter("--wide shapes the table; --json already prints every measure")
    if not video.is_file():  # before minutes of model loading
        raise DytokError(f"{video}: no such file")
    methods = methods or [_DEFAULTS.method]
    if Method.none in methods:
        raise typer.BadParameter("--method none has nothing to compare; ratio 1 is measured as the uncompressed baseline")
    # The settings carry the method that accepts a --prior-model, if it is among those compared.
    settings = _settings(locals(), method=Method.dytok if Method.dytok in methods else methods[0], decode_timeout=None)
    with render.status("Loading…"):
        from . import bench as benchmark
        from .models import load_model, load_random_model

    def load(name: str):
        if random_weights:
            return load_random_model(name, device=settings.device, dtype=settings.dtype)
        return load_model(name, device=settings.device, dtype=settings.dtype, trust_remote_code=trust_remote_code)

    with render.status(f"Loading {model}") as spinner:
        answering = load(model)
        prior = load(prior_model) if prior_model else None
        results = benchmark.run(
            settings, answering, prior, video, measured, question=question, repeat=repeat, warmup=warmup,
            on_progress=spinner.update if spinner else None, methods=methods,
        )
    report = {"machine": benchmark.machine(), "model": model, "prior_model": prior_model, "method": ",".join(method.value for method in methods),
              "dtype": str(answering.model.dtype).removeprefix("torch."),
              "frames": frames, "random_weights": random_weights, "results": results}
    if json_output:
        render.write_json(report)
    else:
        render.bench_table(report, wide=wide)
    return EXIT_OK


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
            with render.status("Loading…"):
                _quiet_libraries()
        status = command.main(args=argv, prog_name="dytok", standalone_mode=False)
    except typer.Exit as error:
        status = error.exit_code
    except (typer.Abort, KeyboardInterrupt):
        status = EXIT_INTERRUPTED
    except DytokError as error:
        render.error(str(error))
        return error.exit_code
    except typer.TyperException as error:  # usage errors: bad flags, missing arguments
        render.error((error.format_message() or "bad usage").splitlines()[0])
        status = getattr(error, "exit_code", EXIT_USAGE)
    except (render.StdoutClosed, BrokenPipeError):
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
