"""Qwen3-VL, dense and MoE, end to end against oracles that do not come from our code.

The tiny models merge 2 sampled frames into one temporal patch of 3x4 = 12 tokens, so 6 sampled
frames make 3 DyToK frames of T = 12 tokens; each patch is preceded by its "<t seconds>" text. Their
vision towers hand DeepStack features from blocks 0 and 1 to the decoder, which adds them to the
visual positions after its layers 0 and 1.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from test_contract import QUESTION, own_inputs, settings

from dytok_cli.math.budget import total_budget
from dytok_cli.media.cache import VisualCache
from dytok_cli.config import Method
from dytok_cli.models.qwen3_vl import Qwen3VL
from dytok_cli.pipeline import Pipeline
from dytok_cli.prefill import single_pass
from dytok_cli.math.selectors.visionzip import select_frame
from dytok_cli.types import Frames

GROUPS = 3  # temporal patches of 2 frames
TOKENS = 12  # per temporal patch
DEEPSTACK = 2  # DeepStack layers: injected after decoder layers 0 and 1


@pytest.fixture(scope="module", params=["qwen3_vl", "qwen3_vl_moe"], ids=["dense", "moe"])
def family(request, build_family, load_family):
    """(model directory, loaded adapter) of a tiny Qwen3-VL of each kind."""
    return build_family(request.param), load_family(request.param)


def our_inputs(adapter, plan):
    return adapter.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index, video=plan.encoded, deepstack=plan.deepstack)


def patch_times(frames: Frames) -> list[float]:
    """Each temporal patch's time: the mean of its sampled frames' decoder times."""
    return [float(np.mean(frames.timestamps[i : i + 2])) for i in range(0, len(frames.timestamps), 2)]


@pytest.mark.parametrize("count", [6, 5], ids=["even", "odd"])
def test_a_frame_is_a_temporal_patch_timed_by_its_timestamp(family, clip, count):
    directory, adapter = family
    pipeline = Pipeline(settings(directory, frames=count), model=adapter)
    sampled = pipeline.read(clip)
    plan = pipeline.plan(clip, QUESTION)
    assert plan.encoded.frames_per_group == 2
    assert plan.encoded.features.shape == (GROUPS, TOKENS, adapter.model.config.text_config.hidden_size)
    assert plan.frames.indices == sampled.indices[::2]
    # An odd count: the last patch holds one frame, and its time is that frame's (the processor repeats it).
    assert plan.encoded.timestamps == pytest.approx(patch_times(sampled))
    assert plan.frames.timestamps == plan.encoded.timestamps
    assert len(plan.frames.images) == len(plan.weights) == len(plan.budgets) == GROUPS


def spelled(adapter, ids: torch.Tensor) -> str:
    """The prompt's text without the word-level tokenizer's spaces."""
    return "".join(adapter.tokenizer.decode(ids.flatten()).split())


def test_prompt_times_are_the_decoder_times_given(family, clip):
    """Times that no index / fps could give (a variable frame rate) reach the prompt as they are."""
    directory, adapter = family
    images = Pipeline(settings(directory), model=adapter).read(clip).images
    times = (0.0, 0.5, 3.0, 3.25, 9.5, 12.75)
    frames = Frames(images=images, indices=tuple(range(6)), timestamps=times, backend="pyav", video_fps=2.0,
                    total_frames=6, duration_s=13.0)
    video = adapter.encode(frames)
    inputs = adapter.build_inputs(QUESTION, video.all_tokens(), video=video)
    text = spelled(adapter, inputs["input_ids"])
    expected = "".join(f"<{t:.1f}seconds><|vision_start|>" + "<|video_pad|>" * TOKENS + "<|vision_end|>"
                       for t in (0.25, 3.125, 11.125))
    # Whatever wraps the patches is the installed processor's (5.25 drops the template's outer markers);
    # the uncompressed-answer oracle of the contract suite holds the whole prompt to it.
    assert expected in text


def per_patch_placeholders(adapter, ids: torch.Tensor) -> list[int]:
    """Placeholders after each "seconds" word, up to the next one (or the end)."""
    ids = ids.flatten().tolist()
    seconds = adapter.tokenizer.convert_tokens_to_ids("seconds")
    starts = [i for i, token in enumerate(ids) if token == seconds]
    ends = [*starts[1:], len(ids)]
    return [ids[a:b].count(adapter.video_token_id()) for a, b in zip(starts, ends)]


@pytest.mark.parametrize("method", [Method.dytok, Method.visionzip])
@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.5, 0.9])
def test_each_patch_keeps_its_timestamp_and_exactly_its_budget(family, clip, method, ratio):
    directory, adapter = family
    pipeline = Pipeline(settings(directory, method=method, ratio=ratio, max_new_tokens=1), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    assert [s.tokens.shape[0] for s in plan.selections] == plan.budgets.tolist()
    assert [s.dominant + s.contextual for s in plan.selections] == plan.budgets.tolist()
    assert plan.kept_tokens == total_budget(ratio, GROUPS, TOKENS) == plan.visual_tokens.shape[0]
    assert [layer.shape for layer in plan.deepstack] == [plan.visual_tokens.shape] * DEEPSTACK
    ids = our_inputs(adapter, plan)["input_ids"][0]
    assert per_patch_placeholders(adapter, ids) == plan.budgets.tolist()
    # Every word of the processor's prompt is there, in order: only placeholders were dropped.
    full = own_inputs(adapter, pipeline.read(clip), QUESTION)["input_ids"][0]
    pad = adapter.video_token_id()
    assert torch.equal(ids[ids != pad], full[full != pad])
    assert pipeline.answer(plan).token_ids  # a patch left with no placeholder still generates


@contextmanager
def decoder_layer_io(adapter, count: int):
    """Each of the first `count` decoder layers' output, and what the layer after it received: the
    decoder adds DeepStack features in between."""
    layers = adapter.language_model().layers
    outputs, inputs = {}, {}

    def keep_output(index):
        return lambda module, args, output: outputs.__setitem__(index, output.clone())

    def keep_input(index):
        return lambda module, args, kwargs: inputs.__setitem__(index, (args[0] if args else kwargs["hidden_states"]).clone())

    handles = [layers[k].register_forward_hook(keep_output(k)) for k in range(count)]
    handles += [layers[k + 1].register_forward_pre_hook(keep_input(k), with_kwargs=True) for k in range(count)]
    try:
        yield outputs, inputs
    finally:
        for handle in handles:
            handle.remove()


def test_deepstack_at_ratio_1_gives_the_models_own_hidden_states(family, clip):
    directory, adapter = family
    pipeline = Pipeline(settings(directory, method=Method.none), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    reference = own_inputs(adapter, pipeline.read(clip), QUESTION)
    states = []
    for inputs in (reference, our_inputs(adapter, plan)):
        with torch.no_grad(), decoder_layer_io(adapter, DEEPSTACK) as (outputs, received):
            adapter.model(**inputs)
        states.append(received[DEEPSTACK - 1])  # after the last DeepStack layer's injection
    visual = reference["input_ids"][0] == adapter.video_token_id()
    torch.testing.assert_close(states[1][0, visual], states[0][0, visual], atol=1e-6, rtol=0)
    torch.testing.assert_close(states[1], states[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method, ratio", [(Method.visionzip, 0.4), (Method.dytok, 0.3)])
def test_deepstack_injected_at_kept_positions_are_the_kept_tokens_own(family, clip, method, ratio):
    directory, adapter = family
    pipeline = Pipeline(settings(directory, method=method, ratio=ratio), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    encoded = plan.encoded
    assert len(encoded.deepstack) == DEEPSTACK
    assert any(s.contextual for s in plan.selections)  # some kept tokens are merges
    inputs = our_inputs(adapter, plan)
    with torch.no_grad(), decoder_layer_io(adapter, DEEPSTACK) as (outputs, received):
        adapter.model(**inputs)
    visual = inputs["input_ids"][0] == adapter.video_token_id()
    for layer in range(DEEPSTACK):
        injected = received[layer][0] - outputs[layer][0]  # (S, D): what the decoder added after this layer
        assert torch.equal(injected[~visual], torch.zeros_like(injected[~visual]))
        # The same selection applied to this layer's DeepStack features alone: dominant tokens are the
        # kept tokens' own rows, contextual ones merge the same dropped tokens the main features merged.
        expected = []
        for f, (selection, budget) in enumerate(zip(plan.selections, plan.budgets.tolist())):
            own = encoded.deepstack[layer][f]  # (T, D)
            expected.append(own[selection.dominant_index])
            merged = select_frame(own, encoded.attention[f], encoded.keys[f], budget)
            assert torch.equal(merged.token_index, selection.token_index)
            expected.append(merged.tokens[selection.dominant :])
        torch.testing.assert_close(injected[visual], torch.cat(expected), atol=1e-5, rtol=0)
        # A merged token's features are not its target's alone.
        uncompressed = encoded.deepstack[layer].flatten(0, 1)[plan.kept_index]
        assert not torch.allclose(injected[visual], uncompressed, atol=1e-3)


def test_a_compressed_prompt_needs_its_deepstack_features(family, clip):
    directory, adapter = family
    plan = Pipeline(settings(directory, method=Method.visionzip, ratio=0.5), model=adapter).plan(clip, QUESTION)
    with pytest.raises(ValueError, match="DeepStack"):
        adapter.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index, video=plan.encoded)
    with pytest.raises(ValueError, match="encoded video"):
        adapter.build_inputs(QUESTION, plan.visual_tokens, plan.kept_index, deepstack=plan.deepstack)


@pytest.mark.parametrize("prune_layer", [0, 2], ids=["before-the-last-deepstack-layer", "after"])
def test_single_pass_injects_deepstack_into_the_kept_tokens_only(family, clip, prune_layer):
    """Layers up to K add every token's DeepStack features; a DeepStack layer after K adds only the
    kept tokens' own rows, at their places in the pruned sequence."""
    directory, adapter = family
    pipeline = Pipeline(settings(directory, method=Method.dytok_fastv, ratio=0.3, prune_layer=prune_layer,
                                 max_new_tokens=1), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    with torch.no_grad(), decoder_layer_io(adapter, DEEPSTACK) as (outputs, received):
        single_pass.finish(adapter, plan.prefill)  # the layers after K, on the kept tokens
    prompt, encoded = plan.prefill.prompt, plan.encoded
    for layer in range(prune_layer + 1, DEEPSTACK):  # the DeepStack layers the pruned sequence runs through
        injected = received[layer][0] - outputs[layer][0]  # (S_kept, D)
        visual = torch.zeros(injected.shape[0], dtype=torch.bool)
        visual[prompt.visual_positions] = True
        assert torch.equal(injected[~visual], torch.zeros_like(injected[~visual]))
        expected = encoded.deepstack[layer].flatten(0, 1)[plan.kept_index]
        torch.testing.assert_close(injected[prompt.visual_positions], expected, atol=1e-5, rtol=0)
    assert prune_layer + 1 < DEEPSTACK or not received  # after the last DeepStack layer nothing more is added


def test_cache_keeps_deepstack_and_timestamps(family, clip, tmp_path):
    directory, adapter = family
    options = settings(directory, method=Method.visionzip, ratio=0.5)
    first = Pipeline(options, model=adapter, cache=VisualCache(tmp_path)).prepare(clip)
    again = Pipeline(options, model=adapter, cache=VisualCache(tmp_path)).prepare(clip)
    assert again is not first and again.timings == {"decode_s": 0.0, "vision_s": 0.0}  # loaded from disk
    assert again.encoded.timestamps == first.encoded.timestamps
    assert len(again.encoded.deepstack) == DEEPSTACK
    for loaded, computed in zip(again.encoded.deepstack, first.encoded.deepstack):
        assert torch.equal(loaded, computed)
    pipeline = Pipeline(options, model=adapter)
    assert pipeline.ask(again, QUESTION).token_ids == pipeline.ask(first, QUESTION).token_ids


def test_random_weight_prompt_has_a_timestamp_before_each_patch(family, clip):
    """Without a tokenizer (bench presets) the synthetic prompt keeps the per-patch structure."""
    directory, adapter = family
    random = Qwen3VL("random", adapter.model, Qwen3VL.processor_for(adapter.model.config))
    pipeline = Pipeline(settings(directory, method=Method.visionzip, ratio=0.5, max_new_tokens=2), model=random)
    plan = pipeline.plan(clip, QUESTION)
    assert pipeline.answer(plan).token_ids
    ids = our_inputs(random, plan)["input_ids"][0].tolist()
    config = adapter.model.config
    starts = [i for i, token in enumerate(ids) if token == config.vision_start_token_id]
    assert len(starts) == GROUPS + 1  # the template's own marker, then one per patch
    pads = [ids[a:b].count(config.video_token_id) for a, b in zip(starts[1:], [*starts[2:], len(ids)])]
    assert pads == plan.budgets.tolist()
    timestamps = [ids[a - 6 : a] for a in starts[1:]]
    assert all(t == timestamps[0] and config.video_token_id not in t for t in timestamps)


def test_cli_json_record_has_one_frame_per_temporal_patch_timed_by_the_decoder(dytok_here, build_family, clip):
    tiny_qwen3_vl_dir = build_family("qwen3_vl")
    result = dytok_here("ask", str(clip), "is there a dog?", "--model", str(tiny_qwen3_vl_dir), "--frames", "6",
                        "--ratio", "0.5", "--max-new-tokens", "4", "--method", "visionzip", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    sampled = Pipeline(settings(tiny_qwen3_vl_dir)).read(clip)
    kept = total_budget(0.5, GROUPS, TOKENS)
    assert record["error"] is None and isinstance(record["answer"], str)
    assert record["tokens_per_frame"] == TOKENS
    assert record["visual_tokens"] == {"full": GROUPS * TOKENS, "kept": kept}
    frames = record["frames"]
    assert [f["index"] for f in frames] == list(range(GROUPS))
    assert [f["frame"] for f in frames] == list(sampled.indices[::2])
    assert [f["timestamp"] for f in frames] == [round(t, 3) for t in patch_times(sampled)]
    assert sum(f["budget"] for f in frames) == kept
