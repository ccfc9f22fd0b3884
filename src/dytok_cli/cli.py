"""The `dytok` command: parses flags into `Settings`, calls the library, renders the result."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

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
    DEFAULT_SPEECH_MODEL,
    DEFAULT_TOP,
    FIND_TOP,
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
    Lever,
    Method,
    Settings,
    SummaryFormat,
)
from .errors import DytokError, Interrupted, install_hint
from .timecode import short_hms

if TYPE_CHECKING:
    from .math.windows import Window
    from .windowed import Segmentation

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

# --help lists a command's options in panels, in this order, so what a person uses first comes first.
# Every option names its panel with Typer's own `rich_help_panel=` (the help stays plain text: the panels
# are drawn by `PlainHelpCommand`); within a panel options keep their order in the command's signature,
# its own options first, then the shared `_PIPELINE_OPTIONS`. A new option or command picks one of these
# (tests/test_first_run.py checks that every option of every command has one); -h/--help goes under BASICS.
BASICS = "Basics"  # what is asked and of which videos
MODEL = "Model"  # which model, where it runs, and what of its work is kept for later
METHOD = "Method"  # the compression: method, ratio, prior and pruning
SAMPLING = "Sampling"  # which frames are taken from a video, and how they are decoded
SPEECH = "Speech"  # what is said in the video: subtitles and transcribed speech in the prompt
OUTPUT = "Output"  # the answer and what is printed
ENGINE = "Engine"  # where the work runs: this process, or Ray actors
SERVER = "Server"  # `serve`: where it listens, what it may read and fetch, how much it queues
HELP_PANELS = (BASICS, MODEL, METHOD, SAMPLING, SPEECH, OUTPUT, ENGINE, SERVER)


def _fraction(text: str) -> float:
    """--ratio's value, read so that "25%" is answered with what to write instead."""
    try:
        return float(text)
    except ValueError:
        percent = text.strip().removesuffix("%")
        if percent != text.strip() and _is_number(percent):
            raise typer.BadParameter(f"--ratio is a fraction of the visual tokens in (0, 1]: write "
                                     f"{float(percent) / 100:g}, not {text!r}") from None
        raise typer.BadParameter(f"--ratio is a fraction of the visual tokens in (0, 1], such as 0.25, not {text!r}") from None


def _tolerance(text: str | int | None) -> int | None:
    """--repeats' value: levels a repeated frame may be off by, or off (every frame encoded); the default
    comes as it is."""
    if not isinstance(text, str):
        return text
    if text.strip().lower() == "off":
        return None
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"--repeats is 0 to 255 levels, or off, not {text!r}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# The options every command that runs the pipeline shares, each defined once, in the order --help lists
# them within their panels. A command whose model loads shows `_random_weights_note` before it loads.
_PIPELINE_OPTIONS = [
    ("model", Annotated[str, typer.Option(
        "--model", "-m", metavar="NAME", envvar=MODEL_ENV_VAR, show_envvar=True, rich_help_panel=MODEL,
        help="Hub id, local model directory, or (--random-weights) a preset.")],
     DEFAULT_MODEL),
    ("random_weights", Annotated[bool, typer.Option(
        "--random-weights", rich_help_panel=MODEL,
        help="No download: random weights in the model's shape (noise answers, real speed); --model "
        "may then name a preset, such as qwen3.5-0.8b.")],
     False),
    ("device", Annotated[Device, typer.Option(
        "--device", metavar="NAME", rich_help_panel=MODEL, help="auto, cpu, cuda or mps.")], _DEFAULTS.device),
    ("dtype", Annotated[DType, typer.Option(
        "--dtype", metavar="NAME", rich_help_panel=MODEL,
        help="auto, float32, bfloat16 or float16.")],
     _DEFAULTS.dtype),
    ("think", Annotated[bool, typer.Option(
        "--think", rich_help_panel=MODEL, help="Reason before answering (Qwen3.5): the reasoning is "
        "kept out of the answer.")],
     _DEFAULTS.think),
    ("trust_remote_code", Annotated[bool, typer.Option(
        "--trust-remote-code", rich_help_panel=MODEL, help="Let code shipped with the model run.")],
     False),
    ("method", Annotated[Method, typer.Option(
        "--method", metavar="METHOD", rich_help_panel=METHOD,
        help="dytok-fastv: question-aware, pruned in one prefill; dytok: the same from a separate prior "
        "pass; visionzip: even budgets; none: every token.")],
     _DEFAULTS.method),
    ("ratio", Annotated[Optional[float], typer.Option(
        "--ratio", "-r", metavar="R", show_default=f"{DEFAULT_RATIO:g}, or 1 with --method none", parser=_fraction,
        rich_help_panel=METHOD, help="Fraction of visual tokens kept, in (0, 1].")],
     None),
    ("prior_model", Annotated[Optional[str], typer.Option(
        "--prior-model", metavar="NAME", rich_help_panel=METHOD,
        help="dytok: a smaller model of the family for the prior.")],
     None),
    ("prior_layers", Annotated[Optional[str], typer.Option(
        "--prior-layers", metavar="LAYERS", rich_help_panel=METHOD,
        help="Layers read for the prior: all, A-B or L (default: the deepest third for dytok, up to "
        "--prune-layer for dytok-fastv; full-attention ones only).")],
     None),
    ("prune_layer", Annotated[Optional[int], typer.Option(
        "--prune-layer", metavar="K", rich_help_panel=METHOD,
        help="dytok-fastv: prune after this layer (default: the first quarter's last).")],
     None),
    ("frames", Annotated[int, typer.Option(
        "--frames", "-n", metavar="N", rich_help_panel=SAMPLING, help="Frames sampled evenly over the video.")],
     _DEFAULTS.frames),
    ("fps", Annotated[Optional[float], typer.Option(
        "--fps", metavar="RATE", rich_help_panel=SAMPLING,
        help="Frames per second to sample, instead of --frames.")], None),
    ("max_frames", Annotated[Optional[int], typer.Option(
        "--max-frames", metavar="N", rich_help_panel=SAMPLING,
        help="With --fps: at most this many (default: --frames).")], None),
    ("max_pixels", Annotated[Optional[int], typer.Option(
        "--max-pixels", metavar="N", rich_help_panel=SAMPLING,
        help="Qwen: at most N pixels a frame (fewer tokens).")], _DEFAULTS.max_pixels),
    ("repeats", Annotated[Optional[int], typer.Option(
        "--repeats", metavar="N|off", rich_help_panel=SAMPLING, parser=_tolerance, show_default=False,
        help="Encode a frame within N levels of the last once.")],
     _DEFAULTS.repeats),
    ("backend", Annotated[Backend, typer.Option(
        "--backend", metavar="NAME", rich_help_panel=SAMPLING,
        help="Video decoder: auto (the first that works), decord, pyav or opencv.")],
     _DEFAULTS.backend),
    ("decode_timeout", Annotated[Optional[float], typer.Option(
        "--decode-timeout", metavar="SECONDS", rich_help_panel=SAMPLING,
        help="Give up decoding a video after this long (0: never).")],
     _DEFAULTS.decode_timeout),
    ("verbose", Annotated[bool, typer.Option(
        "--verbose", rich_help_panel=OUTPUT,
        help="Show the libraries' warnings on stderr.")],
     False),
    ("prefix_cache", Annotated[bool, typer.Option(
        "--prefix-cache/--no-prefix-cache", rich_help_panel=MODEL,
        help="Reuse a video's prefix across its questions.")],
     _DEFAULTS.prefix_cache),
    ("cache_dir", Annotated[Optional[Path], typer.Option(
        "--cache-dir", metavar="DIR", rich_help_panel=MODEL,
        help="Keep frames and vision features here for later runs.")], None),
]

# What is said in the video, for the commands that answer questions about it (ask, inspect, eval).
_SPEECH_OPTIONS = [
    ("subtitles", Annotated[Optional[str], typer.Option(
        "--subtitles", metavar="FILE|DIR|auto", rich_help_panel=SPEECH, help="Subtitle lines said over the sampled frames go "
        "in the prompt: from an SRT/WebVTT FILE, the file named like the video in DIR, or auto (talk.srt beside talk.mp4).")],
     None),
    ("speech", Annotated[bool, typer.Option(
        "--speech", rich_help_panel=SPEECH, help="Where no subtitles: transcribe the audio track.")],
     False),
    ("speech_model", Annotated[Optional[str], typer.Option(
        "--speech-model", metavar="NAME", rich_help_panel=SPEECH, help=f"--speech: a Whisper checkpoint.  [default: {DEFAULT_SPEECH_MODEL}]")],
     None),
]


def _random_weights_note(options: dict[str, Any]) -> None:
    """Said on stderr once a command's checks passed, before its model loads: the answers mean nothing."""
    if options.get("random_weights"):
        render.note("--random-weights: the model's weights are random, so its answers and budgets are noise "
                    "(its speed and memory are the real shape's)")


_HELP_FLAG_WIDTH = 22  # columns for an option's flags in --help, so that 80 columns leave 54 for what it does


class PlainHelpCommand(TyperCommand):
    """A command whose --help names its arguments as they are written (`VIDEO... [QUESTION]`), without
    Typer's type annotations (`<list[str]>`, `{...}`) that read as internals, and lists its options in
    the `HELP_PANELS` they name."""

    def _arguments(self, context: typer.Context) -> list[Any]:
        return [param for param in self.get_params(context) if param.param_type_name == "argument"]

    def collect_usage_pieces(self, context: typer.Context) -> list[str]:
        return [self.options_metavar or "", *(param.metavar or param.name.upper() for param in self._arguments(context))]

    def format_options(self, context: typer.Context, formatter: Any) -> None:
        arguments = [(param.metavar or param.name.upper(), param.help or "") for param in self._arguments(context)]
        panels: dict[str, list[tuple[str, str]]] = {panel: [] for panel in HELP_PANELS}
        for param in self.get_params(context):
            if param.param_type_name == "option" and (record := param.get_help_record(context)):
                # --help is Click's own option, with no panel.
                panels.setdefault(getattr(param, "rich_help_panel", None) or BASICS, []).append(record)
        # One column for the flags in every panel, so the panels read as one list; a longer flag has its own line.
        width = min(max((len(term) for section in (arguments, *panels.values()) for term, _ in section), default=0),
                    _HELP_FLAG_WIDTH)
        for title, rows in (("Arguments", arguments), *panels.items()):
            if rows:
                with formatter.section(title):
                    formatter.write_dl([(term.ljust(width), text) for term, text in rows], col_max=width)


def pipeline_options(
    *, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None, extra: list[tuple] = ()
) -> Callable:
    """Give a command the shared pipeline options (all but `exclude`, with `defaults` overridden), then `extra`
    ones defined like them (options that some pipeline commands share, such as `_SPEECH_OPTIONS`).

    They are added to the command's signature, which is what Typer reads, and reach the command as one
    `options` dict, from which `_settings` builds the `Settings`.
    """

    def decorate(command: Callable) -> Callable:
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=(defaults or {}).get(name, default))
            for name, annotation, default in [*_PIPELINE_OPTIONS, *extra]
            if name not in exclude
        ]
        own = inspect.signature(command, eval_str=True)
        parameters = [parameter for name, parameter in own.parameters.items() if name != "options"]

        def with_options(**arguments: Any) -> Any:
            options = {parameter.name: arguments.pop(parameter.name) for parameter in shared}
            if options.get("random_weights") and options.get("cache_dir"):
                raise typer.BadParameter("--cache-dir keeps vision features for later runs, but --random-weights "
                                         "draws new weights every run: drop one of them")
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


# The Ray flags `ask` and `summarize` share (each has its own --engine help and further Ray-only flags).
_WORKERS = Annotated[Optional[int], typer.Option(
    "--workers", metavar="N", rich_help_panel=ENGINE, help=f"--engine ray: actors, a model each (default {RayOptions.workers}).")]
_GPUS_PER_WORKER = Annotated[Optional[float], typer.Option(
    "--gpus-per-worker", metavar="G", rich_help_panel=ENGINE,
    help="--engine ray: GPUs per actor (1 on a GPU, else 0).")]
_RAY_ADDRESS = Annotated[Optional[str], typer.Option(
    "--ray-address", metavar="ADDRESS", rich_help_panel=ENGINE, help="--engine ray: a cluster to join (auto or HOST:PORT).")]


def _refuse_ray_flags_without_ray(engine: Engine, workers: int | None, gpus_per_worker: float | None,
                                  ray_address: str | None, own: dict[str, bool] | None = None) -> None:
    """A Ray flag given with the local engine is a usage error naming every such flag; `own`: a command's
    further Ray-only flags, each with whether it was given."""
    flags = {"--workers": workers is not None, "--gpus-per-worker": gpus_per_worker is not None,
             "--ray-address": ray_address is not None, **(own or {})}
    if engine is Engine.local and any(flags.values()):
        raise typer.BadParameter(f"{', '.join(flag for flag, given in flags.items() if given)}: only used with --engine ray")


def _ray_options(workers: int | None, gpus_per_worker: float | None, ray_address: str | None) -> RayOptions:
    """The Ray flags given, over `RayOptions`' defaults; a bad value is a usage error."""
    given = {"workers": workers, "gpus_per_worker": gpus_per_worker, "address": ray_address}
    try:
        return RayOptions(**{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


_REASONING_TOKENS_HELP = "Longest reasoning, in tokens (--think, or a model that always reasons)."


@app.command(cls=PlainHelpCommand, short_help="Answer questions about videos.")
@pipeline_options(extra=_SPEECH_OPTIONS)
def ask(
    arguments: Annotated[
        list[str],
        typer.Argument(
            metavar="VIDEO... [QUESTION]",
            help="Videos, folders, or - (paths on stdin); without -q, a last argument "
            "that names no video is the question.",
            show_default=False,
        ),
    ],
    question: Annotated[Optional[list[str]], typer.Option(
        "--question", "-q", metavar="TEXT", rich_help_panel=BASICS, help="A question (repeat for several).")] = None,
    questions_file: Annotated[Optional[Path], typer.Option(
        "--questions", metavar="FILE", rich_help_panel=BASICS, help="File with one question per line.")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", rich_help_panel=BASICS, help="Look for videos in subdirectories too.")] = False,
    null_separated: Annotated[bool, typer.Option(
        "-0", "--null", rich_help_panel=BASICS, help="Paths on stdin (-) are NUL-separated.")] = False,
    whole: Annotated[bool, typer.Option(
        "--whole", rich_help_panel=BASICS, help="Score every window, answer from the best (slower).")] = False,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", metavar="N", rich_help_panel=OUTPUT, help="Longest answer, in tokens.")] = _DEFAULTS.max_new_tokens,
    max_reasoning_tokens: Annotated[int, typer.Option(
        "--max-reasoning-tokens", metavar="N", rich_help_panel=OUTPUT,
        help=_REASONING_TOKENS_HELP)] = _DEFAULTS.max_reasoning_tokens,
    show_reasoning: Annotated[bool, typer.Option(
        "--show-reasoning", rich_help_panel=OUTPUT, help="Show the reasoning on stderr, dimmed, as it comes.")] = False,
    temperature: Annotated[float, typer.Option(
        "--temperature", metavar="T", rich_help_panel=OUTPUT, help="0 decodes greedily; above 0 samples.")] = _DEFAULTS.temperature,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", metavar="N", rich_help_panel=OUTPUT, help="Seed for sampling (--temperature above 0).")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", rich_help_panel=OUTPUT, help="Print a JSON record (an array for several pairs).")] = False,
    jsonl_output: Annotated[bool, typer.Option(
        "--jsonl", rich_help_panel=OUTPUT, help="Print a JSON record per line as each pair completes.")] = False,
    engine: Annotated[Engine, typer.Option(
        "--engine", metavar="NAME", rich_help_panel=ENGINE,
        help=f"local, or ray: Ray actors ({install_hint('ray')}).")] = Engine.local,
    workers: _WORKERS = None,
    gpus_per_worker: _GPUS_PER_WORKER = None,
    ray_address: _RAY_ADDRESS = None,
    output_dir: Annotated[Optional[Path], typer.Option(
        "--output", metavar="DIR", rich_help_panel=ENGINE,
        help="--engine ray: write records to DIR, resumably.")] = None,
    output_format: Annotated[Optional[OutputFormat], typer.Option(
        "--format", metavar="FORMAT", rich_help_panel=ENGINE, help="--output: jsonl (default) or parquet.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", rich_help_panel=ENGINE, help="--output: replace DIR if it holds anything else.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Answer questions about videos (default question: "Describe this video.")."""
    settings = _settings(options, max_new_tokens=max_new_tokens, max_reasoning_tokens=max_reasoning_tokens,
                         temperature=temperature, seed=seed)
    if show_reasoning and engine is not Engine.local:
        raise typer.BadParameter("--show-reasoning shows what this process generates: only with --engine local")
    if json_output and jsonl_output:
        raise typer.BadParameter("--json and --jsonl cannot be used together")
    _refuse_ray_flags_without_ray(engine, workers, gpus_per_worker, ray_address, {"--output": output_dir is not None})
    if output_dir is None and (output_format is not None or force):
        raise typer.BadParameter("--format and --force: only used with --output DIR")
    if output_dir is not None and (json_output or jsonl_output):
        raise typer.BadParameter("--output writes the records to DIR; drop --json/--jsonl")
    ray_options = _ray_options(workers, gpus_per_worker, ray_address)
    if whole:
        _check_whole(options, local=engine is Engine.local and output_dir is None)
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
    if single and not Path(inputs[0]).exists() and not (json_output or jsonl_output or output_dir):
        # Said before torch loads; where a record is promised (--json, --jsonl, --output) it says so instead.
        raise DytokError(f"{inputs[0]}: no such file")
    if stdin in inputs and sys.stdin.isatty():
        separator = "NUL-separated" if null_separated else "one per line"
        render.note(f"reading video paths from stdin ({separator}); end with Ctrl-D")
    videos = list(given_inputs.expand_inputs(inputs, recursive=recursive, stdin=sys.stdin, nul=null_separated))
    if inputs == [stdin] and not videos:
        raise DytokError("no video paths on stdin")
    if not videos:
        extensions = ", ".join(sorted(given_inputs.VIDEO_EXTENSIONS))
        raise DytokError(f"no video files in {' '.join(inputs)} (extensions: {extensions})")
    _check_subtitles(options["subtitles"], videos=len(videos))
    # With the local engine the videos ahead of the first usable one are refused before anything loads (Ray's
    # workers check their own).
    local = engine is Engine.local and output_dir is None
    refused = _refused_before_loading(videos, settings.decode_timeout) if local else []
    pairs = len(videos) * len(questions)
    stream = engine is Engine.local and not (json_output or jsonl_output) and render.stdout_is_terminal()
    progress = render.BatchProgress(pairs, live=pairs > 1)  # shown once the answering starts
    collected: list[dict] = []
    errors: list[str] = []
    completed = 0

    def deliver(record: dict[str, Any]) -> None:
        nonlocal completed
        completed += 1
        progress.advance()
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

    if refused:
        from .methods import strategy
        from .record import error_record

        prior_name = strategy(settings.method).prior_model(settings.model, settings.prior_model)
        for video, reason in zip(videos, refused):
            for asked in questions:
                deliver(error_record(video, asked, settings, prior_name, reason))
    failed_in_folder = 0
    if len(refused) < len(videos):
        try:
            failed_in_folder = _answer(settings, videos[len(refused):], questions, deliver, progress, options=options, engine=engine,
                    ray_options=ray_options, stream=stream, headings=pairs > 1, show_reasoning=show_reasoning,
                    output_dir=output_dir, output_format=output_format, force=force, whole=whole)
        except KeyboardInterrupt:
            render.end_line()  # a partly streamed answer: the message goes below it
            raise Interrupted(f"interrupted after {completed} of {pairs} answers") from None
    if json_output:
        render.write_json(collected[0] if pairs == 1 else collected)
    if errors and single:
        raise DytokError(errors[0])
    return EXIT_FAILED if errors or failed_in_folder else EXIT_OK


def _refused_before_loading(videos: list[str], timeout_s: float | None) -> list[str]:
    """Why each video ahead of the first usable one cannot be used (a line naming it), found by the decoders'
    quick probe without torch: a model loads at the first video it can answer about, so a run whose videos
    are all unusable loads none. Each probe is bounded by --decode-timeout (0 or None: no limit), as decoding is."""
    from .errors import about
    from .media.video import VideoError, call_bounded, check_video

    refused = []
    for video in videos:
        try:
            call_bounded(check_video, video, timeout_s=timeout_s or None, what="probing")
        except VideoError as error:
            refused.append(about(video, error))
        else:
            break
    return refused


def _check_whole(options: dict[str, Any], local: bool) -> None:
    """--whole's usage errors: the flags it does not take."""
    if not local:
        raise typer.BadParameter("--whole answers in this process: not with --engine ray")
    sampling = [flag for flag, name in (("--fps", "fps"), ("--max-frames", "max_frames")) if options[name] is not None]
    if sampling:
        raise typer.BadParameter(f"{', '.join(sampling)}: not with --whole, which samples every window as summarize "
                                 "does; --frames is how many frames its answer sees")
    if options["subtitles"] is not None or options["speech"]:
        raise typer.BadParameter("--subtitles and --speech are not yet part of a --whole answer")


def _answer(settings: Settings, videos: list[str], questions: list[str], deliver: Callable[[dict[str, Any]], None],
            progress: render.BatchProgress, *, options: dict[str, Any], engine: Engine, ray_options: RayOptions,
            stream: bool, headings: bool, show_reasoning: bool, output_dir: Path | None,
            output_format: OutputFormat | None, force: bool, whole: bool) -> int:
    """`ask`'s answering, once its arguments are checked: every question on every video, each pair's record
    to `deliver` as it completes; with --output the records go into that folder instead, and the number of
    failed pairs is returned. With `whole`, each question is answered from the whole video."""
    _random_weights_note(options)
    cache_dir = options["cache_dir"]
    # Imported here so `--help` and usage errors answer without loading torch.
    with render.status("Loading…"):
        from . import batch
        from .media.cache import VisualCache
        from .media.video import thinning_note
        from .pipeline import Pipeline
        from .windowed import Segmentation, sparse_note

    if output_dir is not None:
        return ray_engine.write(settings, videos, questions, output_dir, options=ray_options, note=render.note,
                                error=render.error, output_format=output_format or OutputFormat.jsonl, force=force,
                                cache_dir=cache_dir)
    pipeline = Pipeline(settings, cache=VisualCache(cache_dir) if cache_dir else None)

    def before_pair(video: str, question: str) -> None:
        progress.start_video(video)
        if stream and headings:
            with progress.paused():
                render.write(f"# {video}: {question}\n")

    hinted = False

    def prepared(visual: Any) -> None:
        nonlocal hinted
        # Said of the first video whose frames lie far apart, once: the flag is the same for the rest.
        sparse = None if hinted else sparse_note(visual.frames)
        hinted = hinted or sparse is not None
        for note in (thinning_note(visual.frames), visual.transcript and visual.transcript.note, sparse):
            if note:
                progress.note(f"{visual.video}: {note}")

    def emit(outcome: batch.Outcome) -> None:
        deliver(outcome.record)

    with progress:
        if engine is Engine.ray:
            ray_engine.run(settings, videos, questions, emit, options=ray_options, note=progress.note, cache_dir=cache_dir)
        else:
            batch.run(
                pipeline, videos, questions, emit, on_pair=before_pair, on_prepared=prepared, on_stage=progress.stage,
                on_text=progress.streaming(render.write) if stream else None,
                on_reasoning=progress.streaming(render.reasoning) if show_reasoning else None,
                whole=Segmentation() if whole else None,
            )
    return 0


@app.command("inspect", cls=PlainHelpCommand, short_help="Show where the visual tokens go; export keyframes.")
@pipeline_options(extra=_SPEECH_OPTIONS)
def inspect_command(
    video: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file.", show_default=False)],
    question_argument: Annotated[
        Optional[str], typer.Argument(metavar="[QUESTION]", help="The question (or give it with -q).", show_default=False)
    ] = None,
    question: Annotated[
        Optional[str],
        typer.Option(
            "--question", "-q", metavar="TEXT", rich_help_panel=BASICS,
            help=f"Question the keyframe prior is computed for (default: {DEFAULT_QUESTION!r}).",
        ),
    ] = None,
    show_budgets: Annotated[
        Optional[bool],
        typer.Option(
            "--show-budgets/--no-show-budgets", rich_help_panel=OUTPUT,
            help="Print the per-frame budget table on stdout (default: on, except with --json, or with "
            "--export-keyframes when stdout is not a terminal).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Print the JSON record: ask's without answer and reasoning, plus each frame's rank.")
    ] = False,
    export_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--export-keyframes", metavar="DIR", rich_help_panel=OUTPUT, help="Write the top-ranked frames and keyframes.json/.csv to DIR."
        ),
    ] = None,
    top: Annotated[
        Optional[int],
        typer.Option("--top", min=1, metavar="K", rich_help_panel=OUTPUT, help=f"Keyframes to export (default {DEFAULT_TOP}, at most the frames sampled)."),
    ] = None,
    image_format: Annotated[
        Optional[ImageFormat], typer.Option("--format", metavar="FORMAT", rich_help_panel=OUTPUT, help="Keyframe image format: jpg (default) or png.")
    ] = None,
    sheet: Annotated[
        bool,
        typer.Option("--sheet", rich_help_panel=OUTPUT, help="Also write DIR/contact_sheet.png: every frame, its budget, the top K outlined."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", rich_help_panel=OUTPUT, help="Replace DIR if it exists and is not empty.")] = False,
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
    _check_subtitles(options["subtitles"], videos=1)
    if show_budgets is None:
        # A script that only wants files (or JSON) gets a clean stdout; a bare run still shows the table.
        show_budgets = not json_output and (export_dir is None or render.stdout_is_terminal())
    # Imported here so `--help` and usage errors answer without loading torch; a refused target too.
    from .apps import export

    if export_dir is not None:
        export.check_target(export_dir, force)
    if refused := _refused_before_loading([video], settings.decode_timeout):
        raise DytokError(refused[0])
    _random_weights_note(options)
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
        for note in (thinning_note(visual.frames), visual.transcript and visual.transcript.note):
            if note:
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
    """The display of one video gone through window by window (`summarize`'s, `find`'s): on a terminal its
    stage, then windows done/total with an ETA once the windows are known; else a plain line per window done
    and per step, so a long run is never silent in a log."""

    def __init__(self, video: str, command: str = "summarize", verb: str = "described") -> None:
        self.video, self.command, self.verb = video, command, verb
        self.total = 0
        self.bar = render.BatchProgress(0, live=False)
        self.bar.start_video(video)
        self.bar.__enter__()

    def windows(self, total: int, done: int) -> None:
        self.bar.__exit__(None, None, None)
        self.total = total
        if done:
            render.note(f"{self.video}: {done} of {total} windows already described (--cache-dir); resuming")
        # Counted from the windows left, so the ETA reflects this run's speed.
        self.bar = render.BatchProgress(total - done)
        self.bar.start_video(self.video)
        self.bar.__enter__()

    def stage(self, message: str) -> None:
        self.bar.stage(message)

    def step(self, message: str) -> None:
        self.bar.stage(message)
        render.progress_line(f"{self.command}: {self.video}: {message[:1].lower()}{message[1:]}")

    def window_done(self, index: int, window: Window, seconds: float) -> None:
        self.bar.advance()
        span = f"{short_hms(window.start)}-{short_hms(window.end)}"
        render.progress_line(f"{self.command}: {self.video}: window {index + 1}/{self.total} ({span}) {self.verb} in {seconds:.1f} s")

    described = scored = window_done  # what summarize and find call it

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


# How `summarize` and `find` cut a long video into windows and sample it (`windowed.py`).
_WINDOW = Annotated[Optional[float], typer.Option(
    "--window", metavar="SECONDS", rich_help_panel=SAMPLING, help="Fixed windows of this length instead of windows at shot cuts.")]
_MIN_WINDOW = Annotated[float, typer.Option(
    "--min-window", metavar="SECONDS", rich_help_panel=SAMPLING, help="Shots shorter than this join the next one.")]
_MAX_WINDOW = Annotated[float, typer.Option(
    "--max-window", metavar="SECONDS", rich_help_panel=SAMPLING, help="Longer shots are split into equal windows of at most this.")]
_WINDOW_FPS = Annotated[Optional[float], typer.Option(
    "--fps", metavar="RATE", show_default=f"{SUMMARY_FPS['cpu']:g} on a CPU, {SUMMARY_FPS['accelerator']:g} on a GPU",
    rich_help_panel=SAMPLING, help="Frames sampled per second over the whole video.")]
_WINDOW_MAX_FRAMES = Annotated[int, typer.Option(
    "--max-frames", metavar="N", rich_help_panel=SAMPLING, help="The most frames one window keeps (thinned uniformly).")]


def _segmentation(window: float | None, min_window: float, max_window: float) -> Segmentation:
    """The windows' flags as a `Segmentation`; a combination that does not fit is a usage error."""
    from .windowed import Segmentation

    if window is not None and (min_window, max_window) != (SUMMARY_MIN_WINDOW_S, SUMMARY_MAX_WINDOW_S):
        raise typer.BadParameter("--min-window and --max-window shape windows at shot cuts; --window makes fixed ones")
    try:
        return Segmentation(window=window, min_window=min_window, max_window=max_window)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command(cls=PlainHelpCommand, short_help="Chapters and a summary of long videos, window by window.")
@pipeline_options(exclude=("frames", "fps", "max_frames", "cache_dir"), extra=_SPEECH_OPTIONS)
def summarize(
    arguments: Annotated[
        list[str],
        typer.Argument(metavar="VIDEO...", help="Video files, directories of videos, or - to read paths from stdin.",
                       show_default=False),
    ],
    output_format: Annotated[Optional[SummaryFormat], typer.Option(
        "--format", metavar="FORMAT", rich_help_panel=OUTPUT, help="md (summary, then chapters; the default), json (windows, shot cuts, "
        "chapters, summary, timings), vtt or srt (a cue per chapter), youtube (chapter lines for a description), "
        "ffmetadata (chapters for `ffmpeg -map_chapters`).")] = None,
    # A str, read as written: a Path would drop the trailing "/" that makes a new DIR of `-o DIR/`.
    output_given: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE|DIR", rich_help_panel=OUTPUT, help="Write to FILE (one video) or into DIR as VIDEO_NAME.md, .json, "
        ".vtt, .srt, .youtube.txt or .ffmetadata (a DIR for several videos), each file whole or not at all.")] = None,
    force: Annotated[bool, typer.Option("--force", rich_help_panel=OUTPUT, help="--output: replace files that exist.")] = False,
    jsonl_output: Annotated[bool, typer.Option("--jsonl", rich_help_panel=OUTPUT, help="Print one JSON record per video, on one line, as each completes.")] = False,
    window: _WINDOW = None,
    min_window: _MIN_WINDOW = SUMMARY_MIN_WINDOW_S,
    max_window: _MAX_WINDOW = SUMMARY_MAX_WINDOW_S,
    fps: _WINDOW_FPS = None,
    max_frames: _WINDOW_MAX_FRAMES = SUMMARY_MAX_FRAMES,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", metavar="N", rich_help_panel=OUTPUT, help="Longest text the model writes at a time (a window's description, "
        "a chapter, the summary), in tokens.")] = SUMMARY_MAX_NEW_TOKENS,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", metavar="DIR", rich_help_panel=MODEL, help="Keep each video's shot cuts and described windows here as they "
        "complete, so a run stopped by Ctrl-C or a crash resumes where it was.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", rich_help_panel=BASICS, help="Look for videos in subdirectories too.")] = False,
    null_separated: Annotated[bool, typer.Option("-0", "--null", rich_help_panel=BASICS, help="Paths on stdin (-) are NUL-separated.")] = False,
    engine: Annotated[Engine, typer.Option(
        "--engine", metavar="NAME", rich_help_panel=ENGINE,
        help=f"local, or ray: whole videos spread over Ray actors ({install_hint('ray')}).")] = Engine.local,
    workers: _WORKERS = None,
    gpus_per_worker: _GPUS_PER_WORKER = None,
    ray_address: _RAY_ADDRESS = None,
    *,
    options: dict[str, Any],
) -> int:
    """Summarise long videos as timestamped chapters and one summary, window by window in bounded memory."""
    from .apps import summarize as summarizing  # torch-free until a model is needed
    from .media import inputs as given_inputs

    fmt = output_format or SummaryFormat.md
    if jsonl_output and output_format not in (None, SummaryFormat.json):
        raise typer.BadParameter("--jsonl prints JSON records; drop --format")
    if jsonl_output and output_given is not None:
        raise typer.BadParameter("--jsonl prints to stdout; drop --output")
    if force and output_given is None:
        raise typer.BadParameter("--force: only used with --output")
    _refuse_ray_flags_without_ray(engine, workers, gpus_per_worker, ray_address)
    ray_options = _ray_options(workers, gpus_per_worker, ray_address)
    if options["random_weights"] and cache_dir is not None:
        raise typer.BadParameter("--cache-dir keeps described windows for a later run, but --random-weights draws "
                                 "new weights every run: drop one of them")
    segmentation = _segmentation(window, min_window, max_window)
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
    _check_subtitles(options["subtitles"], videos=len(videos))
    targets = summarizing.output_targets(videos, output_given, fmt, force)

    if engine is Engine.ray:
        ray_engine.require_ray()

    local = engine is Engine.local
    # As in `ask`: the videos ahead of the first usable one are refused before anything loads, locally.
    refused = _refused_before_loading(videos, options["decode_timeout"]) if local else []
    printing_records = jsonl_output or (fmt is SummaryFormat.json and output_given is None)
    if len(refused) == len(videos) and not printing_records:  # nothing to summarise, and no record to print
        if single:
            raise DytokError(refused[0])
        for reason in refused:
            render.error(reason)
        return EXIT_FAILED
    if len(refused) < len(videos):
        _random_weights_note(options)
    with render.status("Loading…"):
        from .methods import strategy
        from .windowed import default_fps

        rate = fps if fps is not None else default_fps(options["device"])
    settings = _settings(options, fps=rate, max_frames=max_frames, max_new_tokens=max_new_tokens)
    prior_name = strategy(settings.method).prior_model(settings.model, settings.prior_model)
    batch = summarizing.Batch(videos, settings, prior_name, segmentation, _SummaryDisplay(), fmt=fmt, targets=targets,
                              force=force, jsonl=jsonl_output, single=single, cache_dir=cache_dir)
    batch.refuse(refused)
    if local and len(refused) < len(videos):
        with render.status("Loading…"):
            from .media.cache import VisualCache
            from .pipeline import Pipeline
        # The cache folder keeps a transcript too (--speech), beside the described windows.
        batch.run(Pipeline(settings, cache=VisualCache(cache_dir) if cache_dir else None), start=len(refused))
    elif not local:
        done = 0

        def emit(number: int, outcome: summarizing.Outcome) -> None:
            nonlocal done
            done += 1
            bar.advance()
            if outcome.summary is not None:  # a failure says so in its own line
                render.progress_line(f"summarize: {outcome.video}: summarised on Ray ({done}/{len(videos)} videos)")
            with bar.paused():
                batch.deliver(number, outcome)

        with render.BatchProgress(len(videos), live=len(videos) > 1) as bar:
            bar.stage("Summarising on Ray")
            render.progress_line(f"summarize: {len(videos)} video{'s' if len(videos) > 1 else ''} on Ray; a line as each is summarised")
            try:
                ray_engine.map_videos(settings, videos, batch.job(), emit, options=ray_options, note=bar.note, cache_dir=cache_dir)
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted after {done} of {len(videos)} videos; {batch.resume_hint()}") from None
    if (records := batch.printed_at_the_end()) is not None:
        render.write_json(records)
    if batch.errors and single:
        raise DytokError(batch.errors[0])
    return EXIT_FAILED if batch.errors else EXIT_OK


class _SummaryDisplay:
    """Where `summarize`'s batch shows itself: a live display per video on stderr, results on stdout."""

    def progress(self, video: str) -> _WindowProgress:
        return _WindowProgress(video)

    def error(self, message: str) -> None:
        render.error(message)

    def note(self, message: str) -> None:
        render.note(message)

    def record(self, record: dict[str, Any]) -> None:
        render.write_json(record, indent=None)

    def text(self, text: str) -> None:
        render.write(text)


@app.command(cls=PlainHelpCommand, short_help="The time ranges a query points at, ranked; clips of them.")
@pipeline_options(exclude=("method", "ratio", "prior_model", "prune_layer", "think", "prefix_cache", "frames", "fps", "max_frames"))
def find(
    target: Annotated[str, typer.Argument(metavar="VIDEO_OR_FOLDER", help="A video file, or a folder of videos.", show_default=False)],
    query: Annotated[str, typer.Argument(metavar="QUERY", help="What to look for: a question or a description.", show_default=False)],
    recursive: Annotated[bool, typer.Option("--recursive", rich_help_panel=BASICS, help="A folder's subfolders too.")] = False,
    top: Annotated[int, typer.Option(
        "--top", min=1, metavar="K", rich_help_panel=OUTPUT, help="How many time ranges: the best K over all the videos.")] = FIND_TOP,
    json_output: Annotated[bool, typer.Option(
        "--json", rich_help_panel=OUTPUT, help="Print one JSON record: the ranges, and every window of every video scored.")] = False,
    jsonl_output: Annotated[bool, typer.Option(
        "--jsonl", rich_help_panel=OUTPUT, help="Print a JSON record per range, best first (and per video that failed).")] = False,
    clip_dir: Annotated[Optional[Path], typer.Option(
        "--clip", metavar="DIR", rich_help_panel=OUTPUT, help="Cut each range out into DIR as VIDEO_NAME.START-END.mp4 (ffmpeg).")] = None,
    force: Annotated[bool, typer.Option("--force", rich_help_panel=OUTPUT, help="--clip: replace these videos' clips in DIR.")] = False,
    window: _WINDOW = None,
    min_window: _MIN_WINDOW = SUMMARY_MIN_WINDOW_S,
    max_window: _MAX_WINDOW = SUMMARY_MAX_WINDOW_S,
    fps: _WINDOW_FPS = None,
    max_frames: _WINDOW_MAX_FRAMES = SUMMARY_MAX_FRAMES,
    *,
    options: dict[str, Any],
) -> int:
    """Find where a video, or each video of a folder, shows what QUERY asks for: the best time ranges, ranked
    by the keyframe prior's score (the model's attention from the query to each window's frames; nothing is
    generated), each with its video and the moment it points at most."""
    if json_output and jsonl_output:
        raise typer.BadParameter("--json and --jsonl cannot be used together")
    if force and clip_dir is None:
        raise typer.BadParameter("--force: only used with --clip DIR")
    if not query.strip():
        raise typer.BadParameter("QUERY is empty: say what to look for")
    segmentation = _segmentation(window, min_window, max_window)
    from .apps import find as finding  # torch-free until a model is needed
    from .media import inputs as given_inputs

    folder = Path(target).is_dir()
    if not folder and not Path(target).exists():
        raise DytokError(f"{target}: no such file or folder")
    videos = list(given_inputs.expand_inputs([target], recursive=recursive, stdin=sys.stdin, nul=False))
    if not videos:
        extensions = ", ".join(sorted(given_inputs.VIDEO_EXTENSIONS))
        raise DytokError(f"no video files in {target} (extensions: {extensions})")
    ffmpeg = finding.check_clips(clip_dir, videos, force) if clip_dir is not None else None
    # As in `ask`: the videos ahead of the first usable one are refused before anything loads.
    refused = _refused_before_loading(videos, options["decode_timeout"])
    if refused and not folder:
        raise DytokError(refused[0])
    if folder:
        render.note(f"{target}: searching {len(videos)} video{'s' if len(videos) > 1 else ''}")
    if len(refused) < len(videos):
        _random_weights_note(options)
    with render.status("Loading…"):
        from .media.cache import VisualCache
        from .pipeline import Pipeline
        from .windowed import default_fps

        rate = fps if fps is not None else default_fps(options["device"])
    # The prior is read as DyToK's two-pass method reads it: its layers, or those --prior-layers names.
    settings = _settings(options, method=Method.dytok, fps=rate, max_frames=max_frames)
    cache_dir = options["cache_dir"]
    pipeline = Pipeline(settings, cache=VisualCache(cache_dir) if cache_dir else None)
    found = finding.find(pipeline, videos, query, segmentation, _FindDisplay(shown=folder), top=top, refused=refused,
                         clips=clip_dir, ffmpeg=ffmpeg)
    if clip_dir is not None and found.moments:
        copied = sum(moment.clip.copied for moment in found.moments)
        render.note(f"wrote {len(found.moments)} clips to {clip_dir} ({copied} by stream copy, "
                    f"{len(found.moments) - copied} re-encoded)")
    if json_output:
        render.write_json(found.record(settings))
    elif jsonl_output:
        for item in found.searched:
            if item.error:
                render.write_json(finding.error_line(item.video, item.error), indent=None)
        for moment in found.moments:
            render.write_json(moment.record(), indent=None)
    else:
        render.find_results([moment.record() for moment in found.moments])
    if found.errors and not folder:
        raise DytokError(found.errors[0])
    return EXIT_FAILED if found.errors else EXIT_OK


class _FindDisplay:
    """Where `find` shows itself: a live display per video on stderr, and (`shown`: in a folder) a line per
    video that could not be searched as it fails; one video's failure is the command's error instead."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown

    def progress(self, video: str) -> _WindowProgress:
        return _WindowProgress(video, command="find", verb="scored")

    def error(self, message: str) -> None:
        if self.shown:
            render.error(message)


def _parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--ratios must be numbers separated by commas, not {text!r}") from None
    if not ratios or not all(0 < ratio <= 1 for ratio in ratios):
        raise typer.BadParameter(f"--ratios must each be in (0, 1], not {text!r}")
    return ratios


def _check_subtitles(where: str | None, videos: int | None) -> None:
    """--subtitles names `auto`, a directory, or one existing file for a command about one video (`videos`:
    how many the command was given; None for a data set's)."""
    if where is None or where == "auto" or Path(where).is_dir():
        return
    if not Path(where).exists():
        raise typer.BadParameter(f"--subtitles {where}: no such file or directory (or give auto)")
    if videos != 1:
        raise typer.BadParameter(f"--subtitles {where} is one video's subtitles; for several videos give a directory or auto")


@app.command(cls=PlainHelpCommand, short_help="Measure speed and memory per ratio against ratio 1.")
@pipeline_options(exclude=("method", "ratio", "fps", "max_frames", "decode_timeout", "cache_dir"), defaults={"frames": 8})
def bench(
    video: Annotated[Path, typer.Argument(help="Video file to run on.", show_default=False)],
    methods: Annotated[Optional[list[Method]], typer.Option(
        "--method", metavar="METHOD", rich_help_panel=METHOD,
        help="dytok-fastv, dytok or visionzip: a method to measure; repeat to compare several in one run "
        "(default: dytok-fastv).")] = None,
    ratios: Annotated[str, typer.Option(
        "--ratios", metavar="R,R,...", rich_help_panel=METHOD,
        help="Ratios to measure, comma-separated; 1 is the uncompressed baseline.")] = "1,0.5,0.25,0.1",
    levers: Annotated[Optional[list[Lever]], typer.Option(
        "--lever", metavar="LEVER", rich_help_panel=METHOD,
        help="reuse-repeats: a speed lever to measure on and off against the same run without it; repeat for "
        "several (each alone and all together).")] = None,
    question: Annotated[str, typer.Option(
        "--question", "-q", metavar="TEXT", rich_help_panel=BASICS, help="Question asked on every run.")] = DEFAULT_QUESTION,
    repeat: Annotated[int, typer.Option(
        "--repeat", min=1, metavar="N", rich_help_panel=BASICS,
        help="Timed runs per ratio (the median is reported, with how far the runs were apart).")] = 3,
    warmup: Annotated[int, typer.Option(
        "--warmup", min=0, metavar="N", rich_help_panel=BASICS, help="Untimed runs per ratio first.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", metavar="N", rich_help_panel=OUTPUT,
        help="Tokens generated per run (end-of-sequence ignored).")] = 32,
    json_output: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Print the results as JSON.")] = False,
    wide: Annotated[bool, typer.Option(
        "--wide", rich_help_panel=OUTPUT, help="Show every measure in the table, not only the main ones.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Measure speed and memory per ratio in one process, against ratio 1 in the same run."""
    measured = _parse_ratios(ratios)
    if wide and json_output:
        raise typer.BadParameter("--wide shapes the table; --json already prints every measure")
    if video.is_dir():
        raise DytokError(f"{video}: is a directory; bench measures one video file (name one of its videos)")
    methods = methods or [_DEFAULTS.method]
    uncompressed = [method.value for method in methods if not method.traits.compresses]
    if uncompressed:
        raise typer.BadParameter(f"--method {uncompressed[0]} has nothing to compare; ratio 1 is measured as the uncompressed baseline")
    compared = _settings(options, methods=methods, max_new_tokens=max_new_tokens, decode_timeout=None)
    from .media.video import check_video  # torch-free: a file that is no video is refused before the model loads

    check_video(video)
    _random_weights_note(options)
    with render.status("Loading…"):
        from .apps import bench as benchmark

    settings = compared[0]
    levers = list(dict.fromkeys(levers or []))  # each once, in the order given
    runs = (warmup + repeat) * len(benchmark.measured_cases(compared, measured, levers))
    with render.BatchProgress(runs) as progress:
        def finished(run: benchmark.Finished) -> None:
            progress.advance()
            if not render.console.is_terminal:  # the live line shows it on a terminal; a log gets a line per run
                render.note(f"{run.label}: {run.seconds:.2f} s; {run.done}/{run.total} runs done, "
                            f"about {render.duration(run.left_s)} left")

        results = benchmark.run(compared, video, measured, question=question, repeat=repeat, warmup=warmup,
                                levers=levers, on_progress=progress.stage, on_finished=finished)
    report = {"machine": benchmark.machine(settings), "model": settings.model, "prior_model": options["prior_model"],
              "method": ",".join(method.value for method in methods), "dtype": benchmark.dtype_name(settings),
              "frames": settings.frames, "prefix_cache": settings.prefix_cache, "random_weights": settings.random_weights,
              "levers": [lever.value for lever in levers], "results": results}
    if json_output:
        render.write_json(report)
    else:
        render.bench_table(report, wide=wide)
    return EXIT_OK


@app.command("eval", cls=PlainHelpCommand, short_help="Accuracy and speed per method and ratio on a QA set.")
@pipeline_options(exclude=("method", "ratio"), extra=_SPEECH_OPTIONS)
def eval_(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Multiple-choice items: JSONL or a JSON array (see docs/eval.md).", show_default=False)
    ],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="DIR", show_default=False, rich_help_panel=BASICS,
        help="Where predictions.jsonl, summary.json and pareto.png go; the same command again resumes there.")],
    methods: Annotated[Optional[list[Method]], typer.Option(
        "--method", metavar="METHOD", rich_help_panel=METHOD,
        help="none, visionzip, dytok or dytok-fastv: a method to evaluate; repeat for several (default: none and "
        "dytok-fastv). none runs once, at ratio 1.")] = None,
    ratios: Annotated[str, typer.Option(
        "--ratios", metavar="R,R,...", rich_help_panel=METHOD,
        help="Ratios for every method but none, comma-separated.")] = "0.5,0.25,0.1",
    video_dir: Annotated[Optional[Path], typer.Option(
        "--video-dir", metavar="DIR", rich_help_panel=BASICS,
        help="Folder of the videos: relative paths and VideoMME's videoID resolve here (default: the data file's "
        "folder).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", min=1, metavar="N", rich_help_panel=BASICS, help="Evaluate only the first N items.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", rich_help_panel=OUTPUT, help="Start over in DIR although it holds other files or another run.")] = False,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", metavar="N", rich_help_panel=OUTPUT, help="Longest answer, in tokens.")] = 16,
    max_reasoning_tokens: Annotated[int, typer.Option(
        "--max-reasoning-tokens", metavar="N", rich_help_panel=OUTPUT,
        help=_REASONING_TOKENS_HELP)] = _DEFAULTS.max_reasoning_tokens,
    json_output: Annotated[bool, typer.Option(
        "--json", rich_help_panel=OUTPUT, help="Print the summary as JSON instead of the table.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Accuracy and speed per method and ratio on a multiple-choice video QA set, resumable."""
    measured = _parse_ratios(ratios)
    _check_subtitles(options["subtitles"], videos=None)
    methods = list(dict.fromkeys(methods or [BASELINE, _DEFAULTS.method]))
    compared = _settings(options, methods=methods, max_new_tokens=max_new_tokens, max_reasoning_tokens=max_reasoning_tokens)
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
    # No model loads for a data set none of whose videos can be read: usually the first probe finds one that can.
    present = list(dict.fromkeys(item.video for item in items if item.video not in missing))
    if work and len(refused := _refused_before_loading(present, options["decode_timeout"])) == len(present):
        raise DytokError(f"none of the {len(present)} videos that exist can be read (first: {refused[0]})")
    failed = 0
    if work:
        _random_weights_note(options)
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
        render.note(f"no pareto.png: matplotlib is not installed ({install_hint('plot')})")
    if json_output:
        render.write_json(summary)
    else:
        render.eval_table(summary)
    return EXIT_FAILED if failed else EXIT_OK


# --- chat and serve: a video kept warm in one process -------------------------------------------


@app.command(cls=PlainHelpCommand, short_help="Talk about a video: questions in a row, answers streamed.")
@pipeline_options(exclude=("cache_dir",))
def chat(
    video: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file to talk about (/video PATH changes it).", show_default=False)],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", rich_help_panel=OUTPUT, metavar="N", help="Longest answer, in tokens.")] = _DEFAULTS.max_new_tokens,
    max_reasoning_tokens: Annotated[int, typer.Option(
        "--max-reasoning-tokens", metavar="N", rich_help_panel=OUTPUT, help=_REASONING_TOKENS_HELP)] = _DEFAULTS.max_reasoning_tokens,
    show_reasoning: Annotated[bool, typer.Option(
        "--show-reasoning", rich_help_panel=OUTPUT, help="Show the reasoning on stderr, dimmed, as it comes.")] = False,
    temperature: Annotated[float, typer.Option("--temperature", rich_help_panel=OUTPUT, metavar="T", help="Sampling temperature; 0 decodes greedily.")] = _DEFAULTS.temperature,
    seed: Annotated[Optional[int], typer.Option("--seed", rich_help_panel=OUTPUT, metavar="N", help="Random seed for sampling (--temperature above 0).")] = None,
    jsonl_output: Annotated[bool, typer.Option("--jsonl", rich_help_panel=OUTPUT, help="Read questions line by line and print one JSON record per answer.")] = False,
    *,
    options: dict[str, Any],
) -> int:
    """Talk about a video: on a terminal, a prompt with streamed answers (/help lists the commands);
    otherwise questions line by line from stdin, one answer per question. Earlier turns stay in the
    conversation (the answers, never the reasoning), and the video is decoded, encoded and prefilled once."""
    settings = _settings(options, max_new_tokens=max_new_tokens, max_reasoning_tokens=max_reasoning_tokens,
                         temperature=temperature, seed=seed)
    if refused := _refused_before_loading([video], settings.decode_timeout):
        raise DytokError(refused[0])
    _random_weights_note(options)
    with render.status("Loading…"):
        from .apps import chat as talk
        from .pipeline import Pipeline

    interactive = sys.stdin.isatty() and render.stdout_is_terminal() and not jsonl_output
    with render.status("Starting") as spinner:
        conversation = talk.Conversation(Pipeline(settings), video, on_stage=spinner.update if spinner else None)
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        terminal = talk.Terminal(read_line=input, write=render.write, note=render.note, error=render.error,
                                 working=render.status, reasoning=render.reasoning if show_reasoning else None)
        talk.converse(conversation, terminal)
        return EXIT_OK

    def emit(answer: Any) -> None:
        if jsonl_output:
            render.write_json(conversation.record(answer), indent=None)
        else:
            render.write(answer.text + "\n")

    failed = talk.answer_lines(conversation, sys.stdin, emit, render.error,
                               on_reasoning=render.reasoning if show_reasoning else None)
    return EXIT_FAILED if failed else EXIT_OK


@app.command(cls=PlainHelpCommand, short_help="Serve the model over OpenAI's chat-completions API.")
@pipeline_options()
def serve(
    host: Annotated[str, typer.Option("--host", rich_help_panel=SERVER, metavar="ADDRESS", help="Address to listen on; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", rich_help_panel=SERVER, metavar="PORT", help="Port to listen on (0: any free one).")] = 8000,
    media_dir: Annotated[Optional[Path], typer.Option(
        "--media-dir", "--allowed-media-dir", rich_help_panel=SERVER, metavar="DIR",
        help="file:// videos are read from this folder only (symlinks and .. cannot leave it); without it, none.")] = None,
    allow_remote_media: Annotated[bool, typer.Option(
        "--allow-remote-media", rich_help_panel=SERVER, help="Fetch http(s):// videos (public addresses only, each redirect checked).")] = False,
    allow_private_media: Annotated[bool, typer.Option(
        "--allow-private-media", rich_help_panel=SERVER, help="With --allow-remote-media: also fetch from private, loopback and link-local addresses.")] = False,
    max_media_mb: Annotated[float, typer.Option("--max-media-mb", rich_help_panel=SERVER, metavar="MB", help="Largest video a data: URL or a download may bring.")] = 256,
    media_timeout: Annotated[float, typer.Option("--media-timeout", rich_help_panel=SERVER, metavar="SECONDS", help="Longest a download may take.")] = 30,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", rich_help_panel=SERVER, metavar="KEY", envvar="DYTOK_API_KEY", show_envvar=True,
        help="Require Authorization: Bearer KEY on every route but /health.")] = None,
    served_model_name: Annotated[Optional[str], typer.Option(
        "--served-model-name", rich_help_panel=SERVER, metavar="NAME", help="The model's name in the API (default: --model).")] = None,
    queue: Annotated[int, typer.Option("--queue", rich_help_panel=SERVER, min=0, metavar="N", help="Requests that may wait for the model; more are answered 429.")] = 16,
    keep_videos: Annotated[int, typer.Option("--keep-videos", rich_help_panel=SERVER, min=1, metavar="N", help="Videos kept decoded, encoded and prefilled for later requests.")] = 4,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", rich_help_panel=OUTPUT, metavar="N", help="Longest answer, and the most a request's max_tokens gets.")] = _DEFAULTS.max_new_tokens,
    max_reasoning_tokens: Annotated[int, typer.Option(
        "--max-reasoning-tokens", metavar="N", rich_help_panel=OUTPUT,
        help="Longest reasoning before an answer, and the most a request's max_reasoning_tokens gets.")] = _DEFAULTS.max_reasoning_tokens,
    temperature: Annotated[float, typer.Option("--temperature", rich_help_panel=OUTPUT, metavar="T", help="Sampling temperature when a request sets none; 0 decodes greedily.")] = _DEFAULTS.temperature,
    *,
    options: dict[str, Any],
) -> int:
    """Serve the model over OpenAI's chat-completions API (a video as a video_url content part); the
    pipeline flags are the defaults and the maxima of what a request may ask (--frames is the most frames;
    --think, whether a request that does not say reasons first)."""
    settings = _settings(options, max_new_tokens=max_new_tokens, max_reasoning_tokens=max_reasoning_tokens,
                         temperature=temperature)
    if allow_private_media and not allow_remote_media:
        raise typer.BadParameter("--allow-private-media: only used with --allow-remote-media")
    if media_dir is not None and not media_dir.is_dir():
        raise typer.BadParameter(f"--media-dir {media_dir}: not a folder")
    if not (max_media_mb > 0 and media_timeout > 0):
        raise typer.BadParameter("--max-media-mb and --media-timeout must be positive")
    import socket

    try:
        from .apps.serve import app as server
        from .apps.serve.service import Limits, Service
    except ImportError as error:
        raise DytokError(f"dytok serve needs FastAPI and uvicorn: {install_hint('serve')} ({error})") from None
    from .media.cache import VisualCache
    from .media.sources import MediaPolicy

    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:  # bound before the model loads: a port in use fails at once
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        raise DytokError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    policy = MediaPolicy(media_dir=media_dir, allow_remote=allow_remote_media, allow_private=allow_private_media,
                         max_bytes=int(max_media_mb * 2**20), timeout_s=media_timeout)
    cache_dir = options["cache_dir"]
    _random_weights_note(options)
    with render.status(f"Loading {settings.model}"):
        service = Service(settings, Limits(queue=queue, keep_videos=keep_videos), cache=VisualCache(cache_dir) if cache_dir else None)
    name = served_model_name or settings.model
    application = server.create_app(service, model_name=name, policy=policy, api_key=api_key,
                                    max_body_bytes=policy.max_bytes * 4 // 3 + 2**20)  # base64 and the JSON around it
    bound_host, bound_port = listening.getsockname()[:2]
    if api_key is None and bound_host not in ("127.0.0.1", "::1", "localhost"):
        render.note(f"listening on {bound_host} without --api-key: anyone who can reach this port can use the model")
    render.note(f"serving {name} at http://{bound_host}:{bound_port}/v1 (Ctrl-C to stop)")
    server.run(application, listening)
    return EXIT_OK


@app.command("make-clip", cls=PlainHelpCommand, short_help="Write a short test video, for a first run.")
def make_clip_command(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="The video file to write (MP4).", show_default=False)],
    seconds: Annotated[float, typer.Option(
        "--seconds", metavar="S", rich_help_panel=BASICS, help="How long the clip is (8 frames a second).")] = 4.0,
    size: Annotated[str, typer.Option(
        "--size", metavar="WxH", rich_help_panel=BASICS, help="Width and height in pixels (even numbers).")] = "320x240",
    force: Annotated[bool, typer.Option("--force", rich_help_panel=OUTPUT, help="Replace FILE if it exists.")] = False,
) -> int:
    """Write a short video made here (a ball bouncing across a field, a white square from its middle on):
    something to run dytok on without a file or a download."""
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) % 2 == int(height) % 2 == 0
            and 16 <= min(int(width), int(height)) and max(int(width), int(height)) <= 4096):
        raise typer.BadParameter(f"--size is WIDTHxHEIGHT in pixels, even numbers from 16 to 4096, not {size!r}")
    if not 0 < seconds <= 600:
        raise typer.BadParameter(f"--seconds must be more than 0 and at most 600, not {seconds:g}")
    from .apps import make_clip  # PyAV and numpy only: no torch

    frames = make_clip.make_clip(path, seconds=seconds, width=int(width), height=int(height), force=force)
    render.note(f"wrote {path}: {frames} frames, {width}x{height}, {frames / make_clip.FPS:g} s")
    return EXIT_OK


@app.command("models", cls=PlainHelpCommand, short_help="List the shipped models: size, score, whether cached here.")
def models_command(
    json_output: Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Print the list as JSON.")] = False,
) -> int:
    """List the model presets dytok ships: each checkpoint's hub id and family, its parameters (counted from
    its config, no download), its Video-MME score as published, whether its weights are in the local Hugging
    Face cache, and the time to a first answer where it was measured. The default model is marked."""
    with render.status("Counting parameters…"):
        from .apps import catalog

        listed = [preset.record() for preset in catalog.shipped(os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL)]
    if json_output:
        render.write_json(listed)
    else:
        render.models_table(listed)
    return EXIT_OK


def _quiet_libraries() -> None:
    """Keep stderr to our own messages: library warnings and weight-loading bars are noise here.

    Without importing transformers (a second), so that what needs no model answers at once: its
    settings are read from the environment when it loads, and set directly where it has loaded."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _show_library_messages() -> None:
    """--verbose: the libraries' warnings reach stderr again (weight-loading bars stay off)."""
    warnings.simplefilter("default")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()


def _usage_message(error: typer.TyperException) -> str:
    """A usage error in one plain line: the flag, then the reason, without the parser's wording."""
    message = (error.format_message() or "bad usage").splitlines()[0].replace("Value error, ", "")
    message = message.removeprefix("Invalid value: ")  # our own reasons already name the flag
    if named := re.match(r"Invalid value for '(-[^']+)'(?: / '[^']+')?: (.*)", message):
        flag, reason = named.groups()
        message = reason if reason.startswith(flag) else f"{flag}: {reason}"
    for parser_words, plain in _PARSER_WORDS.items():
        message = message.replace(parser_words, plain)
    return message


_PARSER_WORDS = {
    "Input should be a valid integer, unable to parse string as an integer": "not a whole number",
    "Input should be a valid number, unable to parse string as a number": "not a number",
}


def _broken_install(error: BaseException) -> str | None:
    """What to do when the installed libraries do not fit together, from the root of `error`'s chain (a
    library that fails to import is reported several wrappings up, as another error), or None."""
    from importlib.metadata import PackageNotFoundError, version

    cause: BaseException | None = error
    while cause is not None:
        operator = re.search(r"operator torchvision::\w+ does not exist", str(cause))
        if operator:
            try:
                torch_version, vision_version = version("torch"), version("torchvision")
            except PackageNotFoundError:
                return None
            mismatch = f"torchvision {vision_version} was not built for torch {torch_version} ({operator.group(0)})"
            major, minor = (torch_version.split(".") + ["", ""])[:2]
            if major != "2" or not minor.isdigit():
                return f"{mismatch}: install the torchvision release made for this torch"
            # Each torch 2.N release has its torchvision 0.(N+15); a build tagged +cpu, +cu130, ... came from
            # PyTorch's index of that name, and its torchvision is there.
            build = torch_version.partition("+")[2]
            index = f" --index-url https://download.pytorch.org/whl/{build}" if build else ""
            return f"{mismatch}: install the one that was, python -m pip install 'torchvision==0.{int(minor) + 15}.*'{index}"
        cause = cause.__cause__ or cause.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors, meaningful exit codes, no tracebacks."""
    try:
        _quiet_libraries()
        status = typer.main.get_command(app).main(args=argv, prog_name="dytok", standalone_mode=False)
    except typer.Exit as error:
        status = error.exit_code
    except (typer.Abort, KeyboardInterrupt):
        status = EXIT_INTERRUPTED
    except DytokError as error:
        render.error(str(error))
        return error.exit_code
    except typer.TyperException as error:  # usage errors: bad flags, missing arguments
        render.error(_usage_message(error))
        status = getattr(error, "exit_code", EXIT_USAGE)
    except (render.StdoutClosed, BrokenPipeError):
        # The reader went away (`| head -1`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EXIT_OK
    except Exception as error:  # a bug of ours or a library's: still one line, unless debugging
        if os.environ.get("DYTOK_DEBUG"):
            raise
        reason = str(error).splitlines()[0] if str(error) else ""
        render.error(_broken_install(error)
                     or f"unexpected {type(error).__name__}: {reason} (set DYTOK_DEBUG=1 for a traceback)")
        status = EXIT_FAILED
    if status == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into an exit status of 130 before we see it
        render.error("interrupted")
    return status if isinstance(status, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
