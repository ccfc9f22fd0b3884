"""`dytok find`: where in a video, or in a folder of videos, a question points, as time ranges ranked by the
keyframe prior. Nothing is generated: the prior is the search.

Each video is cut into windows as `summarize` cuts it (shots, or fixed `--window`s) and sampled over its
whole length (`--fps`); each window's frames are encoded once (kept with `--cache-dir`, so a later question
reads them back) and the question's prior over them gives the window a score on a scale every window of
every video shares (`windowed.scan`, `math.prior.text_relative_frame_scores`). The best windows over all
the videos searched are the moments: each its video, its time range (window boundaries: the video's
start and end, shot cuts at frame starts, or the fixed grid), its score, and the frame the question points
at most within it. `--clip DIR` cuts each out with ffmpeg (`media/cut.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Settings
from ..errors import InputError, Interrupted, about
from ..media.cut import Cut, cut, keyframe_times, require_ffmpeg
from ..windowed import Scan, ScanProgress, ScoredWindow, Segmentation, ShotCuts, scan

if TYPE_CHECKING:
    from ..pipeline import Pipeline

FORMAT = 1  # of the JSON records


@dataclass(frozen=True)
class Searched:
    """A video searched, or why it could not be (`error`: one line that names it)."""

    video: str
    scan: Scan | None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        found = self.scan
        return {"video": self.video, "duration_s": round(found.duration_s, 3) if found else None,
                "segmentation": {**found.segmentation.record(), "cuts": found.cuts} if found else None,
                "windows": [window.record() for window in found.windows] if found else [],
                "timings": {key: round(value, 4) for key, value in found.timings.items()} if found else None,
                "error": self.error}


@dataclass(frozen=True)
class Moment:
    """One of the best windows, ranked from 1, and where its clip was written."""

    rank: int
    video: str
    window: ScoredWindow
    clip: Cut | None = None

    def record(self) -> dict[str, Any]:
        window = self.window
        return {"rank": self.rank, "video": self.video, "start": window.window.start, "end": window.window.end,
                "score": window.score, "peak": round(window.peak, 3), "window": window.index,
                "clip": str(self.clip.path) if self.clip else None,
                "clip_copied": self.clip.copied if self.clip else None, "error": None}


def error_line(video: str, error: str) -> dict[str, Any]:
    """A video that could not be searched, as a --jsonl line shaped like a moment's."""
    return {"rank": None, "video": video, "start": None, "end": None, "score": None, "peak": None, "window": None,
            "clip": None, "clip_copied": None, "error": error}


def ranked(searched: Sequence[Searched], top: int) -> list[Moment]:
    """The `top` best windows of all the videos searched, best first; equal scores in the videos' order, then
    in time."""
    windows = [(number, item.video, window) for number, item in enumerate(searched) if item.scan
               for window in item.scan.windows]
    best = sorted(windows, key=lambda entry: (-entry[2].score, entry[0], entry[2].window.start))[:top]
    return [Moment(rank, video, window) for rank, (_, video, window) in enumerate(best, start=1)]


# --- clips ------------------------------------------------------------------------------------------------


def clip_name(video: str, window: ScoredWindow) -> str:
    """VIDEO_STEM.START-END.mp4, the range in seconds to the millisecond: the same window gets the same name."""
    return f"{Path(video).stem}.{window.window.start:.3f}-{window.window.end:.3f}.mp4"


def check_clips(directory: Path, videos: Sequence[str], force: bool) -> str:
    """Refuse, before any work, clips that could not all be written: a DIR that is a file, two videos whose
    clips would share names, a clip of one of these videos already there without `force`. Returns the
    ffmpeg command to cut with."""
    ffmpeg = require_ffmpeg()
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--clip {directory}: exists and is not a directory")
    stems: dict[str, str] = {}
    for video in videos:
        stem = Path(video).stem
        if stem in stems and stems[stem] != video:
            raise InputError(f"--clip: {stems[stem]} and {video} would name their clips alike; clip them in separate runs")
        stems[stem] = video
    if directory.is_dir() and not force:
        names = re.compile(r"(?P<stem>.+)\.\d+\.\d{3}-\d+\.\d{3}\.mp4")
        for path in sorted(directory.iterdir()):
            named = names.fullmatch(path.name)
            if named and named["stem"] in stems:
                raise InputError(f"--clip {directory}: {path.name} exists (a clip of {stems[named['stem']]}); "
                                 "use --force to replace clips")
    return ffmpeg


def write_clips(moments: Sequence[Moment], searched: Sequence[Searched], directory: Path, ffmpeg: str) -> list[Moment]:
    """Each moment's range cut into `directory`, in rank order; the moments with their clips."""
    durations = {item.video: item.scan.duration_s for item in searched if item.scan}
    keyframes: dict[str, list[float]] = {}
    directory.mkdir(parents=True, exist_ok=True)
    clipped = []
    for moment in moments:
        if moment.video not in keyframes:
            keyframes[moment.video] = keyframe_times(moment.video)
        span = moment.window.window
        made = cut(ffmpeg, moment.video, span.start, span.end, directory / clip_name(moment.video, moment.window),
                   keyframes=keyframes[moment.video], duration=durations[moment.video])
        clipped.append(Moment(moment.rank, moment.video, moment.window, made))
    return clipped


# --- the search ---------------------------------------------------------------------------------------------


class Display(Protocol):
    """Where a search shows itself as it goes (the CLI's: on stderr)."""

    def progress(self, video: str) -> VideoProgress:
        """The display of one video being searched."""

    def error(self, message: str) -> None:
        """A video that could not be searched, in one line that names it; the others go on."""


class VideoProgress(ScanProgress, Protocol):
    def close(self) -> None:
        """The video is done (or stopped): its display ends."""


@dataclass(frozen=True)
class Found:
    """What a search found: every video, searched or not, and the best moments among them."""

    question: str
    searched: list[Searched]
    moments: list[Moment]
    layers: tuple[int, ...]

    @property
    def errors(self) -> list[str]:
        return [item.error for item in self.searched if item.error]

    def record(self, settings: Settings) -> dict[str, Any]:
        """The JSON record of a search (--json): the stable contract for scripts (docs/find.md)."""
        return {"format": FORMAT, "question": self.question, "results": [moment.record() for moment in self.moments],
                "videos": [item.record() for item in self.searched],
                "settings": {"model": settings.model, "prior_layers": list(self.layers), "fps": settings.fps,
                             "max_frames": settings.max_frames, "backend": settings.backend.value}}


def search(pipeline: Pipeline, video: str, question: str, segmentation: Segmentation, layers: tuple[int, ...], *,
           progress: ScanProgress | None = None) -> Searched:
    """`video`'s windows scored for `question`, with a failure that belongs to this video (unreadable, out of
    memory) as its outcome; any other error (a model that does not load) is raised, as it stops the search.
    With the pipeline's vision cache, the shot cuts are kept beside the windows' encodings."""
    from ..batch import PER_VIDEO_ERRORS  # torch: only once a video is searched

    cache = pipeline.cache
    try:
        cuts = ShotCuts(cache.directory / "shots", cache.digest(video)) if cache is not None else None
        return Searched(video, scan(pipeline, video, question, segmentation, layers, cuts=cuts, progress=progress))
    # OSError: a file that cannot be read for its digest, before the decoder sees it.
    except (*PER_VIDEO_ERRORS, OSError) as error:
        return Searched(video, None, about(video, error))


def find(pipeline: Pipeline, videos: Sequence[str], question: str, segmentation: Segmentation, display: Display, *,
         top: int, refused: Sequence[str] = (), clips: Path | None = None, ffmpeg: str | None = None) -> Found:
    """Search `videos` in turn (the first `len(refused)` were found unusable before a model loaded, each for
    its reason), rank their windows, and with `clips` cut the best `top` into that folder with `ffmpeg`.
    Ctrl-C stops the search with a message that says how far it got."""
    # The model loads here, once there is a video to search.
    layers = (pipeline.prior_layers or ()) if len(refused) < len(videos) else ()
    searched = [Searched(video, None, reason) for video, reason in zip(videos, refused)]
    for reason in refused:
        display.error(reason)
    for number, video in enumerate(videos[len(refused):], start=len(refused)):
        progress = display.progress(video)
        try:
            item = search(pipeline, video, question, segmentation, layers, progress=progress)
        except KeyboardInterrupt:
            progress.close()
            raise Interrupted(f"interrupted while searching {video} ({number} of {len(videos)} videos done)") from None
        progress.close()
        if item.error:
            display.error(item.error)
        searched.append(item)
    moments = ranked(searched, top)
    if clips is not None and moments:
        moments = write_clips(moments, searched, clips, ffmpeg or require_ffmpeg())
    return Found(question, searched, moments, layers)
