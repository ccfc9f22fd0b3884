"""InternVL (`models/internvl.py`): what the contract suite does not show of it. Frames made as the model cards'
video recipe makes them, whatever the checkpoints' video processor config says; a compressed prompt that keeps
every frame's line; VisionZip scores from the layer that feeds the projector, over the patches the pixel shuffle
puts into each token; the shapes of the published checkpoints; and one run of each command over it.

The tiny model's frames are 32x32 tiles of 4-pixel patches: 8x8 patches, shuffled into 16 tokens.
"""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest
import torch
from test_chat import ARGS as CHAT_ARGS
from test_chat import expected_answers
from test_contract import FRAMES, QUESTION, own_inputs, settings
from test_eval import ours, read_predictions, write_jsonl
from transformers import InternVLVideoProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from dytok_cli import cli
from dytok_cli.apps import eval as evaluation
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.math.budget import total_budget
from dytok_cli.models import load_random_model, preset_config, presets
from dytok_cli.models.internvl import InternVL
from dytok_cli.pipeline import Pipeline

TOKENS = 16  # a tiny frame's tokens
COMMAND = ["--frames", "4", "--max-new-tokens", "4", "--device", "cpu", "--dtype", "float32", "--decode-timeout", "0"]


@pytest.fixture(scope="module")
def internvl(build_family, load_family):
    return build_family("internvl"), load_family("internvl")


@pytest.fixture(scope="module")
def frames(internvl, clip):
    directory, adapter = internvl
    return Pipeline(settings(directory), model=adapter).read(clip)


def test_frames_are_the_image_processors_tiles_whatever_the_video_config_says(internvl, frames, monkeypatch):
    """Each frame is what the checkpoint's own image processor makes of it as one tile (the model cards' video
    recipe), also when the video processor carries the checkpoints' config: 384 px with CLIP's mean and std."""
    _, adapter = internvl
    image_processor = adapter.processor.image_processor
    own = image_processor(images=list(frames.images), crop_to_patches=False, return_tensors="pt")["pixel_values"]
    assert own.shape == (FRAMES, 3, 32, 32) and torch.equal(adapter.pixels(frames.images), own)
    encoded = adapter.encode(frames)
    # What the InternVL3.5 -HF checkpoints ship as video_preprocessor_config.json: the class's defaults.
    shipped = InternVLVideoProcessor()
    assert (shipped.size.height, shipped.size.width) == (384, 384) and list(shipped.image_mean) != list(IMAGENET_DEFAULT_MEAN)
    assert shipped(videos=[frames.images], do_sample_frames=False, return_tensors="pt")["pixel_values_videos"].shape[-1] == 384
    monkeypatch.setattr(adapter.processor, "video_processor", shipped)
    assert torch.equal(adapter.pixels(frames.images), own)
    assert torch.equal(adapter.encode(frames).features, encoded.features)


def test_a_compressed_prompt_keeps_every_frames_line_with_its_budget(internvl, frames):
    """Frame f's line keeps its text and markers, with its n_f tokens between `<img>` and `</img>` (none for a
    frame given none); everything else is the processor's own prompt."""
    _, adapter = internvl
    encoded = adapter.encode(frames)
    budgets = [3, 0, TOKENS, 1, 5, 2]
    kept_index = encoded.kept_index([torch.arange(n) for n in budgets])
    ids = adapter.build_inputs(QUESTION, encoded.all_tokens()[kept_index], kept_index, video=encoded)["input_ids"][0]
    own = own_inputs(adapter, frames, QUESTION)["input_ids"][0]
    placeholder = adapter.video_token_id()
    assert ids[ids != placeholder].tolist() == own[own != placeholder].tolist()
    tokens = adapter.tokenizer.convert_ids_to_tokens(ids.tolist())
    opens = [i for i, token in enumerate(tokens) if token == "<img>"]
    closes = [i for i, token in enumerate(tokens) if token == "</img>"]
    assert [tokens[i - 3 : i] for i in opens] == [["Frame", str(f + 1), ":"] for f in range(FRAMES)]
    assert [b - a - 1 for a, b in zip(opens, closes)] == budgets
    assert all(set(ids[a + 1 : b].tolist()) <= {placeholder} for a, b in zip(opens, closes))
    assert adapter.uncompressed_prompt_length(QUESTION, encoded) == own.shape[0]


def test_visionzip_scores_are_the_projectors_layer_over_the_patches_of_each_token(internvl, frames):
    """Attention received and keys at the vision layer that feeds the projector, recomputed from what it received,
    averaged over the four patches that the projector finds in each token."""
    _, adapter = internvl
    model = adapter.model.model
    attention = model.vision_tower.encoder.layer[-1].attention  # vision_feature_layer -1: the last layer feeds the projector
    seen = {}

    def before_attention(module, args):
        seen["hidden"] = args[0]

    handle = attention.register_forward_pre_hook(before_attention)
    try:
        encoded = adapter.encode(frames)
    finally:
        handle.remove()
    with torch.inference_mode():
        hidden = seen["hidden"]  # (F, 1 + P, C)
        heads = attention.num_heads
        query = attention.q_proj(hidden).unflatten(-1, (heads, -1)).transpose(1, 2)  # (F, H, 1 + P, d)
        key = attention.k_proj(hidden).unflatten(-1, (heads, -1)).transpose(1, 2)
        received = (query @ key.transpose(-1, -2) * attention.scale).softmax(-1).mean(dim=(1, 2))[:, 1:]  # (F, P)
        keys = key.mean(dim=1)[:, 1:]  # (F, P, d)
        held = patches_of_each_token(adapter, frames)  # (T, 4)
    assert sorted(held[0].tolist()) == [0, 1, 8, 9]  # a 2x2 block of the 8x8 patch grid
    torch.testing.assert_close(encoded.attention, received[:, held].mean(dim=-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded.keys, keys[:, held].mean(dim=-2), atol=1e-6, rtol=0)


def patches_of_each_token(adapter, frames) -> torch.Tensor:
    """(T, 4): which patches the projector receives in each token, found by giving every patch's features the
    patch's own number (the CLS token 0) on their way from the vision tower, and reading the numbers back."""
    model = adapter.model.model
    seen = {}

    def numbered(module, args, output):
        output.last_hidden_state = torch.arange(output.last_hidden_state.shape[1], dtype=torch.float32).expand(
            *output.last_hidden_state.shape[::2], -1).transpose(1, 2).contiguous()
        return output

    def before_projector(module, args):
        seen["tokens"] = args[0]  # (F, T, 4C)

    handles = [model.vision_tower.register_forward_hook(numbered),
               model.multi_modal_projector.register_forward_pre_hook(before_projector)]
    try:
        with torch.inference_mode():
            model.get_image_features(pixel_values=adapter.pixels(frames.images[:1]))
    finally:
        for handle in handles:
            handle.remove()
    numbers = seen["tokens"][0].unflatten(-1, (4, -1))  # (T, 4, C): each of the four parts one patch's number
    assert (numbers == numbers[..., :1]).all()
    return numbers[..., 0].long() - 1


def test_max_pixels_is_refused_in_one_line(internvl, clip, dytok_here):
    directory, _ = internvl
    result = dytok_here("ask", str(clip), "what?", "--model", str(directory), "--max-pixels", "230400", *COMMAND)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"dytok: error: --max-pixels does not apply to {str(directory)!r}: InternVL resizes every "
                             "frame to one 32x32 tile\n")


def test_the_presets_frames_are_448_px_tiles_of_256_tokens():
    """The published checkpoints' shape: one 448 px tile a frame (ImageNet's normalisation), 32x32 patches of 14
    pixels, shuffled into 256 tokens, as the processor writes placeholders for them."""
    for name in ("internvl3.5-1b", "internvl3.5-2b", "internvl3.5-4b", "internvl3.5-8b"):
        config = preset_config(presets()[name])
        image_processor = InternVL.processor_for(config).image_processor
        assert (image_processor.size.height, image_processor.size.width) == (448, 448) == tuple(config.vision_config.image_size)
        assert (list(image_processor.image_mean), list(image_processor.image_std)) == (
            list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD))
        grid = 448 // config.vision_config.patch_size[0]
        assert int(grid * config.downsample_ratio) ** 2 == config.image_seq_length == 256


def test_random_weights_answer_from_a_synthetic_prompt_of_the_real_length(internvl, clip):
    directory, _ = internvl
    model = load_random_model(str(directory), device=Device.cpu, dtype=DType.float32)
    assert model.tokenizer is None  # synthetic prompts
    answer = Pipeline(Settings(model=str(directory), frames=4, device=Device.cpu, dtype=DType.float32, max_new_tokens=3,
                               decode_timeout=None), model=model).ask(clip, "q")
    encoded = answer.plan.encoded
    assert (encoded.num_frames, encoded.tokens_per_frame) == (4, TOKENS) and answer.text.startswith("token ids ")
    # Each frame's line, as Qwen's tokenizer makes it: "Frame", its number, ":", a space and <img>, its tokens, </img>
    # and a line break.
    text = model.prompt_ids("q").shape[1] - 1
    assert model.uncompressed_prompt_length("q", encoded) == text + 4 * (5 + TOKENS + 2)
    assert answer.plan.kept_tokens == total_budget(0.25, 4, TOKENS)


# --- one run of each command ------------------------------------------------------------------------------------


def pipeline_answer(directory, adapter, clip, question: str = "what happens?", **fields):
    """What the library answers with the settings the command lines here give."""
    options = dict(model=str(directory), frames=4, max_new_tokens=4, device="cpu", dtype="float32", decode_timeout=0)
    return Pipeline(Settings(**{**options, **fields}), model=adapter).ask(clip, question)


def test_ask_and_inspect(internvl, clip, dytok_here):
    directory, adapter = internvl
    asked = dytok_here("ask", str(clip), "what happens?", "--model", str(directory), "--json", *COMMAND)
    assert asked.returncode == 0, asked.stderr
    record = json.loads(asked.stdout)
    expected = pipeline_answer(directory, adapter, clip)
    assert record["answer"] == expected.text and record["method"] == "dytok-fastv"
    assert (record["tokens_per_frame"], record["frame_size"]) == (TOKENS, [32, 32])
    inspected = dytok_here("inspect", str(clip), "what happens?", "--model", str(directory), "--json", "--frames", "4",
                           "--device", "cpu", "--dtype", "float32", "--decode-timeout", "0")
    assert inspected.returncode == 0, inspected.stderr
    frames = json.loads(inspected.stdout)["frames"]
    assert [frame["budget"] for frame in frames] == [frame["budget"] for frame in record["frames"]]
    assert sum(frame["budget"] for frame in frames) == total_budget(0.25, 4, TOKENS)


def test_chat(internvl, clip, capfd, monkeypatch):
    directory, adapter = internvl
    monkeypatch.setattr("sys.stdin", io.StringIO("what happens?\nand then?\n"))
    monkeypatch.setenv("NO_COLOR", "1")
    capfd.readouterr()
    status = cli.main(["chat", str(clip), "--model", str(directory), "--jsonl", *CHAT_ARGS])
    out, err = capfd.readouterr()
    assert status == 0, err
    answers = [json.loads(line)["answer"] for line in out.splitlines()]
    assert answers == expected_answers(adapter, clip, ["what happens?", "and then?"])


def test_serve(internvl, clip, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from test_serve import KEY, expected_answer, request, serving
    from test_serve import settings as served

    from dytok_cli.apps.serve.service import Limits, Service

    directory, _ = internvl
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(clip, media / "clip.mp4")
    service = Service(served(directory), Limits(queue=1, keep_videos=1))
    with serving(service, media) as (url, _, _), httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                                                               timeout=120) as http:
        body = http.post("/v1/chat/completions", json=request("file:clip.mp4", max_tokens=4)).json()
    expected = expected_answer(service, media / "clip.mp4", "what happens?", max_new_tokens=4)
    assert body["choices"][0]["message"]["content"] == expected.text


def test_eval(internvl, clip, tmp_path, capsys, monkeypatch):
    directory, adapter = internvl
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot has a test of its own
    shutil.copy(clip, tmp_path / "a.mp4")
    data = write_jsonl(tmp_path / "items.jsonl", [ours("q1", "a.mp4")])
    argv = ["eval", str(data), "--output", str(tmp_path / "out"), "--video-dir", str(tmp_path), "--model", str(directory),
            *COMMAND, "--method", "none", "--method", "dytok-fastv", "--ratios", "0.5"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    records = read_predictions(tmp_path / "out")
    assert sorted(record["method"] for record in records) == ["dytok-fastv", "none"]
    assert all(record["error"] is None and record["response"] for record in records)
    uncompressed = next(record for record in records if record["method"] == "none")
    (item,) = evaluation.load_items(data)
    assert uncompressed["visual_tokens"] == 4 * TOKENS
    assert uncompressed["response"] == pipeline_answer(directory, adapter, tmp_path / "a.mp4", evaluation.prompt(item),
                                                       method=Method.none).text
