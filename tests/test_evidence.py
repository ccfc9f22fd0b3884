"""The generated task the shipped trained models learned (benchmarks/trained/tasks.py): deterministic from
its seeds, the splits apart, every answer true of the video as dytok decodes it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

TRAINED = Path(__file__).resolve().parent.parent / "benchmarks" / "trained"
sys.path.insert(0, str(TRAINED))

import tasks  # noqa: E402

from dytok_cli.apps.eval import load_items  # noqa: E402
from dytok_cli.media.video import read_video  # noqa: E402


def test_a_split_is_written_the_same_every_time(tmp_path):
    first = tasks.write_split("test", 3, tmp_path / "a")
    second = tasks.write_split("test", 3, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    for index in range(3):
        name = f"videos/test-{index:05d}.mp4"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_splits_hold_different_videos():
    frames = [tasks.make_video(tasks.video_rng(split, 0)).frames for split in tasks.SPLIT_SEEDS]
    assert not np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[1], frames[2])


def test_the_items_are_an_eval_data_set_asking_each_kind_in_turn(tmp_path):
    data = tasks.write_split("val", 8, tmp_path)
    items = load_items(data)
    assert [item.category for item in items] == [*tasks.KINDS, *tasks.KINDS]
    lines = [json.loads(line) for line in data.read_text().splitlines()]
    for item, line in zip(items, lines):
        assert item.options == tasks.QUESTIONS[item.category][1]
        assert Path(item.video).exists()
        assert 1 <= len(line["target_frames"]) <= 3


@pytest.mark.parametrize("index", range(4))
def test_the_target_shows_in_its_frames_only_and_answers_colour_place_and_quarter(tmp_path, index):
    made = tasks.make_video(tasks.video_rng("test", index))
    path = tmp_path / "video.mp4"
    tasks.write_mp4(path, made.frames)
    frames = read_video(path, num_frames=tasks.FRAMES).images.astype(int)
    assert frames.shape == (tasks.FRAMES, tasks.SIZE, tasks.SIZE, 3)
    # Pixels within a small distance of the target's colour (it is drawn up to 20 levels off it); the
    # textured background and the grey shapes never come that close to a saturated colour.
    near = np.abs(frames - np.array(tasks.COLOURS[made.colour])).sum(axis=-1) < 75
    showing = [f for f in range(tasks.FRAMES) if near[f].sum() >= 10]
    assert showing == list(made.target_frames)
    assert made.quarter == made.target_frames[-1] * 4 // tasks.FRAMES
    ys, xs = near[made.target_frames[0]].nonzero()
    assert tasks.PLACES[made.place] == ("bottom" if ys.mean() > tasks.SIZE / 2 else "top") + (
        " right" if xs.mean() > tasks.SIZE / 2 else " left")


def test_as_many_balls_cross_the_line_as_the_answer_says():
    for index in range(20):
        rng = np.random.default_rng(index)
        crossings = index % len(tasks.COUNTS)
        paths = tasks._ball_paths(rng, crossings)
        sides = [np.sign(path[:, 0] - tasks.LINE_X) for path in paths]
        changes = [int((side[1:] != side[:-1]).sum()) for side in sides]
        # A ball crosses once or never: one that does not stays on its side all along.
        assert sorted(changes, reverse=True)[:crossings] == [1] * crossings
        assert sum(changes) == crossings


def test_an_easier_difficulty_shows_a_larger_target_longer():
    easy = tasks.Difficulty(size=(16, 20), frames=(6, 8))
    shown = [len(tasks.make_video(tasks.video_rng("train", i), easy).target_frames) for i in range(6)]
    assert all(6 <= count <= 8 for count in shown)


def test_a_target_too_large_for_a_quarter_of_the_frame_is_refused():
    with pytest.raises(ValueError, match="quarter"):
        tasks.Difficulty(size=(16, 23))
