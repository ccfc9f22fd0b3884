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
