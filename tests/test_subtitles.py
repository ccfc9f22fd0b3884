"""Subtitle files as they come (SRT and WebVTT, BOMs, CRLF, overlapping cues, tags, styles and notes) and the
rule that picks the lines a prompt holds: those whose time spans cover the sampled frames' times."""

from __future__ import annotations

import codecs

import pytest

from dytok_cli.media import subtitles
from dytok_cli.types import Line

SRT = """1
00:00:01,000 --> 00:00:02,500
<font color="white" size=".72c">Hello &amp; welcome</font>

2
00:00:02,000 --> 00:00:04,000 X1:40 X2:600 Y1:20 Y2:50
{\\an8}<i>Two lines</i>
<b>of text</b>

3
00:00:00,250 --> 00:00:00,750
first, though later in the file

4
00:01:00,000 --> 00:01:01,000
a minute in
"""

VTT = """WEBVTT - a title

STYLE
::cue { color: yellow }

NOTE this is a comment
spanning two lines

REGION
id:fred width:40%

intro
00:00.250 --> 00:00.750 align:start position:10%
first, though later in the file

00:00:01.000 --> 00:00:02.500
<v Roger>Hello &amp; welcome</v>

00:00:02.000 --> 00:00:04.000
<c.loud>Two lines</c>
of <00:00:03.000>text

00:01:00.000 --> 00:01:01.000
a minute in
"""

EXPECTED = [
    Line(0.25, 0.75, "first, though later in the file"),
    Line(1.0, 2.5, "Hello & welcome"),
    Line(2.0, 4.0, "Two lines of text"),
    Line(60.0, 61.0, "a minute in"),
]


@pytest.mark.parametrize("text", [SRT, VTT], ids=["srt", "vtt"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_srt_and_webvtt_read_alike(tmp_path, text, newline, encoding):
    path = tmp_path / "talk.srt"
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    assert subtitles.read(path) == EXPECTED


def test_a_bom_in_front_of_webvtt_and_utf32():
    assert subtitles.parse("\ufeff" + VTT) == EXPECTED
    assert subtitles.decode(codecs.BOM_UTF32_LE + VTT.encode("utf-32-le")) == VTT


def test_cues_without_text_or_time_are_dropped_and_no_blank_line_is_tolerated():
    text = "1\n00:00:01,000 --> 00:00:02,000\nkept\n2\n00:00:03,000 --> 00:00:03,000\nzero length\n\n3\n00:00:04,000 --> 00:00:05,000\n<i></i>\n"
    assert subtitles.parse(text) == [Line(1.0, 2.0, "kept")]


def test_an_empty_file_has_no_lines_and_text_without_cues_does_not_parse(tmp_path):
    assert subtitles.parse("") == [] and subtitles.parse("WEBVTT\n\n") == []
    (tmp_path / "notes.srt").write_text("just some words\nno timings here\n")
    with pytest.raises(subtitles.SubtitleError, match=r"notes\.srt: not SRT or WebVTT"):
        subtitles.read(tmp_path / "notes.srt")
    with pytest.raises(subtitles.SubtitleError, match="missing.srt"):
        subtitles.read(tmp_path / "missing.srt")


LINES = [Line(0.0, 1.0, "a"), Line(0.5, 2.0, "b"), Line(1.2, 1.4, "c"), Line(2.0, 3.0, "d"), Line(5.0, 6.0, "e")]


@pytest.mark.parametrize(
    "times, expected",
    [
        ([0.0], ["a"]),  # a line covers its start...
        ([1.0], ["b"]),  # ...but not its end: the frame at 1.0 is past "a"
        ([0.6, 0.7, 0.8], ["a", "b"]),  # overlapping lines both cover; each once however many frames they cover
        ([1.5], ["b"]),  # "c" lies between two frames: no frame sees it
        ([2.9, 0.1], ["a", "d"]),  # in the lines' order, whatever the frames' order
        ([3.0, 4.0], []),
    ],
)
def test_the_lines_that_cover_the_sampled_frames(times, expected):
    assert [line.text for line in subtitles.covering(LINES, times)] == expected


def test_a_cue_repeated_counts_once():
    assert subtitles.covering([Line(0.0, 1.0, "x"), Line(0.0, 1.0, "x"), Line(0.0, 1.0, "y")], [0.5]) == (
        Line(0.0, 1.0, "x"), Line(0.0, 1.0, "y"))


def test_lines_past_the_end_are_clipped():
    assert subtitles.clip(LINES, 2.5) == (*LINES[:3], Line(2.0, 2.5, "d"))


def test_the_lines_within_a_time_range():
    assert [line.text for line in subtitles.between(LINES, 1.0, 2.0)] == ["b", "c"]
    assert [line.text for line in subtitles.between(LINES, 2.0, 10.0)] == ["d", "e"]


def test_the_context_is_lmms_evals_header_and_one_line_each():
    assert subtitles.context(LINES[:2]) == "This video's subtitles are listed below: \na\nb"
    assert subtitles.context(()) == ""


def test_the_subtitle_file_beside_a_video(tmp_path):
    video = tmp_path / "talk.mp4"
    video.touch()
    assert subtitles.find(video) is None
    for name in ("talk.de.vtt", "talk.en-US.srt", "talking.srt", "other.srt", "talk.srt.txt"):
        (tmp_path / name).touch()
    assert subtitles.find(video).name == "talk.en-US.srt"  # English before other languages
    (tmp_path / "talk.vtt").touch()
    assert subtitles.find(video).name == "talk.vtt"  # the video's own name before any language tag
    (tmp_path / "talk.SRT").touch()
    assert subtitles.find(video).name == "talk.SRT"  # and SRT before WebVTT
    folder = tmp_path / "subtitle"
    folder.mkdir()
    (folder / "talk.srt").touch()
    assert subtitles.find(video, folder) == folder / "talk.srt"  # a directory of subtitle files (Video-MME's)
    assert subtitles.find(video, tmp_path / "given.srt") == tmp_path / "given.srt"  # a file: that file
