"""Times as people read them: in tables, file names, chapter lists and subtitle files."""

from __future__ import annotations

import math


def clock(seconds: float, separator: str = ":") -> str:
    """`mm:ss.ss`, truncated like a timecode, so it never reads later than the frame appears.

    The small epsilon keeps 0.29 s (0.29 * 100 is 28.999999999999996) from reading 00:00.28.
    """
    centiseconds = max(0, math.floor(seconds * 100 + 1e-6))
    minutes, centiseconds = divmod(centiseconds, 6000)
    return f"{minutes:02d}{separator}{centiseconds // 100:02d}.{centiseconds % 100:02d}"


def milliseconds(seconds: float) -> int:
    """Whole milliseconds, rounded: what chapter files hold, so a chapter's end is the next one's start."""
    return round(seconds * 1000)


def hms(seconds: float) -> str:
    """`h:mm:ss`, whole seconds truncated (a chapter never reads as starting later than it does)."""
    whole = max(0, math.floor(seconds + 1e-6))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def short_hms(seconds: float) -> str:
    """`m:ss` below an hour, else `h:mm:ss`, truncated: how YouTube chapter lines write times."""
    whole = max(0, math.floor(seconds + 1e-6))
    return hms(whole) if whole >= 3600 else f"{whole // 60}:{whole % 60:02d}"


def subtitle_time(ms: int, decimal: str = ".") -> str:
    """`hh:mm:ss.mmm` (WebVTT) or, with `decimal=","`, `hh:mm:ss,mmm` (SRT), from whole milliseconds."""
    seconds, rest = divmod(ms, 1000)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{decimal}{rest:03d}"
