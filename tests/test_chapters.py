"""Chapter files as their readers read them: FFmpeg's own WebVTT, SubRip and ffmetadata demuxers (through
PyAV, and `ffmpeg`/`ffprobe` where installed), and YouTube's rules for chapter lines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest
from clips import write_shots

from dytok_cli.chapters import Chapter, ffmetadata, markdown, srt, webvtt, youtube, youtube_problems

# Titles with what each format must escape: WebVTT's "&", "<" and "-->", ffmetadata's "=", ";", "#", "\" and
# newlines, and a non-ASCII letter.
CHAPTERS = [
    Chapter(0.0, 12.5, "Intro & <b>bold</b> --> next", "A room."),
    Chapter(12.5, 25.042, "Key = value; # not a comment \\ backslash", ""),
    Chapter(25.042, 3725.5, "Two\nlines, déjà vu", "The rest."),
]
EXPECTED_TITLES = ["Intro & <b>bold</b> --> next", "Key = value; # not a comment \\ backslash", "Two lines, déjà vu"]
MS = [(0, 12500), (12500, 25042), (25042, 3725500)]


def subtitle_cues(path: Path) -> list[tuple[int, int, bytes]]:
    """(start ms, end ms, text) of every cue, as FFmpeg's demuxer for the file's format reads it."""
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        assert stream.time_base == Fraction(1, 1000)
        return [(packet.pts, packet.pts + packet.duration, bytes(packet)) for packet in container.demux(stream) if packet.size]


def test_webvtt_is_read_back_by_ffmpeg(tmp_path):
    path = tmp_path / "chapters.vtt"
    path.write_text(webvtt(CHAPTERS), encoding="utf-8")
    assert path.read_text(encoding="utf-8").startswith("WEBVTT\n\n1\n00:00:00.000 --> 00:00:12.500\n")
    cues = subtitle_cues(path)
    assert [(start, end) for start, end, _ in cues] == MS
    with av.open(str(path)) as container:  # the decoder unescapes the cue text
        texts = [subtitle.dialogue.decode() for packet in container.demux(container.streams.subtitles[0])
                 if packet.size for subtitle in packet.decode()]
    assert texts[0] == EXPECTED_TITLES[0] and texts[2] == EXPECTED_TITLES[2]


def test_srt_is_read_back_by_ffmpeg(tmp_path):
    path = tmp_path / "chapters.srt"
    path.write_text(srt(CHAPTERS), encoding="utf-8")
    assert re.match(r"1\n00:00:00,000 --> 00:00:12,500\n.+\n\n2\n", path.read_text(encoding="utf-8"))
    cues = subtitle_cues(path)
    assert [(start, end) for start, end, _ in cues] == MS
    assert cues[1][2].decode() == EXPECTED_TITLES[1] and cues[2][2].decode() == EXPECTED_TITLES[2]


def test_ffmetadata_is_read_back_by_ffmpeg(tmp_path):
    path = tmp_path / "chapters.ffmetadata"
    path.write_text(ffmetadata(CHAPTERS), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert text.startswith(";FFMETADATA1\n") and text.count("TIMEBASE=1/1000") == 3
    with av.open(str(path), format="ffmetadata") as container:
        chapters = container.chapters()
    assert [(c["start"], c["end"]) for c in chapters] == MS
    assert all(c["time_base"] == Fraction(1, 1000) for c in chapters)
    assert [c["metadata"]["title"] for c in chapters] == EXPECTED_TITLES


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg and ffprobe")
def test_ffmpeg_embeds_the_chapters_and_ffprobe_shows_them(tmp_path):
    video = write_shots(tmp_path / "video.mp4", [12.5, 25.042], 40, fps=4)
    chapters = [Chapter(0.0, 12.5, EXPECTED_TITLES[0]), Chapter(12.5, 25.042, EXPECTED_TITLES[1]),
                Chapter(25.042, 40.0, EXPECTED_TITLES[2])]
    metadata = tmp_path / "chapters.ffmetadata"
    metadata.write_text(ffmetadata(chapters), encoding="utf-8")
    out = tmp_path / "out.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-i", str(metadata), "-map_metadata", "1",
                    "-map_chapters", "1", "-c", "copy", str(out)], check=True, timeout=60)
    shown = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_chapters", "-of", "json", str(out)],
                                      check=True, capture_output=True, text=True, timeout=60).stdout)["chapters"]
    assert [(float(c["start_time"]), float(c["end_time"])) for c in shown] == [(0.0, 12.5), (12.5, 25.042), (25.042, 40.0)]
    assert [c["tags"]["title"] for c in shown] == EXPECTED_TITLES


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffprobe")
@pytest.mark.parametrize("writer,suffix", [(webvtt, ".vtt"), (srt, ".srt")])
def test_ffprobe_reads_the_subtitle_files(tmp_path, writer, suffix):
    path = tmp_path / f"chapters{suffix}"
    path.write_text(writer(CHAPTERS), encoding="utf-8")
    shown = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0",
                            str(path)], check=True, capture_output=True, text=True, timeout=60).stdout.split()
    assert [tuple(float(x) for x in line.split(",")[:2]) for line in shown] == [
        (start / 1000, (end - start) / 1000) for start, end in MS]


YOUTUBE_LINE = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d\d) (.+)$")


def youtube_starts(text: str) -> list[int]:
    """Seconds of each chapter line, as YouTube reads a description."""
    starts = []
    for line in text.splitlines():
        hours, minutes, seconds, _ = YOUTUBE_LINE.match(line).groups()
        starts.append(int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
    return starts


def test_youtube_lines_follow_youtube_rules():
    chapters = [Chapter(0, 10.4, "A"), Chapter(10.4, 20.41, "B"), Chapter(20.41, 3725.5, "C"), Chapter(3725.5, 3800, "D")]
    text = youtube(chapters)
    assert text.splitlines()[0] == "0:00 A" and text.splitlines()[3] == "1:02:05 D"
    starts = youtube_starts(text)
    assert starts[0] == 0 and len(starts) >= 3
    assert all(b - a >= 10 for a, b in zip(starts, starts[1:]))
    assert youtube_problems(chapters) == []


def test_youtube_problems_say_why_youtube_would_not_show_them():
    assert "at least 3" in youtube_problems([Chapter(0, 30, "A"), Chapter(30, 60, "B")])[0]
    assert "chapter 2 is shorter" in youtube_problems([Chapter(0, 30, "A"), Chapter(30, 35, "B"), Chapter(35, 60, "C")])[0]


def test_markdown_has_the_summary_then_timed_chapters():
    text = markdown("talk.mp4", "It is a talk.", CHAPTERS)
    assert text.startswith("# talk.mp4\n\nIt is a talk.\n\n## Chapters\n")
    assert "### [0:00:12] Key = value" in text and "### [0:00:25] Two lines, déjà vu\n\nThe rest." in text


def test_markdown_says_a_description_that_is_the_summary_once():
    """A video of one chapter is summarised by its description: under its heading it is not said again."""
    text = markdown("clip.mp4", "A ball bounces.", [Chapter(0, 4, "The ball", "A ball bounces.")])
    assert text == "# clip.mp4\n\nA ball bounces.\n\n## Chapters\n\n### [0:00:00] The ball\n"
