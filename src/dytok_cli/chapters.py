"""A video's chapters as the files people and players read: Markdown, WebVTT and SRT (one cue per
chapter), YouTube chapter lines, and FFmpeg's metadata format (which `ffmpeg -map_chapters` embeds).

Plain functions from chapters to text. Every time written is the chapter's own boundary in whole
milliseconds (or truncated to whole seconds where a format counts seconds), so one chapter ends exactly
where the next starts in every format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .timecode import hms, milliseconds, short_hms, subtitle_time

# YouTube shows a description's chapter lines only if the first is at 0:00, they ascend, there are at
# least this many, and each chapter lasts at least YOUTUBE_MIN_CHAPTER_S.
YOUTUBE_MIN_CHAPTERS = 3
YOUTUBE_MIN_CHAPTER_S = 10


@dataclass(frozen=True)
class Chapter:
    start: float  # seconds, a window boundary
    end: float
    title: str
    description: str = ""


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces: a title fits on one line of any format."""
    return " ".join(text.split())


def markdown(name: str, summary: str, chapters: Sequence[Chapter]) -> str:
    """The summary, then one section per chapter headed `[h:mm:ss] title` with its description, unless that
    is the summary (a video of one chapter is summarised by its description): said once."""
    lines = [f"# {one_line(name)}", "", summary.strip() or "(no summary)", "", "## Chapters", ""]
    for chapter in chapters:
        lines += [f"### [{hms(chapter.start)}] {one_line(chapter.title)}", ""]
        if chapter.description.strip() and chapter.description.strip() != summary.strip():
            lines += [chapter.description.strip(), ""]
    return "\n".join(lines)


def _vtt_text(text: str) -> str:
    # A cue's text may not hold "-->" nor a bare "&" or "<": the WebVTT escapes keep them readable.
    return one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webvtt(chapters: Sequence[Chapter]) -> str:
    """A WebVTT file with one cue per chapter, the title as its text (as a `kind="chapters"` track reads)."""
    cues = ["WEBVTT", ""]
    for number, chapter in enumerate(chapters, start=1):
        span = f"{subtitle_time(milliseconds(chapter.start))} --> {subtitle_time(milliseconds(chapter.end))}"
        cues += [str(number), span, _vtt_text(chapter.title) or f"Chapter {number}", ""]
    return "\n".join(cues)


def srt(chapters: Sequence[Chapter]) -> str:
    """A SubRip file with one cue per chapter, the title as its text (one line: a blank line ends a cue)."""
    cues = []
    for number, chapter in enumerate(chapters, start=1):
        span = f"{subtitle_time(milliseconds(chapter.start), ',')} --> {subtitle_time(milliseconds(chapter.end), ',')}"
        cues += [str(number), span, one_line(chapter.title).replace("-->", "->") or f"Chapter {number}", ""]
    return "\n".join(cues)


def youtube_problems(chapters: Sequence[Chapter]) -> list[str]:
    """Why YouTube would not show these chapter lines (empty: it would)."""
    problems = []
    if len(chapters) < YOUTUBE_MIN_CHAPTERS:
        problems.append(f"YouTube shows chapters only when there are at least {YOUTUBE_MIN_CHAPTERS}; "
                        f"this video has {len(chapters)}")
    short = [number for number, chapter in enumerate(chapters, start=1)
             if chapter.end - chapter.start < YOUTUBE_MIN_CHAPTER_S]
    if short:
        problems.append(f"YouTube needs every chapter to last at least {YOUTUBE_MIN_CHAPTER_S} s; chapter "
                        f"{', '.join(map(str, short))} is shorter")
    return problems


def youtube(chapters: Sequence[Chapter]) -> str:
    """Chapter lines for a YouTube description: `0:00 Title`, ascending, whole seconds truncated (so
    starts at least 10 s apart stay at least 10 s apart as written)."""
    return "".join(f"{short_hms(chapter.start)} {one_line(chapter.title)}\n" for chapter in chapters)


_FFMETADATA_SPECIAL = re.compile(r"([=;#\\\n])")


def _ffmetadata_value(text: str) -> str:
    # FFmpeg's format escapes '=', ';', '#', '\' and newlines with a backslash.
    return _FFMETADATA_SPECIAL.sub(r"\\\1", one_line(text))


def ffmetadata(chapters: Sequence[Chapter]) -> str:
    """FFmpeg's `;FFMETADATA1` file: one [CHAPTER] per chapter in milliseconds (TIMEBASE=1/1000, always
    written: FFmpeg's own documentation disagrees on the default). `ffmpeg -i VIDEO -i FILE -map_metadata 1
    -map_chapters 1 -c copy OUT.mkv` embeds them."""
    lines = [";FFMETADATA1"]
    for number, chapter in enumerate(chapters, start=1):
        lines += ["", "[CHAPTER]", "TIMEBASE=1/1000", f"START={milliseconds(chapter.start)}",
                  f"END={milliseconds(chapter.end)}", f"title={_ffmetadata_value(chapter.title) or f'Chapter {number}'}"]
    return "\n".join(lines) + "\n"
