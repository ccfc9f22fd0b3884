"""Everything a person sees: the stderr console, streamed answers, JSON output. Rich lives only here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

# Progress and messages go to stderr so stdout carries only results.
console = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    console.print(f"[bold red]dytok: error:[/] {escape(message)}", markup=True, soft_wrap=True)


def note(message: str) -> None:
    console.print(f"[dim]{escape(message)}[/]", soft_wrap=True)


@contextmanager
def status(message: str) -> Iterator[Any]:
    """A spinner on a terminal; nothing at all when stderr is a pipe or file."""
    if not console.is_terminal:
        yield None
        return
    with console.status(message) as spinner:
        yield spinner


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


class StdoutClosed(Exception):
    """The reader of stdout went away (`| head -1`); not an OSError, so no library turns it into a failure."""


def write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None


def write_json(record: dict[str, Any], *, indent: int | None = 2) -> None:
    write(json.dumps(record, indent=indent, ensure_ascii=False) + "\n")


class BatchProgress:
    """Progress of a run on stderr: answers done/total, current video, stage and ETA.

    Animated only when stderr is a terminal. Answers written to stdout while the display is live
    would be overdrawn by it, so writing pauses the display and the next stage resumes it.
    """

    def __init__(self, pairs: int, live: bool = True) -> None:
        from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

        self._video = ""
        self._running = False
        self._progress = None
        if console.is_terminal:
            columns = [SpinnerColumn(), TextColumn("{task.description}")]
            if live:
                columns += [MofNCompleteColumn(), TimeRemainingColumn()]
            self._progress = Progress(
                *columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False
            )
            self._task = self._progress.add_task("Starting", total=pairs)

    def __enter__(self) -> BatchProgress:
        self._resume()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._suspend()

    def _resume(self) -> None:
        if self._progress is not None and not self._running:
            self._progress.start()
            self._running = True

    def _suspend(self) -> None:
        if self._progress is not None and self._running:
            self._progress.stop()
            self._running = False

    def start_video(self, video: str) -> None:
        self._video = video

    def stage(self, message: str) -> None:
        if self._progress is None:
            return
        name = self._video.rsplit("/", 1)[-1]
        self._progress.update(self._task, description=f"{name}: {message}")
        self._resume()

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def error(self, message: str) -> None:
        with self.paused():
            error(message)

    @contextmanager
    def paused(self) -> Iterator[None]:
        was_running = self._running
        self._suspend()
        try:
            yield
        finally:
            if was_running:
                self._resume()

    def streaming(self, write: Callable[[str], None]) -> Callable[[str], None]:
        """A text sink that takes the display down for the answer being streamed."""

        def on_text(text: str) -> None:
            self._suspend()
            write(text)

        return on_text


_EIGHTHS = " ▏▎▍▌▋▊▉"
BUDGET_BAR_WIDTH = 10  # cells; with the other columns the table fits in 80 columns


def budget_bar(fraction: float, width: int = BUDGET_BAR_WIDTH) -> str:
    """A bar of `fraction` (0..1) of `width` cells in eighths of a cell: readable without colour."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(width)


def format_layers(layers: Sequence[int]) -> str:
    """`16-23` for a contiguous run, `20` for one layer, else a comma list."""
    if len(layers) > 1 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(layer) for layer in layers)


def budgets_table(record: dict[str, Any], prior_layers: Sequence[int] | None) -> None:
    """Where an inspect record's tokens go, one row per sampled frame in time order, on stdout.

    A Console of its own because `console` writes to stderr; like any Rich console it honours
    NO_COLOR and COLUMNS (80 when stdout is not a terminal).
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # Imported here so the CLI's start-up (and --help) does not load Pillow.
    from .export import clock

    per_frame = record["tokens_per_frame"]
    visual = record["visual_tokens"]
    if record["prior_model"] is None:
        prior = "no prior: uniform weights"
    else:
        prior = f"prior {record['prior_model']} layers {format_layers(prior_layers or ())}"
    caption = (
        f"visual tokens {visual['full']} → {visual['kept']}, ratio {record['ratio']:g} ({record['method']}); {prior}"
    )
    table = Table(
        title=Text(f"{record['video']}: {record['question']}"),
        caption=Text(caption),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        header_style="bold",
    )
    for header in ("#", "frame", "time", "weight", "rank", "budget", "kept", "dom/ctx"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("budget bar", no_wrap=True, min_width=BUDGET_BAR_WIDTH)
    for frame in record["frames"]:
        retention = frame["budget"] / per_frame
        table.add_row(
            str(frame["index"]),
            str(frame["frame"]),
            clock(frame["timestamp"]),
            f"{frame['weight']:.4f}",
            str(frame["rank"]),
            str(frame["budget"]),
            f"{100 * retention:.1f}%",
            f"{frame['dominant']}/{frame['contextual']}",
            Text(budget_bar(retention), style="cyan"),
        )
    # Twelve numeric columns need more than the 80 columns Rich assumes for a pipe.
    Console(highlight=False, width=None if sys.stdout.isatty() else 132).print(table)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def bench_table(report: dict[str, Any]) -> None:
    """The `dytok bench` results as a table on stdout."""
    from rich.table import Table

    table = Table(
        title=f"{report['model']} · {report['frames']} frames · {report['method']}",
        caption=f"{report['machine']}; medians; speed-ups against ratio 1 in this run; "
        "next q: a later question on the same video, decoding and vision reused",
    )
    for header in ("ratio", "method", "tokens", "vision s", "prior s", "prefill s", "TTFT s", "decode tok/s", "total s",
                   "next q s", "KV cache", "peak RSS", "prefill ×", "total ×", "next q ×", "prior share"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in report["results"]:
        speedup = lambda value: f"{value:.2f}" if value is not None else "-"  # noqa: E731
        table.add_row(
            f"{r['ratio']:g}", r["method"], str(r["visual_tokens"]), f"{r['vision_s']:.2f}", f"{r['prior_s']:.2f}",
            f"{r['prefill_s']:.2f}", f"{r['ttft_s']:.2f}", f"{r['decode_tok_s']:.1f}", f"{r['total_s']:.2f}",
            f"{r['next_question_s']:.2f}", _size(r["kv_cache_bytes"]), _size(r["peak_rss_bytes"]),
            speedup(r["speedup_prefill"]), speedup(r["speedup_total"]), speedup(r["speedup_next_question"]),
            f"{r['prior_share']:.0%}",
        )
    # Sixteen columns need more than the 80 columns Rich assumes for a pipe.
    Console(highlight=False, width=None if sys.stdout.isatty() else 180).print(table)
