"""Everything a person sees: the stderr console, streamed answers, JSON output. Rich lives only here."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

# Progress and messages go to stderr so stdout carries only results.
console = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    # Escaped: a path or hint in brackets ("clip[1].mp4", "ray[data]") is text, not markup.
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


def progress_line(message: str) -> None:
    """One plain line of progress on stderr where nothing is animated (stderr is a pipe or a file), so a long
    run is never silent there; nothing on a terminal, whose live display says it instead."""
    if not console.is_terminal:
        console.print(message, markup=False, highlight=False, soft_wrap=True)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


class StdoutClosed(Exception):
    """The reader of stdout went away (`| head -1`); not an OSError, so no library turns it into a failure."""


_stdout_mid_line = False  # the last text written to stdout did not end its line


def write(text: str) -> None:
    global _stdout_mid_line
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None
    if text:
        _stdout_mid_line = not text.endswith("\n")


def end_line() -> None:
    """End a line of stdout left open (an answer cut off while streaming), so what follows starts on its own."""
    if _stdout_mid_line:
        write("\n")


def reasoning(text: str) -> None:
    """A model's reasoning as it streams, on stderr, dimmed where stderr is a terminal."""
    console.print(text, style="dim", end="", markup=False, highlight=False, soft_wrap=True)


def write_json(record: dict[str, Any], *, indent: int | None = 2) -> None:
    write(json.dumps(record, indent=indent, ensure_ascii=False) + "\n")


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` cells, its middle replaced by "…" (a file name keeps its extension)."""
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return f"{text[: width - 1 - tail]}…{text[len(text) - tail:]}"


def duration(seconds: float) -> str:
    """A time left as people say it: 45s, 3m05s, 1h20m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


VIDEO_NAME_WIDTH = 32  # cells of the progress line a video's file name may take


class BatchProgress:
    """Progress of a run on stderr: answers done/total, ETA, current video and stage.

    Animated only when stderr is a terminal. Answers written to stdout while the display is live
    would be overdrawn by it, so writing pauses the display and the next stage resumes it. The count
    and ETA come first; the video and stage take the rest of the line and are cut with "…" to fit.
    """

    def __init__(self, pairs: int, live: bool = True) -> None:
        from rich.progress import (
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self._video = ""
        self._running = False
        self._progress = None
        if console.is_terminal:
            columns = [SpinnerColumn()]
            if live:
                columns += [MofNCompleteColumn(), TimeRemainingColumn()]
            description = Column(ratio=1, no_wrap=True, overflow="ellipsis")
            columns.append(TextColumn("{task.description}", markup=False, table_column=description))
            self._progress = Progress(
                *columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False,
                expand=True,
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
        name = shorten(self._video.rsplit("/", 1)[-1], VIDEO_NAME_WIDTH)
        self._progress.update(self._task, description=f"{name}: {message}" if name else message)
        self._resume()

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def error(self, message: str) -> None:
        with self.paused():
            error(message)

    def note(self, message: str) -> None:
        with self.paused():
            note(message)

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
    """Where an inspect record's tokens go, one row per sampled frame in time order, on stdout."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from .timecode import clock

    per_frame = record["tokens_per_frame"]
    visual = record["visual_tokens"]
    if record["prior_model"] is None:
        prior = "no prior: uniform weights"
    else:
        prior = f"prior {record['prior_model']} layers {format_layers(prior_layers or ())}"
    legend = f"visual tokens {visual['full']} → {visual['kept']}, ratio {record['ratio']:g} ({record['method']}); {prior}"
    table = Table(
        title=Text(f"{record['video']}: {record['question']}"),
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
    print_table(stdout_console(), table, legend)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


# (header, cell) per column of `dytok bench`'s table; headers break where a narrow column needs them.
_BENCH_COLUMNS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "ratio": ("ratio", lambda r: f"{r['ratio']:g}"),
    "method": ("method", lambda r: r["method"]),
    "visual_tokens": ("visual\ntokens", lambda r: str(r["visual_tokens"])),
    "vision_s": ("vision\ns", lambda r: f"{r['vision_s']:.2f}"),
    "prior_s": ("prior\ns", lambda r: f"{r['prior_s']:.2f}"),
    "prefill_s": ("prefill\ns", lambda r: f"{r['prefill_s']:.2f}"),
    "ttft_s": ("TTFT\ns", lambda r: f"{r['ttft_s']:.2f}"),
    "decode_tok_s": ("decode\ntok/s", lambda r: f"{r['decode_tok_s']:.1f}"),
    "total_s": ("total\ns", lambda r: f"{r['total_s']:.2f}"),
    "next_question_s": ("next q\ns", lambda r: f"{r['next_question_s']:.2f}"),
    "next_question_recomputed_s": ("next q\nno reuse s", lambda r: _seconds(r["next_question_recomputed_s"])),
    "kv_cache_bytes": ("KV\ncache", lambda r: _size(r["kv_cache_bytes"])),
    "peak_rss_bytes": ("peak\nRSS", lambda r: _size(r["peak_rss_bytes"])),
    "peak_gpu_bytes": ("peak\nGPU", lambda r: "-" if r.get("peak_gpu_bytes") is None else _size(r["peak_gpu_bytes"])),
    "speedup_prefill": ("prefill\n×", lambda r: _speedup(r["speedup_prefill"])),
    "speedup_total": ("total\n×", lambda r: _speedup(r["speedup_total"])),
    "speedup_next_question": ("next q\n×", lambda r: _speedup(r["speedup_next_question"])),
    "speedup_prefix_reuse": ("reuse\n×", lambda r: _speedup(r["speedup_prefix_reuse"])),
    "prior_share": ("prior\nshare", lambda r: f"{r['prior_share']:.0%}"),
    "levers": ("levers", lambda r: "+".join(r["levers"]) or "off"),
    "reused_frames": ("reused\nframes", lambda r: str(r["reused_frames"])),
    "lever_speedup_vision": ("vision\n× lever", lambda r: _speedup(r["lever_speedup_vision"])),
    "lever_speedup_total": ("total\n× lever", lambda r: _speedup(r["lever_speedup_total"])),
}
# What a first and a later question cost, and the speed-ups: nine columns fit in 80.
BENCH_DEFAULT_COLUMNS = (
    "ratio", "method", "visual_tokens", "prefill_s", "total_s", "next_question_s",
    "speedup_prefill", "speedup_total", "speedup_next_question",
)
# With --lever: what each lever does to the vision pass and the whole first question.
BENCH_LEVER_COLUMNS = (
    "ratio", "method", "levers", "reused_frames", "vision_s", "total_s", "lever_speedup_vision", "lever_speedup_total",
)
# With several runs, how far apart a measure's runs were: (largest - smallest) / median. The caption gives
# the largest of these; --wide shows them beside their measures.
_BENCH_SPREAD = {"prefill_s": ("prefill\nspread", "prefill"), "total_s": ("total\nspread", "total")}


def _spread(result: dict[str, Any], measure: str) -> float | None:
    low_high = (result.get("spread") or {}).get(measure)
    median = result[measure]
    return (low_high[1] - low_high[0]) / median if low_high and median else None


def _bench_figures(report: dict[str, Any]) -> str:
    """What the table's figures are: single runs, or medians and how far their runs were apart."""
    results = report["results"]
    runs = max((result.get("runs", 1) for result in results), default=1)
    if runs == 1:
        return "single runs (--repeat 1): one slow run shows as a speed-up; repeat to read them"
    spreads = [(spread, measure, result) for result in results for measure in _BENCH_SPREAD
               if (spread := _spread(result, measure)) is not None]
    if not spreads:
        return f"medians of {runs} runs"
    spread, measure, result = max(spreads, key=lambda entry: entry[0])
    return (f"medians of {runs} runs, which differed by up to {spread:.0%} ({_BENCH_SPREAD[measure][1]}, ratio "
            f"{result['ratio']:g} {result['method']}): a speed-up within that of 1 may be noise")


def _speedup(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def bench_table(report: dict[str, Any], *, wide: bool = False) -> None:
    """The `dytok bench` results as a table on stdout: the main columns, which fit in 80 columns, or every
    one with `wide`."""
    from rich import box
    from rich.table import Table

    levers = bool(report.get("levers"))
    names = tuple(name for name in _BENCH_COLUMNS if levers or not name.startswith(("levers", "lever_"))) if wide \
        else BENCH_LEVER_COLUMNS if levers else BENCH_DEFAULT_COLUMNS
    if wide and any(result.get("runs", 1) > 1 for result in report["results"]):
        names = tuple(name for column in names for name in (column, *(["spread:" + column] if column in _BENCH_SPREAD else [])))
    legend = (
        f"{report['machine']}; {_bench_figures(report)}; "
        + ("× lever: against the same case with the levers off in this run; " if levers else "")
        + "speed-ups (×) against ratio 1 in this run; next q: a later "
        "question on the same video, decoding and vision reused"
        + (", and the prompt prefix's LLM work (--no-prefix-cache to recompute it)" if report["prefix_cache"]
           else "; the prompt prefix recomputed (--no-prefix-cache)")
        + ("" if wide else "; --wide or --json for all measures")
    )
    table = Table(
        title=f"{report['model']} · {report['dtype']} · {report['frames']} frames · {report['method']}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )
    def cell(result: dict[str, Any], name: str) -> str:
        if name.startswith("spread:"):
            spread = _spread(result, name.removeprefix("spread:"))
            return "-" if spread is None else f"{spread:.0%}"
        return _BENCH_COLUMNS[name][1](result)

    for name in names:
        measure = name.removeprefix("spread:")
        header = _BENCH_SPREAD[measure][0] if name != measure else _BENCH_COLUMNS[name][0]
        table.add_column(header, justify="right", no_wrap=True)
    for result in report["results"]:
        table.add_row(*(cell(result, name) for name in names))
    print_table(stdout_console(), table, legend)


def find_results(results: Sequence[dict[str, Any]]) -> None:
    """`dytok find`'s time ranges on stdout, best first, one a line: rank, range, score, the moment within it
    the query points at most, the video, and its clip when one was cut. Plain text, for a pipe as for a person."""
    from .timecode import clock

    for result in results:
        clip = f"  {result['clip']}" if result["clip"] else ""
        write(f"{result['rank']:>2}  {clock(result['start'])}-{clock(result['end'])}  score {result['score']:.4g}  "
              f"peak {clock(result['peak'])}  {result['video']}{clip}\n")


def eval_table(summary: dict[str, Any]) -> None:
    """The `dytok eval` results, one row per (method, ratio), on stdout; fits 80 columns."""
    from rich import box
    from rich.table import Table

    settings = summary["settings"]
    legend = ("accuracy over answered pairs (answered/items); seconds per answer, each counting its video's decoding "
              "and vision; × against none in this run")
    table = Table(
        title=f"{settings['model']} · {settings['frames']} frames · {summary['items']} items",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("method", no_wrap=True)
    for header in ("ratio", "tokens", "accuracy", "answered", "total s", "prefill s"):
        table.add_column(header, justify="right", no_wrap=True)

    def timed(seconds: float | None, speedup: float | None) -> str:
        if seconds is None:
            return "-"
        return f"{seconds:.2f}" + (f" ({speedup:.2f}×)" if speedup is not None else "")

    for r in summary["results"]:
        table.add_row(
            r["method"], f"{r['ratio']:g}", "-" if r["visual_tokens"] is None else f"{r['visual_tokens']:.0f}",
            "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}", f"{r['answered']}/{r['items']}",
            timed(r["total_s"], r["speedup_total"]), timed(r["prefill_s"], r["speedup_prefill"]),
        )
    print_table(stdout_console(), table, legend)


def parameters(count: int) -> str:
    """A parameter count as model names give it: 894M, 2.1B."""
    if count >= 10e9:
        return f"{count / 1e9:.0f}B"
    return f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def models_table(presets: Sequence[dict[str, Any]]) -> None:
    """`dytok models`: one row per shipped preset (`catalog.Preset.record`), on stdout. A console narrower than
    the whole table gets it without the family column, in 80 columns: never a name cut short."""
    legend = (
        "model: what --model takes (with --random-weights, the preset's name too). size: parameters, counted from "
        "the config. Video-MME: without subtitles, as the model card publishes it; * in thinking mode, where dytok "
        "answers only with --think. in cache: the weights are in the local Hugging Face cache. first q: seconds to a "
        "first answer on a 2-core CPU at 32 frames of 360p (--json says how, and gives 1080p's), to compare, not to "
        "expect. —: none published or measured."
    )
    main_run = next(((p["first_question"] or {}).get("run") for p in presets if p["default"]), None)
    other = sorted({p["first_question"]["default_model_360p"] for p in presets
                    if p["first_question"] and p["first_question"]["run"] != main_run})
    if other:
        legend += (f" †: measured in another run, on another CPU, where the default model took "
                   f"{' and '.join(f'{seconds:.0f}' for seconds in other)} s (--json gives its conditions).")
    out = stdout_console()
    table = _models_table(presets, main_run, family=True)
    if (whole := table_width(out, table)) > out.width:
        table = _models_table(presets, main_run, family=False)
        legend += f" The family column needs {whole} columns (--json gives it too)."
    print_table(out, table, legend)


def _models_table(presets: Sequence[dict[str, Any]], main_run: str | None, *, family: bool) -> Any:
    """The table of `models_table`, with or without the family column (the hub id says the family too)."""
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,  # the box's blank between columns is enough: a hub id takes 41 columns
        header_style="bold",
    )
    for header in ("preset", "model", *(["family"] if family else [])):
        table.add_column(header, no_wrap=True)
    for header in ("size", "Video\nMME", "in\ncache", "first\nq (s)"):
        table.add_column(header, justify="right", no_wrap=True)
    for preset in presets:
        score, first = preset["video_mme"], preset["first_question"]
        table.add_row(
            preset["preset"],
            preset["model"] + (" (default)" if preset["default"] else ""),
            *([preset["family"]] if family else []),
            parameters(preset["parameters"]),
            "—" if score is None else f"{score['score']:.1f}" + ("*" if score["thinking"] else ""),
            "yes" if preset["cached"] else "no",
            "—" if first is None else f"{first['seconds']['360p']:.0f}" + ("" if first["run"] == main_run else "†"),
        )
    return table


# Columns of stdout when it is not a terminal and COLUMNS is not set (Rich would assume 80).
PIPE_WIDTH = 100


def stdout_console() -> Console:
    """A console on stdout (`console` writes to stderr), as wide as the terminal, or COLUMNS where it is set,
    else `PIPE_WIDTH`. Like any Rich console it honours NO_COLOR."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else PIPE_WIDTH
    return Console(highlight=False, width=width)


def table_width(out: Console, table: Any) -> int:
    """The columns `table` takes with no cell cut: every column of ours is no_wrap, so its widest cell."""
    return out.measure(table, options=out.options.update_width(10_000)).maximum


def print_table(out: Console, table: Any, legend: str) -> None:
    """`table` on `out`, then `legend` under it, with no line ending in blanks.

    A table wider than the console is printed whole at its own width (a terminal then wraps its lines)
    rather than with its cells cut to "…": what is copied from a table (a name, an id, a figure) is whole.
    The legend is not the table's caption, which Rich pads to the table's width: it is wrapped here, to
    the console, and no wider than the table or 80 columns, whichever is wider.
    """
    from rich.segment import Segment, Segments

    width = max(out.width, needed := table_width(out, table))
    for line in out.render_lines(table, out.options.update_width(width), pad=False):
        while line and not line[-1].control and not line[-1].text.rstrip():
            line.pop()
        if line:
            last = line.pop()
            line.append(Segment(last.text.rstrip(), last.style, last.control))
        out.print(Segments([*line, Segment.line()]), soft_wrap=True, end="")
    out.print(textwrap.fill(legend, min(out.width, max(needed, 80))), soft_wrap=True, markup=False)
