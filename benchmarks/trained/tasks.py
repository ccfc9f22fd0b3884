"""The generated video task the trained models learn, and its splits as `dytok eval` data sets.

A video is FRAMES frames of SIZE x SIZE pixels at FPS frames a second (H.264, yuv420p). On a textured,
still background a thin vertical line splits the frame; grey shapes drift about and white balls move
across, some crossing the line. In 1-3 consecutive frames a small coloured shape (the target) appears
somewhere. Four kinds of question, each with four options in a fixed order:

- colour: what colour the target is      (the answer lives in the target's few frames and few patches)
- where:  which quarter of the frame it is in  (the same: its place in those frames)
- when:   which quarter of the video it appears in  (where the answer is, in time)
- count:  how many balls cross the line  (the answer needs many frames)

The target's shape (square, circle, triangle or cross) varies but is not asked: the small models trained
here did not learn to tell shapes this small apart in the time they had (see docs/evidence.md).

Everything comes from a seed: video `i` of a split is drawn from numpy's generator seeded with
(split seed, i), so a split is the same on every machine and the test split need not be stored:
`python benchmarks/trained/tasks.py test DIR` writes it again: the same questions and drawn frames
(x264 on one thread gave the same bytes in every check but one). Train, validation and test have
different seeds; training draws its videos from the train seed only.

Difficulty (target size and how many frames it shows in) is a parameter, so training can start on large
targets shown for several frames (a curriculum) and end where the test split is.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

FRAMES = 32  # sampled with `--frames 32`: every frame of the video, once
SIZE = 48  # pixels a side: LLaVA-OV's SigLIP takes 48x48 whole; Qwen's patch 8 x merge 2 = 16 divides it
FPS = 8
LINE_X = SIZE // 2
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 235), "yellow": (235, 215, 40)}
SHAPES = ("square", "circle", "triangle", "cross")
QUARTERS = ("first", "second", "third", "last")
PLACES = ("top left", "top right", "bottom left", "bottom right")
COUNTS = ("zero", "one", "two", "three")
QUESTIONS = {
    "colour": ("What colour is the small coloured shape that appears briefly?", tuple(COLOURS)),
    "where": ("Where is the small coloured shape that appears briefly?", tuple(f"in the {p}" for p in PLACES)),
    "when": ("When does the small coloured shape appear?", tuple(f"in the {q} quarter" for q in QUARTERS)),
    "count": ("How many white balls cross the line?", COUNTS),
}
KINDS = tuple(QUESTIONS)


@dataclass(frozen=True)
class Difficulty:
    """How hard the target is to see: its side in pixels and the frames it shows in (inclusive ranges)."""

    size: tuple[int, int] = (8, 11)
    frames: tuple[int, int] = (1, 3)

    def __post_init__(self) -> None:
        if self.size[1] > SIZE // 2 - 2:
            raise ValueError(f"a target of {self.size[1]} pixels does not fit in a quarter of a {SIZE}-pixel frame")
        if self.frames[1] > FRAMES // 4:
            raise ValueError(f"a target in {self.frames[1]} frames does not fit in a quarter of {FRAMES} frames")


TEST = Difficulty()  # the validation and test splits


@dataclass(frozen=True)
class Video:
    """One generated video: its frames and what the questions about it ask."""

    frames: np.ndarray  # (FRAMES, SIZE, SIZE, 3) uint8 RGB, as drawn (before encoding)
    colour: str
    shape: str
    target_frames: tuple[int, ...]  # the frames the target shows in
    place: int  # the quarter of the frame it is in: an index of PLACES
    crossings: int  # white balls that cross the line

    @property
    def quarter(self) -> int:
        return self.target_frames[0] * 4 // FRAMES

    def answer(self, kind: str) -> int:
        """The index of the right option of question `kind`."""
        return {
            "colour": list(COLOURS).index(self.colour),
            "where": self.place,
            "when": self.quarter,
            "count": self.crossings,
        }[kind]


def _background(rng: np.random.Generator) -> np.ndarray:
    """A muted texture: a smooth low-saturation colour field plus fine grain, so no patch is plain and the
    target stands out by colour, not by being the only thing drawn."""
    base = rng.uniform(70, 150)
    tint = rng.uniform(-18, 18, size=(4, 4, 3))
    coarse = np.asarray(Image.fromarray(((tint + 128).clip(0, 255)).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC))
    grain = rng.normal(0, 9, size=(SIZE, SIZE, 1))
    stripes = 10 * np.sin(np.arange(SIZE) * rng.uniform(0.3, 1.2) + rng.uniform(0, 6))[None, :, None]
    if rng.random() < 0.5:
        stripes = stripes.transpose(1, 0, 2)
    return (base + coarse.astype(float) - 128 + grain + stripes).clip(0, 255).astype(np.uint8)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, side: float, fill: tuple) -> None:
    """`shape` of about `side` pixels centred at (x, y)."""
    h = side / 2
    if shape == "square":
        draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
    elif shape == "circle":
        draw.ellipse([x - h, y - h, x + h, y + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - h), (x + h, y + h), (x - h, y + h)], fill=fill)
    else:  # a plus-shaped cross, arms a third of its side wide
        w = max(1.0, side / 6)
        draw.rectangle([x - h, y - w, x + h, y + w], fill=fill)
        draw.rectangle([x - w, y - h, x + w, y + h], fill=fill)


def _ball_paths(rng: np.random.Generator, crossings: int) -> list[np.ndarray]:
    """(FRAMES, 2) centre of each white ball: `crossings` of them cross the line once, in either
    direction; up to two more move about on one side and never reach it."""
    t = np.linspace(0, 1, FRAMES)[:, None]
    paths = []
    for _ in range(crossings):
        side = rng.choice([-1, 1])
        start = np.array([LINE_X + side * rng.uniform(6, LINE_X - 4), rng.uniform(4, SIZE - 4)])
        end = np.array([LINE_X - side * rng.uniform(6, LINE_X - 4), rng.uniform(4, SIZE - 4)])
        paths.append(start + (end - start) * t)
    for _ in range(rng.integers(0, 3)):
        side = rng.choice([-1, 1])
        xs = LINE_X + side * rng.uniform(5, LINE_X - 4, size=2)
        start, end = np.array([xs[0], rng.uniform(4, SIZE - 4)]), np.array([xs[1], rng.uniform(4, SIZE - 4)])
        paths.append(start + (end - start) * t)
    return paths


def make_video(rng: np.random.Generator, difficulty: Difficulty = TEST) -> Video:
    """One video drawn from `rng`, its target as hard to see as `difficulty` says."""
    background = _background(rng)
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    shown = int(rng.integers(difficulty.frames[0], difficulty.frames[1] + 1))
    quarter = int(rng.integers(0, 4))
    span = FRAMES // 4
    first = quarter * span + int(rng.integers(0, span - shown + 1))  # all of its frames in one quarter
    target_frames = tuple(range(first, first + shown))
    side = rng.uniform(*difficulty.size)
    place = int(rng.integers(0, len(PLACES)))
    # Wholly within its quarter of the frame, a pixel clear of the edges and of the lines between quarters.
    half = side / 2 + 1
    low = rng.uniform(half, SIZE / 2 - half, size=2)
    target_at = low + np.array([place % 2, place // 2]) * SIZE / 2  # (x, y)
    target_fill = tuple(int(c) for c in np.clip(np.array(COLOURS[colour]) + rng.integers(-20, 21, size=3), 0, 255))
    crossings = int(rng.integers(0, len(COUNTS)))
    balls = _ball_paths(rng, crossings)
    ball_radius = rng.uniform(2.0, 3.0, size=len(balls))
    # Grey shapes that drift the whole video: shapes without colour, so the target is told apart by its colour.
    greys = []
    for _ in range(rng.integers(1, 4)):
        start, end = rng.uniform(5, SIZE - 5, size=2), rng.uniform(5, SIZE - 5, size=2)
        greys.append((str(rng.choice(SHAPES)), start, end, rng.uniform(6, 10), int(rng.uniform(40, 215))))
    frames = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for f in range(FRAMES):
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        draw.line([(LINE_X, 0), (LINE_X, SIZE)], fill=(20, 20, 20), width=1)
        for grey_shape, start, end, grey_side, level in greys:
            x, y = start + (end - start) * f / (FRAMES - 1)
            _draw_shape(draw, grey_shape, x, y, grey_side, (level, level, level))
        for path, radius in zip(balls, ball_radius):
            x, y = path[f]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(250, 250, 250))
        if f in target_frames:
            _draw_shape(draw, shape, *target_at, side, target_fill)
        frames[f] = np.asarray(image)
    return Video(frames, colour, shape, target_frames, place, crossings)


def video_rng(split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([SPLIT_SEEDS[split], index])


def write_mp4(path: Path, frames: np.ndarray) -> None:
    """H.264 at near-lossless quality (crf 12), one x264 thread so the bytes are the same on every run."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = {"crf": "12", "preset": "medium", "threads": "1"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def option_texts(kind: str) -> tuple[str, ...]:
    return QUESTIONS[kind][1]


def item(split: str, index: int, kind: str, video: str, made: Video) -> dict:
    """The `dytok eval` item asking question `kind` about `made`, stored at `video` (relative)."""
    question, options = QUESTIONS[kind]
    return {
        "id": f"{split}-{index:05d}",
        "video": video,
        "question": question,
        "options": list(options),
        "answer": "ABCD"[made.answer(kind)],
        "category": kind,
        # Beside eval's fields (it ignores others): where the answer is, for the prior's frame ranks.
        "target_frames": list(made.target_frames),
    }


def write_split(split: str, count: int, directory: Path, difficulty: Difficulty = TEST) -> Path:
    """`count` videos of `split` in `directory/videos/` and `directory/{split}.jsonl` asking one question
    about each, the kinds in turn (colour, where, when, count, colour, ...). Returns the JSONL's path."""
    videos = directory / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        made = make_video(video_rng(split, index), difficulty)
        name = f"videos/{split}-{index:05d}.mp4"
        write_mp4(directory / name, made.frames)
        lines.append(json.dumps(item(split, index, KINDS[index % len(KINDS)], name, made)))
    data = directory / f"{split}.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", choices=SPLIT_SEEDS)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=800, help="videos, one question each (default 800)")
    args = parser.parse_args(argv)
    data = write_split(args.split, args.count, args.directory)
    print(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
