"""The generated task the shipped trained models learned (benchmarks/trained/tasks.py): deterministic from
its seeds, the splits apart, every answer true of the video as dytok decodes it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
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
        drawn = tasks.make_video(tasks.video_rng("test", index)).frames
        assert np.array_equal(drawn, tasks.make_video(tasks.video_rng("test", index)).frames)
        for written in ("a", "b"):
            decoded = read_video(tmp_path / written / f"videos/test-{index:05d}.mp4", num_frames=tasks.FRAMES).images
            # x264 at crf 12 leaves at most 1.95 levels of mean difference from the drawn frames (12 test
            # videos measured); the encoder's bytes are not asserted (they differed once under load).
            assert np.abs(decoded.astype(int) - drawn).mean() < 3


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


# --- the shipped trained models ---------------------------------------------------------------------------

from dytok_cli import Pipeline, Settings  # noqa: E402
from dytok_cli.apps.eval import Item, extract_letter, prompt  # noqa: E402
from dytok_cli.record import frame_ranks  # noqa: E402

MODELS = TRAINED / "models"
# A fixed sample of the test split (its kinds come in turn: colour, where, when, count): its first 16
# colour and 16 when questions, whose answers the models learned.
SAMPLE = [*range(0, 64, 4), *range(2, 66, 4)]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample as `eval` reads it, with each item's target frames; its videos regenerated from the test
    split's seed."""
    directory = tmp_path_factory.mktemp("test-split")
    lines = []
    for index in SAMPLE:
        made = tasks.make_video(tasks.video_rng("test", index))
        video = f"test-{index:05d}.mp4"
        tasks.write_mp4(directory / video, made.frames)
        lines.append(tasks.item("test", index, tasks.KINDS[index % len(tasks.KINDS)], video, made))
    data = directory / "sample.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return [(item, line["target_frames"]) for item, line in zip(load_items(data), lines)]


@dataclass(frozen=True)
class Answered:
    item: Item
    at_one: str | None  # the letter answered with every visual token
    pruned: str | None  # the letter dytok-fastv answered at ratio 0.25
    rank: int  # the best rank dytok-fastv's prior gave a frame the target shows in


@pytest.fixture(scope="module", params=["llava-ov", "qwen3.5"])
def answered(request, sample) -> tuple[str, list[Answered]]:
    """What the shipped model `request.param` answers for each item of the sample."""
    common = dict(model=str(MODELS / request.param), frames=tasks.FRAMES, device="cpu", dtype="float32",
                  decode_timeout=None)
    whole = Pipeline(Settings(method="none", **common))
    pruned = Pipeline(Settings(method="dytok-fastv", ratio=0.25, **common), model=whole.model)
    results = []
    for item, target_frames in sample:
        question = prompt(item)
        visual = whole.prepare(item.video)
        at_one = whole.ask(visual, question).text
        answer = pruned.ask(visual, question)
        ranks = frame_ranks(answer.plan.weights.tolist())
        # A frame of Qwen's is a temporal patch of two sampled frames.
        group = visual.encoded.frames_per_group
        rank = min(ranks[frame // group] for frame in target_frames)
        results.append(Answered(item, extract_letter(at_one, item.options), extract_letter(answer.text, item.options), rank))
        whole.release()
        pruned.release()
    return request.param, results


def share(results: list[Answered], kind: str | None, right: Callable[[Answered], bool]) -> float:
    """The share of the sample's items of `kind` (None: all of them) for which `right` holds."""
    chosen = [result for result in results if kind in (None, result.item.category)]
    return sum(map(right, chosen)) / len(chosen)


# The least share of the sample's colour questions each model answers right with every visual token. On
# the whole test split (docs/evidence.md): LLaVA-OV 98.8 % [97-100]; Qwen3.5 92.4 % [88-95], 14 of
# this sample's 16. Qwen3.5's floor is one answer under that: float32 answers the same every run on one
# CPU, but another CPU's kernels sum in another order, and a close call may flip.
COLOUR = {"llava-ov": 0.9, "qwen3.5": 13 / 16}


def test_the_trained_model_answers_colour_with_every_visual_token(answered):
    name, results = answered
    assert share(results, "colour", lambda result: result.at_one == result.item.answer) >= COLOUR[name], name


def test_the_prior_ranks_a_frame_the_target_shows_in_among_its_top_3_in_most_videos(answered):
    # dytok-fastv's prior ranks a target frame in its top 3 in 75.7 % [72-79] of the test split's videos
    # asked colour, where or when (docs/evidence.md), in 25 of this sample's 32. At random: 9 % (3 of 32).
    # Qwen3.5's: 79.6 % of its 16 frames' videos, 27 of this sample's 32 (at random 19 %).
    name, results = answered
    assert share(results, None, lambda result: result.rank <= 3) >= 0.55, name


def test_dytok_fastv_keeping_a_quarter_of_the_tokens_answers_as_every_token_does(answered):
    # On the test split it gives ratio 1's letter for 99.6 % of the colour and of the when questions
    # (docs/evidence.md); one of this sample's 32 differs. "When" is read from the positions the kept
    # tokens keep: renumbered contiguously after the prune layer (broken by hand once), 25 of 32 agreed.
    # Qwen3.5: all 32 agree (colour 92.4 % and when 79.6 % at 0.25 on the test split); with the positions
    # renumbered so (by hand once), 27 of 32.
    name, results = answered
    assert share(results, None, lambda result: result.pruned == result.at_one) >= 30 / 32, name

