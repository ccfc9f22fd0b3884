"""The Qwen families' frames reach the vision tower at the size their reference preprocessing gives, and
with `--max-pixels` at the size it gives at that `max_pixels`: qwen-vl-utils (the package the model cards
use), run on the same file, is the oracle."""

from __future__ import annotations

import pytest
from clips import write_clip

from dytok_cli.media.video import read_video
from dytok_cli.models import preset_config, presets, supported_model_types
from dytok_cli.models.qwen import video_patches
from dytok_cli.models.qwen2_5_vl import Qwen2_5_VL
from dytok_cli.models.qwen3_5 import Qwen3_5

qwen_vl_utils = pytest.importorskip("qwen_vl_utils")

FRAMES = 4  # few frames: where the processor's whole-video budget alone would keep a large frame's size
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
# Qwen3-VL's processor is Qwen3.5's (`Qwen3_5` inherits it), so one of the two stands for both.
FAMILIES = {"qwen3.5-0.8b": Qwen3_5, "qwen2.5-vl-3b": Qwen2_5_VL}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Each size's clip, and its frames as dytok decodes them."""
    folder = tmp_path_factory.mktemp("sizes")
    written = {name: write_clip(folder / f"{name}.mp4", n_frames=FRAMES, size=size, fps=8.0) for name, size in SIZES.items()}
    return {name: (path, read_video(path, num_frames=FRAMES).images) for name, path in written.items()}


def shipped_processor(preset: str):
    """The preset's config (the published checkpoint's shape) and its family's video processor for it."""
    supported_model_types()  # every family registered
    config = preset_config(presets()[preset])
    return config, FAMILIES[preset].processor_for(config).video_processor


def sized(clips, preset: str, size: str, max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) in pixels of `size`'s frames as the preset's shipped processor sizes them for dytok,
    capped at `max_pixels` as `--max-pixels` caps them."""
    config, processor = shipped_processor(preset)
    patch = config.vision_config.patch_size
    _, images = clips[size]
    capped = {} if max_pixels is None else {"size": FAMILIES[preset].capped_size(processor, max_pixels, len(images))}
    _, grid_h, grid_w = video_patches(processor, images, **capped)["video_grid_thw"][0].tolist()
    return grid_h * patch, grid_w * patch


def qwen_vl_utils_size(clips, preset: str, size: str, **options: int) -> tuple[int, int]:
    """(height, width) of `size`'s frames as qwen-vl-utils sizes them for the preset's patch size (the oracle)."""
    config, _ = shipped_processor(preset)
    path, _ = clips[size]
    reference = qwen_vl_utils.fetch_video({"video": str(path), "nframes": FRAMES, **options},
                                          image_patch_size=config.vision_config.patch_size)
    return tuple(reference.shape[-2:])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("preset", FAMILIES)
def test_qwen_frames_are_sized_as_qwen_vl_utils_sizes_them(clips, preset, size):
    height, width = sized(clips, preset, size)
    assert (height, width) == qwen_vl_utils_size(clips, preset, size)


def test_without_the_per_frame_cap_a_1080p_frame_would_cost_more(clips):
    """What the cap changes, so the test above can fail: a few frames of 1080p through the shipped Qwen3.5
    processor keep their size under its whole-video budget alone."""
    config, processor = shipped_processor("qwen3.5-0.8b")
    _, images = clips["1080p"]
    capped = video_patches(processor, images)["video_grid_thw"][0].tolist()
    uncapped = processor(videos=[images], do_sample_frames=False, cap_pixels_per_frame=False, return_tensors="pt")
    merged = config.vision_config.spatial_merge_size ** 2
    assert capped[1] * capped[2] // merged == 720  # 640 x 1152 pixels: qwen-vl-utils' 768-token cap
    assert uncapped["video_grid_thw"][0, 1] * uncapped["video_grid_thw"][0, 2] // merged == 2040  # 1088 x 1920


# Under 360p's 230,400 pixels and above every processor's smallest frame: a cap that lowers all three sizes.
MAX_PIXELS = 200_000


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("preset", FAMILIES)
def test_max_pixels_sizes_frames_as_qwen_vl_utils_does_at_that_max_pixels(clips, preset, size):
    height, width = sized(clips, preset, size, MAX_PIXELS)
    assert (height, width) == qwen_vl_utils_size(clips, preset, size, max_pixels=MAX_PIXELS)
    assert height * width <= MAX_PIXELS
