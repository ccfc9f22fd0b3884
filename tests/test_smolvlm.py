"""SmolVLM2 against oracles that do not come from our code, and each command end to end on it.

The tiny model squashes every frame to its tower's 32x32 square: 8x8 patches of 4 px, which the connector's
pixel shuffle folds 2x2 into T = 16 tokens. The processor writes an intro saying how many frames of how long a
video follow, then before each frame "Frame from MM:SS:" and the frame's placeholders between
"<fake_token_around_image><global-img>" and "<fake_token_around_image>".
"""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch
from test_chat import ARGS as CHAT_ARGS
from test_chat import expected_answers
from test_contract import QUESTION, eager, own_inputs, settings  # noqa: F401 - eager is a fixture used here

from dytok_cli import cli
from dytok_cli.apps import eval as evaluation
from dytok_cli.config import Device, DType, Method
from dytok_cli.models import load_random_model, preset_config, presets
from dytok_cli.models.smolvlm import SmolVLM
from dytok_cli.pipeline import Pipeline
from dytok_cli.types import Frames

TOKENS = 16  # per frame: 8x8 patches folded 2x2
SCALE = 2
WRAP, GLOBAL, IMAGE = "<fake_token_around_image>", "<global-img>", "<image>"


@pytest.fixture(scope="module")
def smol(build_family, load_family):
    """(model directory, loaded adapter) of the tiny SmolVLM2."""
    return build_family("smolvlm"), load_family("smolvlm")


def spelled(adapter, ids: torch.Tensor) -> str:
    """The prompt's text without the word-level tokenizer's spaces."""
    return "".join(adapter.tokenizer.decode(ids.flatten()).split())


def frame_text(time: str, placeholders: int = TOKENS) -> str:
    """What the processor writes for one frame shown at `time` (MM:SS), spelled."""
    return f"Framefrom{time}:{WRAP}{GLOBAL}{IMAGE * placeholders}{WRAP}"


def test_the_prompt_says_each_frames_decoder_time_and_the_videos_length(smol, clip):
    """Times no index / fps could give (a variable frame rate) reach the prompt as the processor writes times:
    whole seconds, cut down, as MM:SS; the intro counts the frames in words and gives the video's length."""
    directory, adapter = smol
    images = Pipeline(settings(directory), model=adapter).read(clip).images
    times = (0.0, 0.5, 3.0, 61.25, 62.999, 125.9)
    frames = Frames(images=images, indices=tuple(range(6)), timestamps=times, backend="pyav", video_fps=2.0,
                    total_frames=6, duration_s=130.4)
    video = adapter.encode(frames)
    assert video.features.shape == (6, TOKENS, adapter.model.config.text_config.hidden_size)
    assert (video.frame_size, video.timestamps, video.duration_s) == ((32, 32), times, 130.4)
    text = spelled(adapter, adapter.build_inputs(QUESTION, video.all_tokens(), video=video)["input_ids"])
    intro = "Youareprovidedthefollowingseriesofsixframesfroma0:02:10[H:MM:SS]video."
    shown = "".join(frame_text(time) for time in ("00:00", "00:00", "00:03", "01:01", "01:02", "02:05"))
    assert f"User:{intro}{shown}whathappensinthevideo?<end_of_utterance>Assistant:" in text


def test_a_compressed_prompt_keeps_every_frames_time_and_wrappers_with_its_budget(smol, clip):
    """Frame f keeps its marker, its wrappers and exactly n_f placeholders, in order; the text around the
    placeholders is the processor's own."""
    directory, adapter = smol
    pipeline = Pipeline(settings(directory, method=Method.dytok, ratio=0.25), model=adapter)
    frames = pipeline.read(clip)
    plan = pipeline.plan(clip, QUESTION)
    assert len(set(plan.budgets.tolist())) > 1  # the budgets differ from frame to frame
    ids = adapter.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index, video=plan.encoded)["input_ids"][0]
    times = [f"{int(t // 60):02}:{int(t % 60):02}" for t in frames.timestamps]
    shown = "".join(frame_text(time, n) for time, n in zip(times, plan.budgets.tolist()))
    assert shown in spelled(adapter, ids)
    own = own_inputs(adapter, frames, QUESTION)["input_ids"][0]
    image = adapter.video_token_id()
    assert torch.equal(ids[ids != image].cpu(), own[own != image])


def folded(values: torch.Tensor) -> torch.Tensor:
    """(F, P, C) per patch, P a square grid in raster order -> (F, T, C): the mean over each SCALE x SCALE square
    of patches, squares in raster order."""
    frames, patches, channels = values.shape
    side = int(patches**0.5)
    squares = values.view(frames, side // SCALE, SCALE, side // SCALE, SCALE, channels)
    return squares.mean(dim=(2, 4)).reshape(frames, -1, channels)


def test_visionzip_scores_are_the_last_tower_layers_folded_as_its_tokens(smol, eager, clip):
    """The attention each token receives and its key, from the eager tower's own attention weights and its last
    layer's own key projection, averaged over the squares of patches the pixel shuffle folds into one token."""
    directory, adapter = smol
    frames = Pipeline(settings(directory), model=adapter).read(clip)
    video = adapter.encode(frames)
    model = eager(directory, DType.float32)
    pixels = adapter.processor.video_processor(videos=[frames.images], do_sample_frames=False,
                                               return_tensors="pt")["pixel_values"][0]
    last = model.model.vision_model.encoder.layers[-1]
    seen = []
    handle = last.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            attentions = model.model.vision_model(pixel_values=pixels, output_attentions=True).attentions
            heads = last.self_attn.num_heads
            keys = last.self_attn.k_proj(last.layer_norm1(seen[0]))
    finally:
        handle.remove()
    received = attentions[-1].mean(dim=(1, 2))  # (F, P): over heads and queries
    keys = keys.view(*keys.shape[:2], heads, -1).mean(dim=2)  # (F, P, d): over heads
    # Eager's weights against ours from the SDPA run's query/key states, float32: measured at most 7.5e-9 apart
    # (attention, values 0.009 to 0.055) and 4.8e-7 (keys, up to 2.0).
    torch.testing.assert_close(video.attention, folded(received[..., None])[..., 0], atol=3e-8, rtol=0)
    torch.testing.assert_close(video.keys, folded(keys), atol=2e-6, rtol=0)
    assert video.attention.shape == (len(frames.indices), TOKENS)


def test_random_weights_prompts_are_shaped_like_the_processors(smol, clip):
    """Without a tokenizer the prompt is ordinary ids around the video: every frame its marker's worth of text
    and T placeholders; dytok-fastv at ratio 1 answers as the uncompressed prompt does."""
    directory, _ = smol
    model = load_random_model(str(directory), device=Device.cpu, dtype=DType.float32)
    assert model.tokenizer is None
    answers = {}
    for method, ratio in [(Method.none, None), (Method.dytok_fastv, 1.0), (Method.dytok_fastv, 0.25)]:
        pipeline = Pipeline(settings(directory, method=method, ratio=ratio, max_new_tokens=4), model=model)
        answers[method, ratio] = pipeline.ask(clip, QUESTION)
    plan = answers[Method.none, None].plan
    ids = model.build_inputs(plan.question, plan.visual_tokens, video=plan.encoded)["input_ids"][0]
    placeholders = (ids == model.video_token_id()).nonzero()[:, 0].view(6, TOKENS)
    assert bool((placeholders.diff(dim=1) == 1).all())  # each frame's placeholders in one run
    assert ids.shape[0] == model.uncompressed_prompt_length(plan.question, plan.encoded)
    assert len(set((placeholders[1:, 0] - placeholders[:-1, -1]).tolist())) == 1  # the same text between frames
    assert answers[Method.dytok_fastv, 1.0].token_ids == answers[Method.none, None].token_ids
    assert answers[Method.dytok_fastv, 0.25].plan.kept_tokens == round(0.25 * 6 * TOKENS)


# Published per checkpoint: frame side (video_sampling and max_image_size, preprocessor_config.json) and tokens a
# frame (image_seq_len, processor_config.json).
PUBLISHED = {"smolvlm2-256m": (512, 64), "smolvlm2-500m": (512, 64), "smolvlm2-2.2b": (384, 81)}


@pytest.mark.parametrize("preset", PUBLISHED)
def test_a_presets_frames_and_tokens_are_the_published_ones(preset):
    """A 360p frame reaches the preset's tower at the published square, and becomes the published tokens."""
    import numpy as np

    side, tokens = PUBLISHED[preset]
    config = preset_config(presets()[preset])
    pixels = SmolVLM.processor_for(config).video_processor(
        videos=[np.zeros((1, 360, 640, 3), np.uint8)], do_sample_frames=False, return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 1, 3, side, side)
    vision = config.vision_config
    assert (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2 == tokens


def test_max_pixels_is_refused_in_one_line(dytok_here, smol, clip):
    directory, _ = smol
    result = dytok_here("ask", str(clip), "what?", "--model", str(directory), "--max-pixels", "4096")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dytok: error: --max-pixels does not apply to '{directory}': SmolVLM2 resizes every frame to its vision "
        "tower's 32x32"
    ]


# --- each command, end to end -------------------------------------------------------------------------------

COMMON = ["--frames", "6", "--decode-timeout", "0", "--device", "cpu", "--dtype", "float32"]
ANSWER = ["--max-new-tokens", "4"]


def test_ask_and_inspect(dytok_here, smol, clip):
    """`ask` answers as the pipeline does, and `inspect` shows the budgets `ask` spent, frame by frame at the
    frames' own times."""
    directory, adapter = smol
    asked = dytok_here("ask", str(clip), QUESTION, "--model", str(directory), *COMMON, *ANSWER, "--ratio", "0.25", "--json")
    inspected = dytok_here("inspect", str(clip), QUESTION, "--model", str(directory), *COMMON, "--ratio", "0.25", "--json")
    assert asked.returncode == inspected.returncode == 0, asked.stderr + inspected.stderr
    asked, inspected = json.loads(asked.stdout), json.loads(inspected.stdout)
    pipeline = Pipeline(settings(directory, ratio=0.25, method=Method(asked["method"]), max_new_tokens=4), model=adapter)
    assert asked["answer"] == pipeline.ask(clip, QUESTION).text
    assert (asked["tokens_per_frame"], asked["frame_size"]) == (TOKENS, [32, 32])
    assert [f["budget"] for f in inspected["frames"]] == [f["budget"] for f in asked["frames"]]
    assert [f["timestamp"] for f in inspected["frames"]] == pytest.approx(list(pipeline.read(clip).timestamps), abs=1e-3)


def test_chat_is_one_conversation(capfd, monkeypatch, smol, clip):
    directory, adapter = smol
    monkeypatch.setattr("sys.stdin", io.StringIO("what happens?\nand then?\n"))
    monkeypatch.setenv("NO_COLOR", "1")
    capfd.readouterr()
    status = cli.main(["chat", str(clip), "--model", str(directory), *CHAT_ARGS, "--jsonl"])
    out, err = capfd.readouterr()
    assert status == 0, err
    answers = [json.loads(line)["answer"] for line in out.splitlines()]
    assert answers == expected_answers(adapter, clip, ["what happens?", "and then?"])


def test_eval_answers_every_method(smol, clip, tmp_path, capsys, monkeypatch):
    directory, _ = smol
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot has a test of its own
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"id": "q1", "video": str(clip), "question": QUESTION, "answer": "B",
                                "options": ["a dog runs", "a cat sits", "the sky is blue", "a man opens the door"]}) + "\n")
    argv = ["eval", str(data), "--output", str(tmp_path / "out"), "--model", str(directory), *COMMON, *ANSWER,
            "--method", "none", "--method", "dytok-fastv", "--ratios", "0.25"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "out" / evaluation.PREDICTIONS).read_text().splitlines()]
    assert sorted((r["method"], r["error"], r["visual_tokens"]) for r in records) == [
        ("dytok-fastv", None, round(0.25 * 6 * TOKENS)), ("none", None, 6 * TOKENS)]
