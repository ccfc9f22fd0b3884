"""The on-disk cache of a video's query-independent work, without a model: what goes in comes out,
bit for bit, and anything damaged or foreign is a miss, never trusted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import modes, plain_modes

from dytok_cli.media.cache import VisualCache
from dytok_cli.types import EncodedVideo, Frames, Line, Transcript, Visual


def encoded(seed: int, frames: int = 3, tokens: int = 4) -> EncodedVideo:
    generator = torch.Generator().manual_seed(seed)
    return EncodedVideo(
        features=torch.randn(frames, tokens, 8, generator=generator),
        extra=torch.randn(1, 8, generator=generator),
        attention=torch.rand(frames, tokens, generator=generator),
        keys=torch.randn(frames, tokens, 5, generator=generator),
        frames_per_group=2,
        grid=(frames, 4, 4),
        frame_seconds=0.25,
        frame_size=(8, 8),
    )


@pytest.fixture
def visual(tmp_path) -> Visual:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"pretend video bytes")
    frames = Frames(images=np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3), indices=(0, 5),
                    timestamps=(0.0, 0.625), backend="pyav", video_fps=8.0, total_frames=6, duration_s=0.75)
    return Visual(str(video), frames, encoded(0), encoded(1), {"decode_s": 1.0, "vision_s": 2.0})


def assert_same(a: EncodedVideo, b: EncodedVideo) -> None:
    for name in ("features", "extra", "attention", "keys"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert (a.frames_per_group, a.grid, a.frame_seconds, a.frame_size) == (b.frames_per_group, b.grid, b.frame_seconds, b.frame_size)


def test_what_is_stored_comes_back(tmp_path, visual):
    cache = VisualCache(tmp_path / "cache")
    key = cache.key(visual.video, {"model": "m"})
    assert cache.load(key, visual.video, torch.device("cpu")) is None
    cache.store(key, visual)
    hit = cache.load(key, visual.video, torch.device("cpu"))
    assert np.array_equal(hit.frames.images, visual.frames.images)
    assert hit.frames.timestamps == visual.frames.timestamps and hit.frames.indices == visual.frames.indices
    assert_same(hit.encoded, visual.encoded)
    assert_same(hit.prior_encoded, visual.prior_encoded)
    assert hit.timings == {"decode_s": 0.0, "vision_s": 0.0}  # nothing was spent on it this time
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [f"{key}.safetensors"]  # no temporary left


def test_entries_get_the_mode_open_would(tmp_path, visual, umask):
    """Not private: a cache directory shared by a group is a normal use, and the directory's own mode
    decides who may read it (see media/cache.py)."""
    cache = VisualCache(tmp_path / "cache")
    key = cache.key(visual.video, {"model": "m"})
    cache.store(key, visual)
    said = Transcript("speech (tiny)", (Line(0.0, 1.5, "hello"),), None)
    cache.store_transcript(key, said)
    assert cache.load_transcript(key) == said
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == [f"{key}.safetensors", f"{key}.transcript.json"]
    assert modes(tmp_path / "cache") == plain_modes(tmp_path / "cache", umask)


def test_a_self_prior_is_stored_once(tmp_path, visual):
    visual.prior_encoded = visual.encoded
    cache = VisualCache(tmp_path)
    key = cache.key(visual.video, {})
    cache.store(key, visual)
    hit = cache.load(key, visual.video, torch.device("cpu"))
    assert hit.prior_encoded is hit.encoded


def test_the_key_covers_the_bytes_and_the_identity(tmp_path, visual):
    cache = VisualCache(tmp_path / "cache")
    key = cache.key(visual.video, {"model": "m"})
    assert key == cache.key(visual.video, {"model": "m"})
    assert key != cache.key(visual.video, {"model": "other"})
    with open(visual.video, "ab") as handle:
        handle.write(b"!")
    assert key != cache.key(visual.video, {"model": "m"})


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "garbage"])
def test_a_damaged_entry_is_a_miss(tmp_path, visual, damage):
    cache = VisualCache(tmp_path)
    key = cache.key(visual.video, {})
    cache.store(key, visual)
    path = tmp_path / f"{key}.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[-1] ^= 0xFF  # inside the tensors: only the digest can tell
    elif damage == "truncate":
        del data[len(data) // 2 :]
    else:
        data = bytearray(b"not safetensors at all")
    path.write_bytes(bytes(data))
    assert cache.load(key, visual.video, torch.device("cpu")) is None
