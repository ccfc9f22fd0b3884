"""The `dytok` command: parses flags into `Settings`, calls the library, renders the result."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from . import render
from .apps import ray_engine
from .apps.ray_engine import Engine, OutputFormat, RayOptions
from .config import (
    BASELINE,
    DEFAULT_MODEL,
    DEFAULT_QUESTION,
    DEFAULT_RATIO,
    DEFAULT_TOP,
    MODEL_ENV_VAR,
    SUMMARY_FPS,
    SUMMARY_MAX_FRAMES,
    SUMMARY_MAX_NEW_TOKENS,
    SUMMARY_MAX_WINDOW_S,
    SUMMARY_MIN_WINDOW_S,
    Backend,
    Device,
    DType,
    ImageFormat,
    Method,
    Settings,
    SummaryFormat,
)
from .errors import DytokError, Interrupted

app = typer.Typer(
    name="dytok",
    help="Ask a video LLM about a local video, with DyToK question-aware visual-token compression.",
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_DEFAULTS = Settings()
# Preset names for --help, read without importing torch.
_PRESETS = sorted(p.stem for p in (Path(__file__).parent / "presets").glob("*.json"))

# The options every command that runs the pipeline shares, each defined once, in the order --help lists them.
_PIPELINE_OPTIONS = [
    ("model", Annotated[str, typer.Option(
        "--model", "-m", metavar="NAME", envvar=MODEL_ENV_VAR, show_envvar=True, help="Hub id or local model directory.")],
     DEFAULT_MODEL),
    ("prior_model", Annotated[Optional[str], typer.Option(
        "--prior-model", metavar="NAME", help="dytok: a smaller model of the same family that computes the keyframe prior.")],
     None),
    ("method", Annotated[Method, typer.Option(
        "--method", metavar="METHOD", help="dytok-fastv: question-aware budgets, pruned inside one prefill; dytok: the same "
        "budgets from a separate prior pass, VisionZip within frames; visionzip: uniform budgets; none: no compression.")],
     _DEFAULTS.method),
    ("ratio", Annotated[Optional[float], typer.Option(
        "--ratio", "-r", metavar="R", show_default=f"{DEFAULT_RATIO:g}; 1 with --method none",
        help="Fraction of visual tokens kept, in (0, 1].")],
     None),
    ("frames", Annotated[int, typer.Option("--frames", "-n", metavar="N", help="Frames sampled uniformly over the video.")],
     _DEFAULTS.frames),
    ("fps", Annotated[Optional[float], typer.Option(
        "--fps", metavar="RATE", help="Sample this many frames per second instead of --frames.")], None),
    ("max_frames", Annotated[Optional[int], typer.Option(
        "--max-frames", metavar="N", help="With --fps: the most frames to sample (default: --frames).")], None),
    ("backend", Annotated[Backend, typer.Option(
        "--backend", metavar="NAME", help="Video decoder: auto, decord, pyav or opencv; auto tries them in that order.")],
     _DEFAULTS.backend),
    ("prior_layers", Annotated[Optional[str], typer.Option(
        "--prior-layers", metavar="LAYERS", help="Layers whose attention gives the keyframe prior: all, A-B or L. Default: "
        "the deepest third of the prior model's (dytok); every layer up to --prune-layer (dytok-fastv). On a hybrid "
        "model (Qwen3.5) its full-attention layers among these.")],
     None),
    ("prune_layer", Annotated[Optional[int], typer.Option(
        "--prune-layer", metavar="K", help="dytok-fastv: the decoder layer after which visual tokens are pruned "
        "(default: the last of the first quarter; on a hybrid model, its last full-attention layer there).")],
     None),
    ("device", Annotated[Device, typer.Option("--device", metavar="NAME", help="auto, cpu, cuda or mps.")], _DEFAULTS.device),
    ("dtype", Annotated[DType, typer.Option(
        "--dtype", metavar="NAME", help="auto, float32, bfloat16 or float16 (auto: bfloat16/float16 on GPU; on CPU "
        "bfloat16 where it has native bf16, else float32).")],
     _DEFAULTS.dtype),
    ("trust_remote_code", Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow code shipped with the model to run. Off by default.")], False),
    ("decode_timeout", Annotated[Optional[float], typer.Option(
        "--decode-timeout", metavar="SECONDS", help="Give up decoding one video after this long (0: no limit).")],
     _DEFAULTS.decode_timeout),
    ("prefix_cache", Annotated[bool, typer.Option(
        "--prefix-cache/--no-prefix-cache", help="Compute the LLM's work on the part of the prompt up to the end of "
        "the video once per video, and reuse it for the video's later questions.")],
     _DEFAULTS.prefix_cache),
    ("cache_dir", Annotated[Optional[Path], typer.Option(
        "--cache-dir", metavar="DIR", help="Keep decoded frames and vision features here, reused across runs.")], None),
    ("verbose", Annotated[bool, typer.Option(
        "--verbose", help="Show the libraries' warnings on stderr (such as the slow PyTorch fallback of Qwen3.5's "
        "linear-attention kernels without flash-linear-attention).")], False),
]


class PlainHelpCommand(TyperCommand):
    """A command whose --help names its arguments as they are written (`VIDEO... [QUESTION]`), without
    Typer's type annotations (`<list[str]>`, `{...}`) that read as internals."""

    def _arguments(self, context: typer.Context) -> list[Any]:
        return [param for param in self.get_params(context) if param.param_type_name == "argument"]

    def collect_usage_pieces(self, context: typer.Context) -> list[str]:
        return [self.options_metavar or "", *(param.metavar or param.name.upper() for param in self._arguments(context))]

    def format_options(self, context: typer.Context, formatter: Any) -> None:
        arguments = [(param.metavar or param.name.upper(), param.help or "") for param in self._arguments(context)]
        options = [record for param in self.get_params(context)
                   if param.param_type_name == "option" and (record := param.get_help_record(context))]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def pipeline_options(*, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> Callable:
    """Give a command the shared pipeline options (all but `exclude`, with `defaults` overridden).

    They are added to the command's signature, which is what Typer reads, and reach the command as one
    `options` dict, from which `_settings` builds the `Settings`.
    """

    def decorate(command: Callable) -> Callable:
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=(defaults or {}).get(name, default))
            for name, annotation, default in _PIPELINE_OPTIONS
            if name not in exclude
        ]
        own = inspect.signature(command, eval_str=True)
        parameters = [parameter for name, parameter in own.parameters.items() if name != "options"]

        def with_options(**arguments: Any) -> Any:
            options = {parameter.name: arguments.pop(parameter.name) for parameter in shared}
            if options.get("verbose"):
                _show_library_messages()
            return command(options=options, **arguments)

        with_options.__name__, with_options.__doc__ = command.__name__, command.__doc__
        with_options.__signature__ = own.replace(parameters=[*parameters, *shared])  # type: ignore[attr-defined]
        return with_options

    return decorate


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        render.write(f"dytok {version('dytok-cli')}\n")
        raise typer.Exit(EXIT_OK)


@app.callback(invoke_without_command=True)
def _group(
    context: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Ask a video LLM about a local video, with DyToK question-aware visual-token compression."""
    if context.invoked_subcommand is None:
        render.console.print(context.get_help(), markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE)


_SETTINGS_FIELDS = frozenset(field.name for field in dataclasses.fields(Settings))


def _settings(parameters: dict[str, Any], methods: list[Method] | None = None, **overrides: Any) -> Any:
    """Settings from a command's options: every one named like a Settings field, then `overrides`; with
    `methods`, one Settings per method compared (`Settings.for_methods`)."""
    options = {name: value for name, value in parameters.items() if name in _SETTINGS_FIELDS}
    try:
        if methods is not None:
            return Settings.for_methods(methods, **{**options, **overrides})
        return Settings(**{**options, **overrides})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command(cls=PlainHelpCommand, short_help="Answer questions about videos.")
@pipeline_options()
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
        Optional[list[str]], typer.Option("--question", "-q", metavar="TEXT", help="A question (repeat for several).")
    ] = None,
    questions_file: Annotated[
        Optional[Path], typer.Option("--questions", metavar="FILE", help="File with one question per line.")
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", help="Look for videos in subdirectories too.")] = False,
    null_separated: Annotated[bool, typer.Option("-0", "--null", help="Paths on stdin (-) are NUL-separated.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", metavar="N", help="Longest answer, in tokens.")] = _DEFAULTS.max_new_tokens,
    temperature: Annotated[float, typer.Option("--temperature", metavar="T", help="Sampling temperature; 0 decodes greedily.")] = _DEFAULTS.temperature,
    seed: Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Random seed for sampling (--temperature above 0).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON record (an array of them for several pairs).")] = False,
    jsonl_output: Annotated[bool, typer.Option("--jsonl", help="Print one JSON record per line as each pair completes.")] = False,
    engine: Annotated[Engine, typer.Option("--engine", metavar="NAME", help="local: in this process; ray: on Ray actors, one model each (pip install 'dytok-cli[ray]').")] = Engine.local,
    workers: Annotated[Optional[int], typer.Option("--workers", metavar="N", help=f"--engine ray: actors, each loading the model once (default {RayOptions.workers}).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option("--gpus-per-worker", metavar="G", help=f"--engine ray: GPUs per actor; a fraction shares a GPU (default {RayOptions.gpus_per_worker:g}).")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", metavar="ADDRESS", help="--engine ray: join this Ray cluster (auto: the one `ray start` runs here); default: RAY_ADDRESS, else start a local Ray.")] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output", metavar="DIR", help="--engine ray: Ray writes the records as shards in DIR; a re-run skips pairs already there.")] = None,
    output_format: Annotated[Optional[OutputFormat], typer.Option("--format", metavar="FORMAT", help="--output shard format: jsonl (default) or parquet.")] = None,
    force: Annotated[bool, typer.Option("--force", help="--output: replace DIR if it holds anything else, or a run with other settings.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Answer questions about videos (default question: "Describe this video.")."""
    settings = _settings(options, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    cache_dir = options["cache_dir"]
    if json_output and jsonl_output:
        raise typer.BadParameter("--json and --jsonl cannot be used together")
    ray_flags = {"--workers": workers is not None, "--gpus-per-worker": gpus_per_worker is not None,
                 "--ray-address": ray_address is not None, "--output": output_dir is not None}
    if engine is Engine.local and any(ray_flags.values()):
        raise typer.BadParameter(f"{', '.join(flag for flag, given in ray_flags.items() if given)}: only used with --engine ray")
    if output_dir is None and (output_format is not None or force):
        raise typer.BadParameter("--format and --force: only used with --output DIR")
    if output_dir is not None and (json_output or jsonl_output):
        raise typer.BadParameter("--output writes the records to DIR; drop --json/--jsonl")
    try:
        given = {"workers": workers, "gpus_per_worker": gpus_per_worker, "address": ray_address}
        ray_options = RayOptions(**{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    from .media import (
        inputs as given_inputs,  # torch-free: a wrong command line fails before anything loads
    )

    given = [*(question or []), *(given_inputs.read_questions(questions_file) if questions_file is not None else [])]
    inputs, questions = given_inputs.split_arguments(arguments, given)
    stdin = given_inputs.STDIN
    if inputs.count(stdin) > 1:
        raise typer.BadParameter("- (stdin) can be given only once")
    if null_separated and stdin not in inputs:
        raise typer.BadParameter("-0/--null only applies to paths read from stdin (-)")
    # One video named directly is the simple `dytok ask video.mp4 "..."`: if it cannot be read
    # nothing was done, so it is a usage error; in a batch a broken file is one failure among many.
    single = len(inputs) == 1 and inputs[0] != stdin and not Path(inputs[0]).is_dir()
    if stdin in inputs and sys.stdin.isatty():
        separator = "NUL-separated" if null_separated else "one per line"
        render.note(f"reading video paths from stdin ({separator}); end with Ctrl-D")
    videos = list(given_inputs.expand_inputs(inputs, recursive=recursive, stdin=sys.stdin, nul=null_separated))
    if inputs == [stdin] and not videos:
        raise DytokError("no video paths on stdin")
    if not videos:
        extensions = ", ".join(sorted(given_inputs.VIDEO_EXTENSIONS))
        raise DytokError(f"no video files in {' '.join(inputs)} (extensions: {extensions})")

    # Imported here so `--help` and usage errors answer without loading torch.
    with render.status("Loading…"):
        from . import batch
        from .media.cache import VisualCache
        from .media.video import thinning_note
        from .pipeline import Pipeline

    if output_dir is not None:
        failed = ray_engine.write(settings, videos, questions, output_dir, options=ray_options, note=render.note,
                                  error=render.error, output_format=output_format or OutputFormat.jsonl, force=force,
                                  cache_dir=cache_dir)
        return EXIT_FAILED if failed else EXIT_OK
    pairs = len(videos) * len(questions)
    pipeline = Pipeline(settings, cache=VisualCache(cache_dir) if cache_dir else None)
    stream = engine is Engine.local and not (json_output or jsonl_output) and render.stdout_is_terminal()
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
        elif record["error"] is None:
            heading = f"# {record['video']}: {record['question']}\n" if pairs > 1 else ""
            with progress.paused():
                render.write("\n" if stream else f"{heading}{record['answer']}\n")

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
            if engine is Engine.ray:
                failed = ray_engine.run(settings, videos, questions, emit, options=ray_options, note=progress.note,
                                        cache_dir=cache_dir)
            else:
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


@app.command("inspect", cls=PlainHelpCommand, short_help="Show where the visual tokens go; export keyframes.")
@pipeline_options()
def inspect_command(
    video: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file.", show_default=False)],
    question_argument: Annotated[
        Optional[str], typer.Argument(metavar="[QUESTION]", help="The question (or give it with -q).", show_default=False)
    ] = None,
    question: Annotated[
        Optional[str],
        typer.Option(
            "--question", "-q", metavar="TEXT",
            help=f"Question the keyframe prior is computed for (default: {DEFAULT_QUESTION!r}).",
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
        typer.Option("--top", min=1, metavar="K", help=f"Keyframes to export (default {DEFAULT_TOP}, at most the frames sampled)."),
    ] = None,
    image_format: Annotated[
        Optional[ImageFormat], typer.Option("--format", metavar="FORMAT", help="Keyframe image format: jpg (default) or png.")
    ] = None,
    sheet: Annotated[
        bool,
        typer.Option("--sheet", help="Also write DIR/contact_sheet.png: every frame, its budget, the top K outlined."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace DIR if it exists and is not empty.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Show where DyToK spends the visual tokens of a video, and export its keyframes; nothing is generated."""
    settings = _settings(options)
    cache_dir = options["cache_dir"]
    if question_argument is not None and question is not None:
        raise typer.BadParameter("give the question once: as the argument after VIDEO, or with -q")
    question = question if question is not None else question_argument
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
    from .apps import export

    if export_dir is not None:
        export.check_target(export_dir, force)
    with render.status("Loading…"):
        from .media.cache import VisualCache
        from .media.video import thinning_note
        from .pipeline import Pipeline
        from .record import inspect_record

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


class _WindowProgress:
    """The summarize display for one video on a terminal: its stage, then windows done/total with an ETA
    once the windows are known (nothing when stderr is not a terminal)."""

    def __init__(self, video: str) -> None:
        self.video = video
        self.bar = render.BatchProgress(0, live=False)
        self.bar.start_video(video)
        self.bar.__enter__()

    def windows(self, total: int, done: int) -> None:
        self.bar.__exit__(None, None, None)
        if done:
            render.note(f"{self.video}: {done} of {total} windows already described (--cache-dir); resuming")
        # Counted from the windows left, so the ETA reflects this run's speed.
        self.bar = render.BatchProgress(total - done)
        self.bar.start_video(self.video)
        self.bar.__enter__()

    def stage(self, message: str) -> None:
        self.bar.stage(message)

    def advance(self) -> None:
        self.bar.advance()

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


@app.command(cls=PlainHelpCommand, short_help="Chapters and a summary of long videos, window by window.")
@pipeline_options(exclude=("frames", "fps", "max_frames", "cache_dir"))
def summarize(
    arguments: Annotated[
        list[str],
        typer.Argument(metavar="VIDEO...", help="Video files, directories of videos, or - to read paths from stdin.",
                       show_default=False),
    ],
    output_format: Annotated[Optional[SummaryFormat], typer.Option(
        "--format", metavar="FORMAT", help="md (summary, then chapters; the default), json (windows, shot cuts, "
        "chapters, summary, timings), vtt or srt (a cue per chapter), youtube (chapter lines for a description), "
        "ffmetadata (chapters for `ffmpeg -map_chapters`).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="FILE|DIR", help="Write to FILE (one video) or into DIR as VIDEO_NAME.md, .json, "
        ".vtt, .srt, .youtube.txt or .ffmetadata (a DIR for several videos), each file whole or not at all.")] = None,
    force: Annotated[bool, typer.Option("--force", help="--output: replace files that exist.")] = False,
    jsonl_output: Annotated[bool, typer.Option("--jsonl", help="Print one JSON record per video, on one line, as each completes.")] = False,
    window: Annotated[Optional[float], typer.Option(
        "--window", metavar="SECONDS", help="Fixed windows of this length instead of windows at shot cuts.")] = None,
    min_window: Annotated[float, typer.Option(
        "--min-window", metavar="SECONDS", help="Shots shorter than this join the next one.")] = SUMMARY_MIN_WINDOW_S,
    max_window: Annotated[float, typer.Option(
        "--max-window", metavar="SECONDS", help="Longer shots are split into equal windows of at most this.")] = SUMMARY_MAX_WINDOW_S,
    fps: Annotated[Optional[float], typer.Option(
        "--fps", metavar="RATE", show_default=f"{SUMMARY_FPS['cpu']:g} on a CPU, {SUMMARY_FPS['accelerator']:g} on a GPU",
        help="Frames sampled per second over the whole video.")] = None,
    max_frames: Annotated[int, typer.Option(
        "--max-frames", metavar="N", help="The most frames one window keeps (thinned uniformly).")] = SUMMARY_MAX_FRAMES,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", metavar="N", help="Longest text the model writes at a time (a window's description, "
        "a chapter, the summary), in tokens.")] = SUMMARY_MAX_NEW_TOKENS,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", metavar="DIR", help="Keep each video's shot cuts and described windows here as they "
        "complete, so a run stopped by Ctrl-C or a crash resumes where it was.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", help="Look for videos in subdirectories too.")] = False,
    null_separated: Annotated[bool, typer.Option("-0", "--null", help="Paths on stdin (-) are NUL-separated.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Summarise long videos as timestamped chapters and one summary, window by window in bounded memory."""
    from .apps import summarize as summarizing  # torch-free until a model is needed
    from .media import inputs as given_inputs

    fmt = output_format or SummaryFormat.md
    if jsonl_output and output_format not in (None, SummaryFormat.json):
        raise typer.BadParameter("--jsonl prints JSON records; drop --format")
    if jsonl_output and output is not None:
        raise typer.BadParameter("--jsonl prints to stdout; drop --output")
    if force and output is None:
        raise typer.BadParameter("--force: only used with --output")
    if window is not None and (min_window, max_window) != (SUMMARY_MIN_WINDOW_S, SUMMARY_MAX_WINDOW_S):
        raise typer.BadParameter("--min-window and --max-window shape windows at shot cuts; --window makes fixed ones")
    try:
        segmentation = summarizing.Segmentation(window=window, min_window=min_window, max_window=max_window)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    stdin = given_inputs.STDIN
    for argument in arguments:
        if not (argument == stdin or Path(argument).exists() or given_inputs.is_video_name(argument)):
            raise typer.BadParameter(f"{argument!r} is not a video file, a directory or -")
    if arguments.count(stdin) > 1:
        raise typer.BadParameter("- (stdin) can be given only once")
    if null_separated and stdin not in arguments:
        raise typer.BadParameter("-0/--null only applies to paths read from stdin (-)")
    single = len(arguments) == 1 and arguments[0] != stdin and not Path(arguments[0]).is_dir()
    videos = list(given_inputs.expand_inputs(arguments, recursive=recursive, stdin=sys.stdin, nul=null_separated))
    if not videos:
        raise DytokError("no video paths on stdin" if arguments == [stdin] else f"no video files in {' '.join(arguments)}")
    chapter_file = fmt not in (SummaryFormat.md, SummaryFormat.json)
    if chapter_file and len(videos) > 1 and output is None:
        raise typer.BadParameter(f"--format {fmt.value} writes a file per video; give --output DIR")
    targets: dict[str, Path] = {}
    if output is not None:
        into_directory = len(videos) > 1 or output.is_dir() or str(output).endswith(("/", os.sep))
        if into_directory and output.exists() and not output.is_dir():
            raise typer.BadParameter(f"--output {output} is a file; several videos need a directory")
        for video in videos:
            target = summarizing.output_path(output, video, fmt, into_directory)
            if target in targets.values():
                raise typer.BadParameter(f"two videos would both write {target}; summarise them in separate runs")
            if target.exists() and not force:
                raise DytokError(f"{target} exists; use --force to replace it")
            targets[video] = target

    with render.status("Loading…"):
        from .batch import PER_VIDEO_ERRORS, one_line
        from .pipeline import Pipeline

        rate = fps if fps is not None else summarizing.default_fps(options["device"])
    settings = _settings(options, fps=rate, max_frames=max_frames, max_new_tokens=max_new_tokens)
    pipeline = Pipeline(settings)
    prior_name = pipeline.prior_name
    collected: list[dict] = []
    errors: list[str] = []
    for number, video in enumerate(videos):
        progress = _WindowProgress(video)
        try:
            summary = summarizing.summarize(pipeline, video, segmentation, cache_dir=cache_dir, progress=progress)
        except PER_VIDEO_ERRORS as error:
            message = one_line(error)
            message = message if message.startswith(f"{video}: ") else f"{video}: {message}"
            errors.append(message)
            progress.close()
            if not single:
                render.error(message)
            if jsonl_output:
                render.write_json(summarizing.error_record(video, settings, prior_name, message), indent=None)
            elif fmt is SummaryFormat.json and output is None:
                collected.append(summarizing.error_record(video, settings, prior_name, message))
            continue
        except KeyboardInterrupt:
            progress.close()
            resume = ("the same command resumes from --cache-dir" if cache_dir is not None
                      else "with --cache-dir DIR a rerun resumes where it stopped")
            raise Interrupted(f"interrupted while summarising {video} ({number} of {len(videos)} videos done); {resume}") from None
        progress.close()
        for note in summarizing.notes(summary, fmt):
            render.note(f"{video}: {note}")
        if jsonl_output:
            render.write_json(summarizing.record(summary, settings, prior_name), indent=None)
        elif video in targets:
            summarizing.write_file(targets[video], summarizing.formatted(summary, fmt, settings, prior_name), force)
            render.note(f"wrote {targets[video]}")
        elif fmt is SummaryFormat.json:
            collected.append(summarizing.record(summary, settings, prior_name))
        else:
            text = summarizing.formatted(summary, fmt, settings, prior_name)
            render.write(("\n" if number and fmt is SummaryFormat.md else "") + text)
    if collected:
        render.write_json(collected[0] if single else collected)
    if errors and single:
        raise DytokError(errors[0])
    return EXIT_FAILED if errors else EXIT_OK


def _parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--ratios must be numbers separated by commas, not {text!r}") from None
    if not ratios or not all(0 < ratio <= 1 for ratio in ratios):
        raise typer.BadParameter(f"--ratios must each be in (0, 1], not {text!r}")
    return ratios


@app.command(cls=PlainHelpCommand, short_help="Measure speed and memory per ratio against ratio 1.")
@pipeline_options(exclude=("method", "ratio", "fps", "max_frames", "decode_timeout", "cache_dir"), defaults={"frames": 8})
def bench(
    video: Annotated[Path, typer.Argument(help="Video file to run on.", show_default=False)],
    random_weights: Annotated[
        bool,
        typer.Option("--random-weights", help="Random weights with the model's real shape (no download); "
                     "--model may then name a preset: " + ", ".join(_PRESETS) + "."),
    ] = False,
    methods: Annotated[
        Optional[list[Method]],
        typer.Option("--method", metavar="METHOD", help="dytok-fastv, dytok or visionzip: a method to measure; "
                     "repeat to compare several in one run (default: dytok-fastv)."),
    ] = None,
    ratios: Annotated[str, typer.Option("--ratios", metavar="R,R,...", help="Ratios to measure, comma-separated; 1 is the uncompressed baseline.")] = "1,0.5,0.25,0.1",
    question: Annotated[str, typer.Option("--question", "-q", metavar="TEXT", help="Question asked on every run.")] = DEFAULT_QUESTION,
    repeat: Annotated[int, typer.Option("--repeat", min=1, metavar="N", help="Timed runs per ratio (the median is reported).")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, metavar="N", help="Untimed runs per ratio first.")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", metavar="N", help="Tokens generated per run (end-of-sequence ignored).")] = 32,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Show every measure in the table, not only the main ones.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Measure speed and memory per ratio in one process, against ratio 1 in the same run."""
    measured = _parse_ratios(ratios)
    if wide and json_output:
        raise typer.BadParameter("--wide shapes the table; --json already prints every measure")
    if not video.is_file():  # before minutes of model loading
        raise DytokError(f"{video}: no such file")
    methods = methods or [_DEFAULTS.method]
    uncompressed = [method.value for method in methods if not method.traits.compresses]
    if uncompressed:
        raise typer.BadParameter(f"--method {uncompressed[0]} has nothing to compare; ratio 1 is measured as the uncompressed baseline")
    compared = _settings(options, methods=methods, max_new_tokens=max_new_tokens, decode_timeout=None)
    with render.status("Loading…"):
        from .apps import bench as benchmark

    settings = compared[0]
    with render.status(f"Loading {settings.model}") as spinner:
        results = benchmark.run(
            compared, video, measured, question=question, repeat=repeat, warmup=warmup, random_weights=random_weights,
            on_progress=spinner.update if spinner else None,
        )
    report = {"machine": benchmark.machine(), "model": settings.model, "prior_model": options["prior_model"],
              "method": ",".join(method.value for method in methods), "dtype": benchmark.dtype_name(settings),
              "frames": settings.frames, "prefix_cache": settings.prefix_cache, "random_weights": random_weights,
              "results": results}
    if json_output:
        render.write_json(report)
    else:
        render.bench_table(report, wide=wide)
    return EXIT_OK


@app.command("eval", cls=PlainHelpCommand, short_help="Accuracy and speed per method and ratio on a QA set.")
@pipeline_options(exclude=("method", "ratio"))
def eval_(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Multiple-choice items: JSONL or a JSON array (see README).", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="DIR", show_default=False,
                     help="Where predictions.jsonl, summary.json and pareto.png go; the same command again resumes there."),
    ],
    methods: Annotated[
        Optional[list[Method]],
        typer.Option("--method", metavar="METHOD", help="none, visionzip, dytok or dytok-fastv: a method to evaluate; "
                     "repeat for several (default: none and dytok-fastv). none runs once, at ratio 1."),
    ] = None,
    ratios: Annotated[str, typer.Option("--ratios", metavar="R,R,...", help="Ratios for every method but none, comma-separated.")] = "0.5,0.25,0.1",
    video_dir: Annotated[
        Optional[Path],
        typer.Option("--video-dir", metavar="DIR", help="Folder of the videos: relative paths and VideoMME's videoID resolve here (default: the data file's folder)."),
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, metavar="N", help="Evaluate only the first N items.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over in DIR although it holds other files or another run.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", metavar="N", help="Longest answer, in tokens.")] = 16,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of the table.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Accuracy and speed per method and ratio on a multiple-choice video QA set, resumable."""
    measured = _parse_ratios(ratios)
    methods = list(dict.fromkeys(methods or [BASELINE, _DEFAULTS.method]))
    compared = _settings(options, methods=methods, max_new_tokens=max_new_tokens)
    cache_dir = options["cache_dir"]
    from .apps import (
        eval as evaluation,  # imported here so --help and usage errors answer without torch
    )

    try:
        items = evaluation.load_items(data, video_dir)
    except evaluation.ItemsError as error:
        for problem in error.problems:
            render.error(problem)
        return EXIT_USAGE
    items = items[:limit] if limit else items
    missing = evaluation.missing_videos(items)
    videos = len({item.video for item in items})
    if len(missing) == videos:
        raise DytokError(f"none of the {videos} videos exists (first: {missing[0]}); check --video-dir")
    if missing:
        render.note(f"{len(missing)} of {videos} videos are missing (first: {missing[0]}); their pairs are recorded as errors")
    cases = evaluation.grid(methods, measured)
    run_dir = evaluation.RunDirectory(output, evaluation.manifest(data, compared, video_dir), force)
    work = evaluation.pending(items, cases, run_dir.records)
    failed = 0
    if work:
        from .media.cache import VisualCache

        with render.BatchProgress(len(work)) as progress:
            try:
                failed = evaluation.run(
                    work, cases, compared, run_dir, progress=progress, cache=VisualCache(cache_dir) if cache_dir else None
                )
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted; what was answered is in {output}: the same command resumes") from None
    summary = evaluation.summarise(items, cases, run_dir.records, run_dir.manifest)
    run_dir.write_summary(summary)
    try:
        evaluation.plot_pareto(summary, output / evaluation.PARETO)
    except ImportError:
        render.note("no pareto.png: matplotlib is not installed (pip install 'dytok-cli[plot]')")
    if json_output:
        render.write_json(summary)
    else:
        render.eval_table(summary)
    return EXIT_FAILED if failed else EXIT_OK


def _quiet_libraries() -> None:
    """Keep stderr to our own messages: library warnings and weight-loading bars are noise here."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _show_library_messages() -> None:
    """--verbose: the libraries' warnings reach stderr again (weight-loading bars stay off)."""
    warnings.simplefilter("default")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()


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
        # Typer's validation prefixes what it checked with its own wording; the reason alone reads plainly.
        message = (error.format_message() or "bad usage").splitlines()[0].replace("Value error, ", "")
        message = message.removeprefix("Invalid value: ")  # our own reasons already name the flag
        render.error(message.replace("Input should be a valid integer, unable to parse string as an integer", "not a whole number"))
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
