"""Frames that repeat the one before are encoded once (--repeats, exact by default): which are found
(pure, no model), and that every family's encoding of a video with stills is, bit for bit, the encoding
of every frame."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dytok_cli import Pipeline, Settings
from dytok_cli.math.repeats import Repeats, find_repeats, tower_frames
from dytok_cli.types import Frames


def test_a_still_is_encoded_once_and_a_frame_that_differs_again():
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    repeats = find_repeats(np.stack([a, a, a, b, b, a]))
    assert repeats == Repeats(encoded=(0, 3, 5), source=(0, 0, 0, 1, 1, 2))
    assert repeats.reused == 3


def test_one_level_of_one_pixel_is_a_different_frame():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[3, 3, 2] = 1
    assert find_repeats(np.stack([a, b])).reused == 0


def test_a_tolerance_takes_frames_within_it_of_the_last_one_encoded():
    still = np.full((4, 4, 3), 100, np.uint8)
    noisy = still.copy()
    noisy[0, 0, 0] = 140  # one pixel 40 levels off, as H.264 leaves a slide's frames
    cut = np.zeros((4, 4, 3), np.uint8)
    assert find_repeats(np.stack([still, noisy, cut]), tolerance=40).encoded == (0, 2)
    assert find_repeats(np.stack([still, noisy, cut]), tolerance=39).encoded == (0, 1, 2)
    # A fade 10 levels a frame: against the frame encoded, not the one before, so it cannot creep past 15.
    fade = np.stack([still + 10 * step for step in range(5)]).astype(np.uint8)
    assert find_repeats(fade, tolerance=15).encoded == (0, 2, 4)
    # Levels below the reference's count as far as those above (no uint8 wrap-around).
    assert find_repeats(np.stack([still, still - 50]), tolerance=40).encoded == (0, 1)


@pytest.mark.parametrize("args, message", [
    (["--repeats", "256"], "--repeats must be 0 to 255 levels, or off"),
    (["--repeats", "-1"], "--repeats must be 0 to 255 levels, or off"),
    (["--repeats", "some"], "--repeats is 0 to 255 levels, or off, not 'some'"),
])
def test_a_bad_tolerance_is_a_usage_error(dytok_here, clip, args, message):
    result = dytok_here("ask", str(clip), "what?", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_lever_is_turned_on_at_the_tolerance_given_and_off_as_repeats_off():
    from dytok_cli.config import Lever, with_levers

    settings = Settings(repeats=40)
    assert with_levers(settings, [Lever.reuse_repeats], []).repeats is None
    assert with_levers(settings, [Lever.reuse_repeats], [Lever.reuse_repeats]) == settings
    assert with_levers(Settings(repeats=None), [Lever.reuse_repeats], [Lever.reuse_repeats]).repeats == 0


def test_tower_frames_fill_the_last_as_the_processors_do():
    images = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((5, 2, 2, 3), np.uint8)  # frame i is all i
    groups = tower_frames(images, 2)  # (3, 2, 2, 2, 3)
    assert groups.shape == (3, 2, 2, 2, 3)
    assert [int(group[:, 0, 0, 0][1]) for group in groups] == [1, 3, 4]  # the last group repeats frame 4
    assert tower_frames(images, 1).shape == (5, 1, 2, 2, 3)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40))
def test_spreading_the_encoded_frames_gives_every_frames_own(contents):
    """Whatever the run lengths: encoding only the frames kept and spreading them back is encoding each."""
    groups = np.array(contents, dtype=np.uint8)[:, None]  # (G, 1) frame "pixels"
    repeats = find_repeats(groups)
    encode = lambda selected: torch.tensor(selected, dtype=torch.float32) * 10 + 1  # noqa: E731  any per-frame function
    assert torch.equal(repeats.spread(encode(groups[list(repeats.encoded)])), encode(groups))
    # Never one encoded twice in a row: each encoded frame differs from the one encoded before it.
    assert all(contents[i] != contents[j] for i, j in zip(repeats.encoded, repeats.encoded[1:]))


def test_none_encodes_every_frame_and_spreads_nothing():
    values = torch.arange(4)
    assert Repeats.none(4).reused == 0 and Repeats.none(4).spread(values) is values


def stills(images: np.ndarray, pattern: list[int]) -> Frames:
    """A video of the frames `images[pattern[i]]`: stills where the pattern repeats."""
    chosen = images[pattern]
    return Frames(images=chosen, indices=tuple(range(len(pattern))), timestamps=tuple(i * 0.5 for i in range(len(pattern))),
                  backend="pyav", video_fps=2.0, total_frames=len(pattern), duration_s=len(pattern) / 2)


# Sampled frames: three stills, the last one frame long. Qwen's temporal patches pair them: (0,0) (0,1)
# (1,1) (1,1) and (2,2), the last filled with a copy; only the fourth repeats the one before.
PATTERN = [0, 0, 0, 1, 1, 1, 1, 1, 2]
REUSED = {1: 6, 2: 1}  # by sampled frames per tower frame


def test_every_family_encodes_a_video_with_stills_as_it_encodes_every_frame(family, clip):
    pipeline = Pipeline(Settings(model=str(family.dir), frames=3, device="cpu", dtype="float32"), model=family.adapter)
    frames = stills(pipeline.read(clip).images, PATTERN)
    reused = family.adapter.encode(frames)
    every = family.adapter.encode(frames, repeat_tolerance=None)
    assert reused.reused_frames == REUSED[reused.frames_per_group] and every.reused_frames == 0
    # Bit for bit, not within a tolerance: the tower encodes each frame on its own, so the frames it did
    # encode come out as they do beside the others, and the repeats are copies of them.
    for field in dataclasses.fields(every):
        ours, theirs = getattr(reused, field.name), getattr(every, field.name)
        if isinstance(theirs, torch.Tensor):
            assert torch.equal(ours, theirs), field.name
        elif field.name != "reused_frames":
            assert len(ours) == len(theirs) and all(map(torch.equal, ours, theirs)) if field.name == "deepstack" \
                else ours == theirs, field.name


def test_with_a_tolerance_a_near_repeat_takes_the_features_of_the_frame_encoded(tiny_llava, tiny_llava_dir, clip):
    """Lossy by design: the near repeat is answered as if it were the frame before it."""
    images = Pipeline(Settings(model=str(tiny_llava_dir), frames=2, device="cpu", dtype="float32"), model=tiny_llava).read(clip).images
    near = images[0].copy()
    near[0, 0] = np.clip(near[0, 0].astype(int) + 30, 0, 255)
    frames = stills(np.stack([images[0], near, images[1]]), [0, 1, 2])
    exact, tolerant = tiny_llava.encode(frames), tiny_llava.encode(frames, repeat_tolerance=30)
    assert (exact.reused_frames, tolerant.reused_frames) == (0, 1)
    assert torch.equal(tolerant.features[1], exact.features[0]) and not torch.equal(exact.features[1], exact.features[0])
    assert torch.equal(tolerant.features[2], exact.features[2])


def test_a_video_with_stills_is_answered_as_without_reuse_and_the_record_counts_them(dytok_here, tiny_llava_dir, tmp_path):
    from clips import write_stills

    video = write_stills(tmp_path / "slides.mp4", [0, 0, 0, 0, 1, 1, 2, 2])
    common = ["ask", str(video), "what?", "--model", str(tiny_llava_dir), "--frames", "8", "--json", "--max-new-tokens", "4"]
    reused, every = (json.loads(dytok_here(*common, *flag).stdout) for flag in ([], ["--repeats", "off"]))
    assert (reused["reused_frames"], every["reused_frames"]) == (5, 0)
    assert reused["answer"] == every["answer"]
    assert [frame["weight"] for frame in reused["frames"]] == [frame["weight"] for frame in every["frames"]]


@pytest.mark.parametrize("reuse", [True, False])
def test_the_cache_keeps_encodings_with_and_without_reuse_apart(tiny_llava_dir, tiny_llava, clip, tmp_path, reuse):
    from dytok_cli.media.cache import VisualCache

    settings = Settings(model=str(tiny_llava_dir), frames=4, device="cpu", dtype="float32", repeats=0 if reuse else None)
    pipeline = Pipeline(settings, model=tiny_llava, cache=VisualCache(tmp_path))
    other = Pipeline(dataclasses.replace(settings, repeats=None if reuse else 0), model=tiny_llava, cache=VisualCache(tmp_path))
    assert pipeline._prepare_frames(clip) is not None
    key = lambda p: p.cache.key(clip, p._cache_identity())  # noqa: E731
    assert key(pipeline) != key(other)


def test_a_lossy_tolerance_keeps_summaries_and_eval_runs_apart_and_exact_reuse_does_not(tiny_llava_dir, tiny_llava, clip, tmp_path):
    """Exact reuse changes no answer, so work done without it resumes; a tolerance may change answers."""
    from dytok_cli.apps.eval import manifest
    from dytok_cli.apps.summarize import ResumeStore, Segmentation

    data = tmp_path / "data.jsonl"
    data.write_text("")
    settings = Settings(model=str(tiny_llava_dir), frames=4, device="cpu", dtype="float32")
    variants = [settings, dataclasses.replace(settings, repeats=None), dataclasses.replace(settings, repeats=8)]
    folders = [ResumeStore(tmp_path / "resume", str(clip), Pipeline(s, model=tiny_llava), Segmentation()).folder for s in variants]
    manifests = [manifest(data, [s], None) for s in variants]
    assert folders[0] == folders[1] != folders[2]
    assert manifests[0] == manifests[1] != manifests[2]
