"""`dytok summarize`: a long video as timestamped chapters and one summary, window by window.

The stages, in order: the first three are the library's (`windowed.py`), the others functions below.

1. `timeline`  every frame's start time, read from the packets without decoding; a file that is not a
               usable video fails here, before a model loads.
2. `segment`   windows at shot cuts (PySceneDetect, `media/shots.py`; short shots merged, long ones
               split), or fixed windows of `--window` seconds (`math/windows.py`).
3. `sample`    frames picked by time over the whole video (`--fps`), each window keeping those that
               start inside it (at most `--max-frames`).
4. `describe`  per window: decode only its frames, encode them, compress with the method and ratio and
               describe them; then let go of them. At no time are two windows' frames or visual tokens
               alive, so memory stays flat however long the video is. A window's frames carry their
               true times, which Qwen3-VL and Qwen3.5 write into the prompt.
5. `chapter`   the model is shown the numbered window descriptions and names the windows that open a
               chapter; pure rules keep a choice only if it is a window and leaves every chapter at least
               10 s long. Times come from window boundaries, never from the model's text. When it names no
               usable window, the largest changes of the windows' mean visual features decide.
6. `write_up`  a title and a paragraph per chapter, then one summary from the chapters (summaries of
               groups first when they do not fit one prompt). No pass is run whose answer is known: a
               chapter of one window has that window's description, so only its title is asked for
               (a few tokens); a video of one chapter has that chapter's description as its summary.

Resume: with a cache directory, the shot cuts and each described window are stored as they complete
(atomically), so a run stopped by Ctrl-C or a crash redoes only the windows not finished.

Speech: with `--subtitles` or `--speech`, what is said in the video is read (or transcribed) once, and
each window is given the lines said within its time range, after its frames (`Question.context`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..chapters import Chapter, ffmetadata, markdown, srt, webvtt, youtube, youtube_problems
from ..config import Settings, SummaryFormat
from ..errors import InputError, Interrupted, about
from ..files import write_atomically
from ..math.windows import (
    Window,
    change_chapter_starts,
    chapter_spans,
    chapter_starts,
    pack,
    target_chapters,
    visual_change,
)
from ..media import subtitles
from ..media.video import Timeline
from ..timecode import hms
from ..types import Line, Question, Transcript
from ..windowed import Segmentation, ShotCuts, read_window, sample, segment, timeline

if TYPE_CHECKING:
    from ..pipeline import Pipeline

FORMAT = 1  # of the JSON record and of the resume store

# Tokens of descriptions one text prompt holds; more are summarised in groups first.
PROMPT_BUDGET = 3000

WINDOW_PROMPT = (
    "Describe what happens in this part of the video in two or three sentences: the setting, who or what "
    "is shown, and what they do."
)
CHAPTER_PROMPT = (
    "These are consecutive parts of one video, in order, each with its time span and what it shows.\n\n"
    "{parts}\n\nGroup the parts into chapters, each a stretch about one thing. Which parts begin a new "
    "chapter?{first} Answer with the part numbers only, separated by commas."
)
TITLE_PROMPT = (
    "These consecutive parts of a video make one chapter:\n\n{parts}\n\nOn the first line, write a short "
    "title for the chapter (at most eight words). On the next line, describe the chapter in one paragraph."
)
# A chapter of one window: its description is the window's, so only the title is asked for.
WINDOW_TITLE_PROMPT = (
    "This part of a video makes one chapter:\n\n{parts}\n\nWrite a short title for the chapter (at most "
    "eight words). Answer with the title only."
)
# The answer's tokens a title is given: eight words are about 11 tokens of English (1.3 a word) and
# MAX_TITLE's 80 characters about 20 (4 a character); 24 leaves room for a "Title:" label or quotes a model
# adds. It counts the answer alone: a reasoning block before it (--think, or a model that always reasons)
# has its own allowance (`Pipeline.complete`). --max-new-tokens below it still wins.
TITLE_TOKENS = 24
GROUP_PROMPT = "These are consecutive parts of a video, in order:\n\n{parts}\n\nSummarise them in one paragraph."
SUMMARY_PROMPT = "These are the chapters of a video, in order:\n\n{parts}\n\nSummarise the whole video in one paragraph."


# The file name an output directory gets for a video, by format: VIDEO_STEM + this.
SUFFIXES = {
    SummaryFormat.md: ".md", SummaryFormat.json: ".json", SummaryFormat.vtt: ".vtt", SummaryFormat.srt: ".srt",
    SummaryFormat.youtube: ".youtube.txt", SummaryFormat.ffmetadata: ".ffmetadata",
}


class Progress(Protocol):
    """What a display is told while a video is summarised (the CLI's: on a terminal, windows done/total and
    an ETA, live; else a line per window described and per step)."""

    def windows(self, total: int, done: int) -> None:
        """The video has `total` windows, `done` of them already described by an earlier run."""

    def stage(self, message: str) -> None:
        """What is happening now within a step (reading frames, encoding, generating): a detail that a
        live display shows and a log leaves out."""

    def step(self, message: str) -> None:
        """A step of the summary begins (finding shots, choosing chapters, writing one, the summary)."""

    def described(self, index: int, window: Window, seconds: float) -> None:
        """Window `index` (from 0) described, in `seconds`."""


class _Quiet:
    def windows(self, total: int, done: int) -> None:
        pass

    def stage(self, message: str) -> None:
        pass

    def step(self, message: str) -> None:
        pass

    def described(self, index: int, window: Window, seconds: float) -> None:
        pass


@dataclass
class DescribedWindow:
    index: int
    window: Window
    frames: tuple[int, ...]  # source frame numbers decoded for it
    timestamps: tuple[float, ...]  # their start times, seconds
    description: str
    visual_tokens: dict[str, int]  # full / kept
    timings: dict[str, float]
    signature: list[float]  # its mean visual feature: what the chaptering falls back on
    said: tuple[Line, ...] = ()  # the subtitle or speech lines its prompt held
    resumed: bool = False  # read back from the cache directory, not computed in this run

    def record(self) -> dict[str, Any]:
        return {
            "index": self.index, "start": self.window.start, "end": self.window.end, "opens": self.window.opens,
            "frames": list(self.frames), "timestamps": [round(t, 3) for t in self.timestamps],
            "visual_tokens": self.visual_tokens, "description": self.description,
            "subtitles": [{"start": line.start, "end": line.end, "text": line.text} for line in self.said],
            "timings": {key: round(value, 4) for key, value in self.timings.items()}, "resumed": self.resumed,
        }


@dataclass
class Summary:
    video: str
    duration_s: float
    segmentation: Segmentation
    cuts: list[float] | None  # None with fixed windows
    windows: list[DescribedWindow]
    chapters: list[Chapter]
    chapter_windows: list[range]
    chapters_from: str  # "model", "visual change", "one window" or "too short"
    descriptions_from: list[str]  # per chapter: "model", "window" or "windows" (`write_up`)
    summary: str
    summary_from: str  # "model", or "chapter": a video of one chapter is summarised by its description
    timings: dict[str, float] = field(default_factory=dict)
    transcript: Transcript | None = None  # what is said in it, with --subtitles or --speech


# --- 4. describe ----------------------------------------------------------------------------------------


def window_lines(said: Transcript | None, window: Window) -> tuple[Line, ...]:
    """The lines said within `window` (any overlap): what its prompt holds after its frames."""
    return subtitles.between(said.lines, window.start, window.end) if said is not None else ()


def describe(pipeline: Pipeline, video: str, line: Timeline, index: int, window: Window, indices: list[int],
             said: tuple[Line, ...], progress: Progress) -> DescribedWindow:
    """Decode, encode, compress and describe one window; nothing of its frames outlives this call but
    the description and the mean visual feature."""
    started = time.perf_counter()
    frames = read_window(video, line, window, indices, pipeline.settings)
    decoded = time.perf_counter()
    visual = pipeline.encode(video, frames, progress.stage)
    question = Question(WINDOW_PROMPT, context=subtitles.context(said))
    answer = pipeline.ask(visual, question, on_stage=progress.stage)
    pipeline.release()
    timings = {"decode_s": decoded - started, "vision_s": answer.timings.get("vision_s", 0.0),
               "prior_s": answer.timings.get("prior_s", 0.0), "prefill_s": answer.timings.get("prefill_s", 0.0),
               "generate_s": answer.timings.get("generate_s", 0.0)}
    timings["total_s"] = sum(timings[key] for key in ("decode_s", "vision_s", "prior_s", "generate_s"))
    encoded = visual.encoded
    return DescribedWindow(
        index=index, window=window, frames=frames.indices, timestamps=frames.timestamps, description=answer.text,
        visual_tokens={"full": encoded.num_frames * encoded.tokens_per_frame, "kept": answer.plan.kept_tokens},
        timings=timings,
        signature=[round(value, 5) for value in encoded.features.float().mean(dim=(0, 1)).tolist()],  # (D,)
        said=said,
    )


# --- 5. chapter -----------------------------------------------------------------------------------------


def _span(start: float, end: float) -> str:
    return f"{hms(start)}-{hms(end)}"


def _part_line(number: int, start: float, end: float, text: str) -> str:
    return f"Part {number} ({_span(start, end)}): {' '.join(text.split()) or '(no description)'}"


_TIME_LIKE = re.compile(r"\d+(?::\d+)+(?:[.,]\d+)?|\d+[.,]\d+")


def chosen_parts(answer: str) -> set[int]:
    """The part numbers a model's answer names: its whole numbers, once anything that reads as a time or
    a decimal ("1:05", "00:14:00", "2.5") is set aside, so a time it writes is never taken for a part."""
    return {int(number) for number in re.findall(r"\d+", _TIME_LIKE.sub(" ", answer))}


def _token_count(pipeline: Pipeline, text: str) -> int:
    tokenizer = pipeline.model.tokenizer
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text) // 4


def chapter(pipeline: Pipeline, described: Sequence[DescribedWindow], duration: float,
            progress: Progress) -> tuple[list[int], str]:
    """The windows that open chapters, and what chose them: "model", "visual change", or without a choice
    to make "one window" or "too short"."""
    windows = [item.window for item in described]
    if len(windows) == 1:
        return [0], "one window"
    if chapter_starts(windows, range(1, len(windows))) == [0]:
        return [0], "too short"  # no boundary leaves MIN_CHAPTER_S either side: one chapter, whatever is chosen
    lines = [_part_line(item.index + 1, item.window.start, item.window.end, item.description) for item in described]
    chosen: set[int] = set()
    groups = pack([_token_count(pipeline, line) for line in lines], PROMPT_BUDGET)
    for number, group in enumerate(groups, start=1):
        progress.step(f"Choosing chapters{f' ({number}/{len(groups)})' if len(groups) > 1 else ''}")
        first = " Part 1 always does." if group.start == 0 else ""
        answer, _ = pipeline.complete(CHAPTER_PROMPT.format(parts="\n".join(lines[i] for i in group), first=first))
        # A group's answer may only choose among the group's own parts.
        chosen |= {part - 1 for part in chosen_parts(answer) if group.start <= part - 1 < group.stop}
    starts = chapter_starts(windows, chosen)
    if len(starts) > 1:
        return starts, "model"
    change = visual_change(np.array([item.signature for item in described]))
    return change_chapter_starts(windows, change.tolist(), target_chapters(duration, len(windows))), "visual change"


# --- 6. write-up ----------------------------------------------------------------------------------------


_LABEL = re.compile(r"^\s*(?:#+\s*|\*+\s*)*(?:chapter\s*\d*\s*)?(?:title|description)?\s*[:\-–]?\s*", re.IGNORECASE)
MAX_TITLE = 80


def title_and_description(answer: str, number: int) -> tuple[str, str]:
    """A model's "title, then a paragraph" as (title, description): its first non-empty line, without
    labels, markup and quotes, at most 80 characters (cut at a word); the rest the description. An
    empty title is "Chapter N"."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    title = _LABEL.sub("", lines[0]).strip(" *\"'`") if lines else ""
    if len(title) > MAX_TITLE:
        title = title[:MAX_TITLE].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    description = " ".join(_LABEL.sub("", line) if i == 0 else line for i, line in enumerate(lines[1:]))
    return title or f"Chapter {number}", description.strip()


def condense(pipeline: Pipeline, lines: list[str], progress: Progress, what: str) -> list[str]:
    """`lines` as they are if they fit one prompt; else each group that fits summarised in a paragraph,
    again until the paragraphs fit (a summary of summaries)."""
    counts = [_token_count(pipeline, line) for line in lines]
    while len(lines) > 1 and sum(counts) > PROMPT_BUDGET:
        groups = pack(counts, PROMPT_BUDGET)
        condensed = []
        for number, group in enumerate(groups, start=1):
            progress.step(f"{what}: summarising group {number}/{len(groups)}")
            answer, _ = pipeline.complete(GROUP_PROMPT.format(parts="\n".join(lines[i] for i in group)))
            condensed.append(f"Parts {group.start + 1}-{group.stop}: {' '.join(answer.split()) or '(no summary)'}")
        shorter = [_token_count(pipeline, line) for line in condensed]
        if sum(shorter) >= sum(counts):  # the model's paragraphs are no shorter: stop here
            break
        lines, counts = condensed, shorter
    return lines


@dataclass(frozen=True)
class WriteUp:
    chapters: list[Chapter]
    # Per chapter, where its description came from: "model" (the paragraph the model wrote from its
    # windows' descriptions), "window" (a chapter of one window: that window's description), or "windows"
    # (the model wrote a title alone: its windows' descriptions, in order).
    descriptions_from: list[str]
    summary: str
    summary_from: str  # "model", or "chapter" (a video of one chapter: that chapter's description)


def write_up(pipeline: Pipeline, described: Sequence[DescribedWindow], spans: Sequence[range],
             progress: Progress) -> WriteUp:
    """Each chapter's title and paragraph from its windows' descriptions, then the summary from the chapters;
    no pass whose answer is known (one window's description, one chapter's summary)."""
    chapters, sources = [], []
    for number, span in enumerate(spans, start=1):
        progress.step(f"Writing chapter {number}/{len(spans)}")
        lines = [_part_line(i + 1, described[i].window.start, described[i].window.end, described[i].description)
                 for i in span]
        own = [described[i].description.strip() for i in span]
        if len(span) == 1:
            answer, _ = pipeline.complete(WINDOW_TITLE_PROMPT.format(parts=lines[0]), max_new_tokens=TITLE_TOKENS)
            (title, _), description, source = title_and_description(answer, number), own[0], "window"
        else:
            answer, _ = pipeline.complete(TITLE_PROMPT.format(parts="\n".join(condense(pipeline, lines, progress, f"Chapter {number}"))))
            title, description = title_and_description(answer, number)
            source = "model" if description else "windows"
            description = description or " ".join(" ".join(text.split()) for text in own if text)
        start, end = described[span.start].window.start, described[span.stop - 1].window.end
        chapters.append(Chapter(start=start, end=end, title=title, description=description))
        sources.append(source)
    if len(chapters) == 1:
        return WriteUp(chapters, sources, chapters[0].description, "chapter")
    lines = [f"Chapter {number} ({_span(c.start, c.end)}) {c.title}: {c.description or '(no description)'}"
             for number, c in enumerate(chapters, start=1)]
    lines = condense(pipeline, lines, progress, "Summary")
    progress.step("Summarising")
    summary, _ = pipeline.complete(SUMMARY_PROMPT.format(parts="\n".join(lines)))
    return WriteUp(chapters, sources, summary.strip(), "model")


# --- the whole --------------------------------------------------------------------------------------------


def summarize(pipeline: Pipeline, video: str, segmentation: Segmentation, *, cache_dir: Path | None = None,
              progress: Progress | None = None) -> Summary:
    """All the stages for one video. InputError (a VideoError among them) for a video that cannot be used."""
    progress = progress or _Quiet()
    settings = pipeline.settings
    started = time.perf_counter()
    progress.stage("Reading frame times")
    line = timeline(video, settings)
    timed = time.perf_counter()
    said = pipeline.transcript(video, line.duration_s, progress.stage) if settings.uses_transcript else None
    listened = time.perf_counter()
    store = ResumeStore(cache_dir, video, pipeline, segmentation) if cache_dir is not None else None
    if segmentation.window is None:
        progress.step("Finding shots")
    windows, cuts = segment(video, line, segmentation, settings, store.shots if store is not None else None)
    segmented = time.perf_counter()
    samples = sample(line, windows, settings)
    heard = [window_lines(said, window) for window in windows]

    stored = [store.window(window, indices, lines) if store is not None else None
              for window, indices, lines in zip(windows, samples, heard)]
    progress.windows(len(windows), sum(item is not None for item in stored))
    described = []
    for index, (window, indices, lines, done) in enumerate(zip(windows, samples, heard, stored)):
        if done is not None:
            described.append(dataclasses.replace(done, index=index, said=lines, resumed=True))
            continue
        progress.stage(f"Window {index + 1}/{len(windows)}")
        begun = time.perf_counter()
        item = describe(pipeline, video, line, index, window, indices, lines, progress)
        if store is not None:
            store.save_window(item, indices)
        described.append(item)
        progress.described(index, window, time.perf_counter() - begun)
    windows_done = time.perf_counter()

    starts, chapters_from = chapter(pipeline, described, line.duration_s, progress)
    spans = chapter_spans(windows, starts)
    chaptered = time.perf_counter()
    written = write_up(pipeline, described, spans, progress)
    finished = time.perf_counter()

    computed = [item for item in described if not item.resumed]
    timings = {"timeline_s": timed - started, "speech_s": listened - timed, "shots_s": segmented - listened}
    for key in ("decode_s", "vision_s", "prior_s", "prefill_s", "generate_s"):
        timings[key] = sum(item.timings[key] for item in computed)
    timings.update(windows_s=windows_done - segmented, chapters_s=chaptered - windows_done,
                   write_up_s=finished - chaptered, total_s=finished - started)
    return Summary(video=video, duration_s=line.duration_s, segmentation=segmentation, cuts=cuts, windows=described,
                   chapters=written.chapters, chapter_windows=spans, chapters_from=chapters_from,
                   descriptions_from=written.descriptions_from, summary=written.summary, summary_from=written.summary_from,
                   timings=timings, transcript=said)


@dataclass(frozen=True)
class Outcome:
    """A video's summary, or why it has none (`error`: one line that names the video)."""

    video: str
    summary: Summary | None
    error: str | None = None


def attempt(pipeline: Pipeline, video: str, segmentation: Segmentation, *, cache_dir: Path | None = None,
            progress: Progress | None = None) -> Outcome:
    """`summarize`, with a failure that belongs to this video (unreadable, out of memory) as its outcome;
    any other error (a model that does not load) is raised, as it stops a batch."""
    from ..batch import PER_VIDEO_ERRORS  # torch: only once a video is summarised

    try:
        return Outcome(video, summarize(pipeline, video, segmentation, cache_dir=cache_dir, progress=progress))
    except PER_VIDEO_ERRORS as error:
        return Outcome(video, None, about(video, error))


@dataclass(frozen=True)
class Job:
    """A video's summary as the task a Ray worker runs with its own pipeline (`dytok summarize --engine
    ray`; the CLI hands it to the Ray engine, whose `VideoTask` it is): the whole video on one worker,
    its windows in order, as locally. Pickled to every worker: the cache directory is an absolute path,
    on a file system the workers share."""

    segmentation: Segmentation
    cache_dir: str | None = None

    def __call__(self, pipeline: Pipeline, row: dict[str, Any]) -> list[Outcome]:
        cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None
        return [attempt(pipeline, row["video"], self.segmentation, cache_dir=cache_dir)]

    def gave_up(self, settings: Settings, row: dict[str, Any], message: str) -> list[Outcome]:
        return [Outcome(row["video"], None, message)]


# --- records and files ------------------------------------------------------------------------------------


def settings_record(settings: Settings, prior_model: str | None) -> dict[str, Any]:
    return {"model": settings.model, "prior_model": prior_model, "method": settings.method.value,
            "ratio": settings.ratio, "fps": settings.fps, "max_frames": settings.max_frames, "backend": settings.backend.value,
            "max_new_tokens": settings.max_new_tokens}


def record(summary: Summary, settings: Settings, prior_model: str | None) -> dict[str, Any]:
    """The JSON record of a summarised video: the stable contract for scripts (docs/summarize.md)."""
    return {
        "format": FORMAT,
        "video": summary.video,
        "duration_s": round(summary.duration_s, 3),
        "segmentation": {**summary.segmentation.record(), "cuts": summary.cuts},
        "windows": [item.record() for item in summary.windows],
        "chapters": [
            {"index": number, "start": c.start, "end": c.end, "title": c.title, "description": c.description,
             "description_from": source, "windows": [span.start, span.stop - 1]}
            for number, (c, span, source) in enumerate(zip(summary.chapters, summary.chapter_windows,
                                                           summary.descriptions_from))
        ],
        "chapters_from": summary.chapters_from,
        "summary": summary.summary,
        "summary_from": summary.summary_from,
        "subtitles": _said_record(summary.transcript),
        "timings": {key: round(value, 4) for key, value in summary.timings.items()},
        "settings": settings_record(settings, prior_model),
        "error": None,
    }


def _said_record(said: Transcript | None) -> dict[str, Any] | None:
    """Where what is said came from (each window's lines are in its own record); None without
    --subtitles or --speech."""
    return None if said is None else {"source": said.source, "lines": len(said.lines), "note": said.note}


def error_record(video: str, settings: Settings, prior_model: str | None, error: str) -> dict[str, Any]:
    return {"format": FORMAT, "video": video, "duration_s": None, "segmentation": None, "windows": [], "chapters": [],
            "chapters_from": None, "summary": None, "summary_from": None, "subtitles": None, "timings": None, "settings": settings_record(settings, prior_model),
            "error": error}


def formatted(summary: Summary, output: SummaryFormat, settings: Settings, prior_model: str | None) -> str:
    """The summary as the text of one output file."""
    if output is SummaryFormat.json:
        return json.dumps(record(summary, settings, prior_model), indent=2, ensure_ascii=False) + "\n"
    writers: dict[SummaryFormat, Callable[[], str]] = {
        SummaryFormat.md: lambda: markdown(summary.video, summary.summary, summary.chapters),
        SummaryFormat.vtt: lambda: webvtt(summary.chapters),
        SummaryFormat.srt: lambda: srt(summary.chapters),
        SummaryFormat.youtube: lambda: youtube(summary.chapters),
        SummaryFormat.ffmetadata: lambda: ffmetadata(summary.chapters),
    }
    return writers[output]()


def notes(summary: Summary, output: SummaryFormat) -> list[str]:
    """What a reader of the file should know: why no words said went into it, why YouTube would not
    show these chapters."""
    said = [summary.transcript.note] if summary.transcript is not None and summary.transcript.note else []
    return said + (youtube_problems(summary.chapters) if output is SummaryFormat.youtube else [])


def output_path(output: Path, video: str, fmt: SummaryFormat, into_directory: bool) -> Path:
    return output / (Path(video).stem + SUFFIXES[fmt]) if into_directory else output


def write_file(path: Path, text: str, force: bool) -> None:
    """`text` to `path` whole or not at all (a temporary file beside it, renamed into place); an existing
    file is replaced only with `force`."""
    if path.exists() and not force:
        raise InputError(f"{path} exists; use --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    except OSError as error:
        raise InputError(f"{path}: cannot be written ({error.strerror or error})") from None


# --- a batch of videos: where each summary goes ------------------------------------------------------------


def output_targets(videos: Sequence[str], output: str | None, fmt: SummaryFormat, force: bool) -> dict[str, Path]:
    """Each video's file with `--output` (`output` as written: a trailing "/" names a directory that does not
    exist yet), none without. InputError for outputs that cannot all be written, before any work: a chapter
    format for several videos without a directory, a file where several videos need a directory, two videos
    onto one file, a file that exists without `force`."""
    if fmt not in (SummaryFormat.md, SummaryFormat.json) and len(videos) > 1 and output is None:
        raise InputError(f"--format {fmt.value} writes a file per video; give --output DIR")
    if output is None:
        return {}
    path = Path(output)
    into_directory = len(videos) > 1 or path.is_dir() or output.endswith(("/", os.sep))
    if into_directory and path.exists() and not path.is_dir():
        raise InputError(f"--output {path} is a file; several videos need a directory")
    targets: dict[str, Path] = {}
    for video in videos:
        target = output_path(path, video, fmt, into_directory)
        if target in targets.values():
            raise InputError(f"two videos would both write {target}; summarise them in separate runs")
        if target.exists() and not force:
            raise InputError(f"{target} exists; use --force to replace it")
        targets[video] = target
    return targets


class VideoProgress(Progress, Protocol):
    def close(self) -> None:
        """The video is done (or stopped): its display ends."""


class Display(Protocol):
    """Where a batch of summaries is shown as it goes (the CLI's: results on stdout, messages on stderr)."""

    def progress(self, video: str) -> VideoProgress:
        """The display of one video being summarised in this process."""

    def error(self, message: str) -> None:
        """A video that has no summary, in one line that names it; the batch goes on."""

    def note(self, message: str) -> None:
        """Something a reader should know (a file written, why no words said went into a summary)."""

    def record(self, record: dict[str, Any]) -> None:
        """A video's JSON record, printed on a line of its own as it completes (--jsonl)."""

    def text(self, text: str) -> None:
        """A video's summary in its format, printed as it completes."""


class Batch:
    """`dytok summarize` over its videos: each outcome delivered where the command sends it (a line of JSON,
    its own file, the array of records printed at the end, or its text on stdout), the videos summarised in
    turn by one pipeline, and what a stopped run says about resuming.

    `single`: one video named directly, whose failure is the command's error rather than one line of a batch."""

    def __init__(self, videos: Sequence[str], settings: Settings, prior_name: str | None, segmentation: Segmentation,
                 display: Display, *, fmt: SummaryFormat, targets: dict[str, Path], force: bool = False,
                 jsonl: bool = False, single: bool = False, cache_dir: Path | None = None) -> None:
        self.videos, self.settings, self.prior_name, self.segmentation = list(videos), settings, prior_name, segmentation
        self.display, self.fmt, self.targets, self.force, self.jsonl = display, fmt, targets, force, jsonl
        self.single, self.cache_dir = single, cache_dir
        self.errors: list[str] = []
        self.written: list[Path] = []
        self._collected: dict[int, dict[str, Any]] = {}  # --format json on stdout: by the videos' places in the input
        self._printed = 0

    def deliver(self, number: int, outcome: Outcome) -> None:
        """Video `number`'s outcome where it goes: stdout, its file, or the array printed at the end."""
        video, summary, settings, prior_name = outcome.video, outcome.summary, self.settings, self.prior_name
        if summary is None:
            message = outcome.error or f"{video}: not summarised"
            self.errors.append(message)
            if not self.single:
                self.display.error(message)
            if self.jsonl:
                self.display.record(error_record(video, settings, prior_name, message))
            elif self.fmt is SummaryFormat.json and not self.targets:
                self._collected[number] = error_record(video, settings, prior_name, message)
            return
        for note in notes(summary, self.fmt):
            self.display.note(f"{video}: {note}")
        if self.jsonl:
            self.display.record(record(summary, settings, prior_name))
        elif video in self.targets:
            write_file(self.targets[video], formatted(summary, self.fmt, settings, prior_name), self.force)
            self.written.append(self.targets[video])
            self.display.note(f"wrote {self.targets[video]}")
        elif self.fmt is SummaryFormat.json:
            self._collected[number] = record(summary, settings, prior_name)
        else:
            text = formatted(summary, self.fmt, settings, prior_name)
            self.display.text(("\n" if self._printed and self.fmt is SummaryFormat.md else "") + text)
            self._printed += 1

    def refuse(self, reasons: Sequence[str]) -> None:
        """The first videos, which cannot be used, each for its reason (found before a model loads)."""
        for number, reason in enumerate(reasons):
            self.deliver(number, Outcome(self.videos[number], None, reason))

    def run(self, pipeline: Pipeline, start: int = 0) -> None:
        """Summarise the videos from `start` on, in turn, each delivered as it completes; Ctrl-C stops the batch
        with a message that says how far it got and how to resume."""
        for number, video in enumerate(self.videos[start:], start=start):
            progress = self.display.progress(video)
            try:
                outcome = attempt(pipeline, video, self.segmentation, cache_dir=self.cache_dir, progress=progress)
            except KeyboardInterrupt:
                progress.close()
                raise Interrupted(f"interrupted while summarising {video} ({number} of {len(self.videos)} videos done); "
                                  f"{self.resume_hint()}") from None
            progress.close()
            self.deliver(number, outcome)

    def job(self) -> Job:
        """The batch's work as a Ray worker runs it, video by video."""
        return Job(self.segmentation, str(self.cache_dir.resolve()) if self.cache_dir is not None else None)

    def resume_hint(self) -> str:
        how = ("the same command resumes from --cache-dir" if self.cache_dir is not None
               else "with --cache-dir DIR a rerun resumes where it stopped")
        return how + (f" (with --force, as {len(self.written)} of the files are written)" if self.written else "")

    def printed_at_the_end(self) -> dict[str, Any] | list[dict[str, Any]] | None:
        """What is printed once every video is done: the records of --format json on stdout, in the input's
        order (one video's alone), or None."""
        if not self._collected:
            return None
        records = [self._collected[number] for number in sorted(self._collected)]
        return records[0] if self.single else records


# --- resume -------------------------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing, or not ours: computed again


class ResumeStore:
    """A video's finished work under the cache directory: its shot cuts and each described window, one small
    JSON file each, written whole as it completes. Keyed by the file's bytes and every setting that changes
    a description, so another model, method or sampling never reads it."""

    def __init__(self, directory: Path, video: str, pipeline: Pipeline, segmentation: Segmentation) -> None:
        from ..media.cache import file_digest

        settings = pipeline.settings
        model = pipeline.model
        identity = {
            "format": FORMAT, "file": file_digest(video), "prompt": WINDOW_PROMPT,
            **{name: str(getattr(settings, name)) for name in (
                "model", "prior_model", "method", "ratio", "prior_layers", "prune_layer", "backend", "max_new_tokens",
                "temperature", "seed")},
            "dtype": str(model.model.dtype), "device": model.device.type,
        }
        if settings.max_pixels is not None:  # only when set: a store from before the flag holds frames at the default size
            identity["max_pixels"] = settings.max_pixels
        if settings.repeats:  # only a lossy tolerance changes what the model sees
            identity["repeats"] = settings.repeats
        self.digest = identity["file"]
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
        self.folder = Path(directory) / "summarize" / key
        self.folder.mkdir(parents=True, exist_ok=True)
        # The cuts depend on the file alone: beside the stores of every setting, shared by them.
        self.shots = ShotCuts(self.folder.parent, self.digest)

    def _window_path(self, window: Window, frames: Sequence[int], said: Sequence[Line]) -> Path:
        # The lines said in it are part of its prompt: other subtitles, or none, describe it anew.
        prompt = [list(frames), subtitles.context(said)]
        sampled = hashlib.sha256(json.dumps(prompt).encode()).hexdigest()[:16]
        return self.folder / f"window-{round(window.start * 1000)}-{round(window.end * 1000)}-{sampled}.json"

    def window(self, window: Window, frames: Sequence[int], said: Sequence[Line]) -> DescribedWindow | None:
        stored = _read_json(self._window_path(window, frames, said))
        try:
            return DescribedWindow(
                index=0, window=window, frames=tuple(stored["frames"]), timestamps=tuple(stored["timestamps"]),
                description=stored["description"], visual_tokens=stored["visual_tokens"], timings=stored["timings"],
                signature=stored["signature"],
            )
        except (TypeError, KeyError):
            return None

    def save_window(self, item: DescribedWindow, frames: Sequence[int]) -> None:
        """`item`, described from the sampled `frames` (what `window` looks it up by)."""
        value = {"frames": list(item.frames), "timestamps": list(item.timestamps), "description": item.description,
                 "visual_tokens": item.visual_tokens, "timings": item.timings, "signature": item.signature}
        _write_json(self._window_path(item.window, frames, item.said), value)
