"""`--max-pixels`: a Qwen model sees each frame at most that large, as qwen-vl-utils (the oracle) sizes a frame
at that `max_pixels`; the record says the size and the tokens it makes; it is part of what is cached and
resumed; LLaVA-OneVision, whose frames have one size, refuses it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dytok_cli.apps.summarize import ResumeStore, Segmentation
from dytok_cli.config import Method, Settings
from dytok_cli.media.cache import VisualCache
from dytok_cli.pipeline import Pipeline
from dytok_cli.record import plan_record

qwen_vl_utils = pytest.importorskip("qwen_vl_utils")

QWEN = ["qwen2_5_vl", "qwen3_vl", "qwen3_5"]  # the MoE variants share their dense family's processor
FRAMES = 4
# The clip's 64x48 = 3,072-pixel frames lowered on every tiny Qwen (Qwen2.5-VL's already to 40x24 = 960).
MAX_PIXELS = 800


def settings_for(model_dir, **changes) -> Settings:
    return Settings(model=str(model_dir), method=Method.none, frames=FRAMES, **changes)


@pytest.mark.parametrize("model_type", QWEN)
def test_max_pixels_lowers_the_tokens_per_frame_as_qwen_vl_utils_sizes_a_frame(model_type, build_family, load_family, clip):
    adapter = load_family(model_type)
    vision = adapter.model.config.vision_config
    settings = settings_for(build_family(model_type), max_pixels=MAX_PIXELS)
    record = plan_record(Pipeline(settings, model=adapter).plan(clip, "what?"), settings, None)
    smallest = adapter.processor.video_processor.size["shortest_edge"]  # the tiny processor's, not qwen-vl-utils' own
    reference = qwen_vl_utils.fetch_video(
        {"video": str(clip), "nframes": FRAMES, "max_pixels": MAX_PIXELS, "min_pixels": smallest},
        image_patch_size=vision.patch_size,
    )
    height, width = reference.shape[-2:]
    assert record["frame_size"] == [width, height]
    assert width * height <= MAX_PIXELS
    assert record["tokens_per_frame"] == (height // vision.patch_size) * (width // vision.patch_size) // vision.spatial_merge_size**2
    uncapped = Pipeline(settings_for(build_family(model_type)), model=adapter).plan(clip, "what?")
    assert record["tokens_per_frame"] < uncapped.encoded.tokens_per_frame


def test_the_record_says_the_frame_size_and_llava_onevision_refuses_max_pixels(dytok_here, tiny_qwen_dir, tiny_llava_dir, clip):
    asked = dytok_here("inspect", str(clip), "what?", "--model", str(tiny_qwen_dir), "--method", "none", "-n", str(FRAMES),
                       "--max-pixels", str(MAX_PIXELS), "--json")
    assert asked.returncode == 0, asked.stderr
    record = json.loads(asked.stdout)
    assert (record["frame_size"], record["tokens_per_frame"]) == ([32, 24], 12)  # 8x6 patches of 4, merged 2x2
    refused = dytok_here("inspect", str(clip), "what?", "--model", str(tiny_llava_dir), "--max-pixels", str(MAX_PIXELS))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [(
        f"dytok: error: --max-pixels does not apply to '{tiny_llava_dir}': LLaVA-OneVision resizes every frame to its "
        "vision tower's 32x32"
    )]


@pytest.mark.parametrize("value, reason", [("0", "--max-pixels must be a number of pixels, 1 or more, not 0"),
                                           ("10", "--max-pixels 10 is below the smallest frame")])
def test_a_max_pixels_no_frame_can_keep_is_refused(dytok_here, tiny_qwen_dir, clip, value, reason):
    result = dytok_here("inspect", str(clip), "what?", "--model", str(tiny_qwen_dir), "--max-pixels", value)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and reason in result.stderr


def test_max_pixels_is_part_of_what_is_cached_and_resumed(tiny_qwen_dir, tiny_qwen, clip, tmp_path):
    cache = VisualCache(tmp_path / "cache")
    default, capped = settings_for(tiny_qwen_dir), settings_for(tiny_qwen_dir, max_pixels=MAX_PIXELS)
    full = Pipeline(default, model=tiny_qwen, cache=cache).prepare(clip)
    lowered = Pipeline(capped, model=tiny_qwen, cache=cache).prepare(clip)  # not the entry just written
    assert lowered.encoded.tokens_per_frame < full.encoded.tokens_per_frame
    assert lowered.encoded.frame_size != full.encoded.frame_size

    def store(settings: Settings) -> ResumeStore:
        return ResumeStore(tmp_path / "resume", str(clip), Pipeline(settings, model=tiny_qwen), Segmentation())

    assert store(capped).folder != store(default).folder
    assert store(dataclasses.replace(capped, max_pixels=MAX_PIXELS + 1)).folder != store(capped).folder


def test_every_family_says_how_large_its_frames_were(family, clip):
    settings = settings_for(family.dir)
    video = Pipeline(settings, model=family.adapter).prepare(clip).encoded
    width, height = video.frame_size
    assert width > 0 and height > 0
