"""Subtitle files (SRT, WebVTT) and which of their lines go with the frames a model sees.

The rule is Video-MME's "with subtitles" setting as lmms-eval runs it: the lines whose time spans cover the
sampled frames' times, each once, in time order, placed after the video and before the question under the
header lmms-eval writes. A line covers [start, end): a frame shown exactly when a line ends is past it.

Torch-free and pure apart from `read` and `find`, which touch the file system.
"""

from __future__ import annotations

import bisect
import codecs
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import InputError
from ..types import Line

EXTENSIONS = (".srt", ".vtt")
AUTO = "auto"
# lmms-eval's words before the lines in Video-MME's subtitle setting, trailing space included.
HEADER = "This video's subtitles are listed below: \n"

# HH:MM:SS,mmm (SRT) or [HH:]MM:SS.mmm (WebVTT); files in the wild mix the separators and the digit counts.
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")  # <i>, <font ...>, WebVTT's <v Speaker>, <c.class>, <00:00:01.000>
_OVERRIDE = re.compile(r"\{\\[^}]*\}")  # SSA overrides some SRT files carry, {\an8}


class SubtitleError(InputError):
    """A subtitle file that cannot be used; one line naming the file."""


def _seconds(hours: str | None, minutes: str, seconds: str, fraction: str | None) -> float:
    # "5" after the separator is 500 ms, as a decimal fraction reads.
    milliseconds = int(fraction.ljust(3, "0")) if fraction else 0
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + milliseconds / 1000


def _text(lines: Iterable[str]) -> str:
    """A cue's payload as one line of plain text: tags and overrides dropped, entities resolved."""
    joined = " ".join(_OVERRIDE.sub("", _TAG.sub("", line)) for line in lines)
    return " ".join(html.unescape(joined).split())


def parse(text: str) -> list[Line]:
    """The cues of an SRT or WebVTT document, in time order (cues starting together keep the file's order).

    Cue numbers, WebVTT identifiers, headers, NOTE, STYLE and REGION blocks carry no timing line and are
    skipped; a cue's text runs from its timing line to the next blank line. Cues without text or that end
    before they start are dropped. SubtitleError when the text has no cue timing at all (not a subtitle file);
    an empty document (or a WebVTT header alone) has no cues.
    """
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    cues: list[tuple[float, float, list[str]]] = []
    payload: list[str] | None = None
    for line in text.split("\n"):
        timing = _TIMING.match(line)
        if timing:
            if payload and payload[-1].strip().isdigit():
                payload.pop()  # the next SRT cue's number, when no blank line came before it
            groups = timing.groups()
            payload = []
            cues.append((_seconds(*groups[:4]), _seconds(*groups[4:]), payload))
        elif not line.strip():
            payload = None
        elif payload is not None:
            payload.append(line)
    if not cues and text.strip() and not text.startswith("WEBVTT"):  # a WebVTT header alone is an empty file
        raise SubtitleError("not SRT or WebVTT (no cue timings)")
    lines = [Line(start, end, _text(payload)) for start, end, payload in cues]
    return sorted((line for line in lines if line.text and line.end > line.start), key=lambda line: line.start)


def decode(data: bytes) -> str:
    """A subtitle file's text: UTF-8 (with or without a BOM), UTF-16 or UTF-32 with a BOM, else the
    Windows-1252 that older subtitle tools write."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def read(path: str | Path) -> list[Line]:
    """The lines of a subtitle file; SubtitleError (naming it) when it cannot be read or parsed."""
    try:
        return parse(decode(Path(path).read_bytes()))
    except OSError as error:
        raise SubtitleError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SubtitleError(f"{path}: not text in a known encoding") from None
    except SubtitleError as error:
        raise SubtitleError(f"{path}: {error}") from None


def _language_rank(path: Path, stem: str) -> tuple[int, str]:
    """Exactly the video's name first, then English (`.en`, `.en-US`), then the rest by name."""
    tag = path.stem[len(stem) + 1 :].lower()
    if path.stem == stem:
        return 0, path.name
    return (1 if tag == "en" or tag.startswith(("en-", "en_")) else 2), path.name


def find(video: str | Path, where: str | Path = AUTO) -> Path | None:
    """The subtitle file for `video`: `where` itself when it is a file; else the first of `<name>.srt`,
    `<name>.vtt` and the language-tagged `<name>.<tag>.srt`/`.vtt` (English first) in `where` when it is a
    directory, or beside the video for `auto`; None when there is none."""
    video = Path(video)
    if str(where) != AUTO and not Path(where).is_dir():
        return Path(where)
    folder = video.parent if str(where) == AUTO else Path(where)
    stem = video.stem
    try:
        candidates = [
            path for path in folder.iterdir()
            if path.suffix.lower() in EXTENSIONS and (path.stem == stem or path.stem.startswith(f"{stem}."))
            and path.is_file()
        ]
    except OSError:
        return None
    return min(candidates, key=lambda path: (_language_rank(path, stem), path.suffix.lower() != ".srt"), default=None)


def clip(lines: Iterable[Line], duration: float) -> tuple[Line, ...]:
    """`lines` within a video of `duration` seconds: those that start after its end dropped, the others
    ending by then."""
    return tuple(line if line.end <= duration else Line(line.start, duration, line.text)
                 for line in lines if line.start < duration)


def covering(lines: Sequence[Line], times: Iterable[float]) -> tuple[Line, ...]:
    """The selection rule: the lines whose [start, end) holds at least one of `times` (the sampled frames'
    seconds), each once (a cue repeated with the same times and text counts once), in `lines`' order."""
    times = sorted(times)
    chosen: dict[Line, None] = {}
    for line in lines:
        first = bisect.bisect_left(times, line.start)  # the first frame at or after the line's start
        if first < len(times) and times[first] < line.end:
            chosen.setdefault(line)
    return tuple(chosen)


def between(lines: Sequence[Line], start: float, end: float) -> tuple[Line, ...]:
    """The lines said within [start, end) seconds (any overlap), in order: what one stretch of a video
    (a summary's window) is given."""
    return tuple(dict.fromkeys(line for line in lines if line.start < end and line.end > start))


def context(lines: Sequence[Line]) -> str:
    """The text that goes between the video and the question (`Question.context`): lmms-eval's header and
    one line each; empty for no lines, so the prompt is then the same as without subtitles."""
    return HEADER + "\n".join(line.text for line in lines) if lines else ""
