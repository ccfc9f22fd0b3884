"""The contract every supported family keeps, checked on a tiny model of each.

A family contributes only its tiny-model builder (`tiny_models.FAMILIES`); every oracle here runs over
all of them, for every method, in float32, and over one of them in float16 too: what `--dtype auto` runs on
a GPU without native bfloat16 (T4, V100), where the oracles run in float16 as well. The oracles do not come
from our code: the model's own processor and `generate`, its eager `output_attentions`, its own forward's
hidden states and rotary embeddings.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from conftest import ASSISTANT
from tiny_models import FAMILIES
from transformers import AutoModelForImageTextToText, LogitsProcessor, LogitsProcessorList

from dytok_cli.math.budget import total_budget
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.errors import InputError
from dytok_cli.models.decoder import cache_argument
from dytok_cli.pipeline import Pipeline
from dytok_cli.prefill import single_pass
from dytok_cli.prefill.prefix import PrefixReuse, cache_before_last
from dytok_cli.prefill.prior_pass import keyframe_prior
from dytok_cli.math.prior import normalise
from dytok_cli.types import Frames, Question

QUESTION = "what happens in the video?"
SHORT_QUESTION = "what?"
FRAMES = 6
TWO_PASS = [Method.dytok, Method.visionzip]
COMPRESSING = [*TWO_PASS, Method.dytok_fastv]


# The family run in float16 besides float32: LLaVA-OneVision, the paper's, whose reference ran in float16.
HALF = "llava_onevision"


@pytest.fixture(params=[*sorted(FAMILIES), f"{HALF}-float16"])
def family(request, build_family, load_family) -> SimpleNamespace:
    """Each supported family in turn in float32, and `HALF` in float16: its name, dtype, tiny model
    directory and adapter loaded in that dtype."""
    name, _, dtype = request.param.partition("-")
    dtype = DType(dtype or "float32")
    adapter = load_family(name, dtype)
    assert adapter.model.dtype == getattr(torch, dtype.value)
    return SimpleNamespace(name=name, dtype=dtype, dir=build_family(name), adapter=adapter)


def settings(model, **overrides) -> Settings:
    """Settings for `model`: a `family`, in its dtype, or a model directory, in float32."""
    directory, dtype = (model.dir, model.dtype) if isinstance(model, SimpleNamespace) else (model, DType.float32)
    # Decoding in-process keeps these tests quick; the bounded worker is covered by the CLI tests.
    options = dict(model=str(directory), frames=FRAMES, device=Device.cpu, dtype=dtype, max_new_tokens=12,
                   decode_timeout=None, method=Method.dytok)
    return Settings(**{**options, **overrides})


def softmax_layers(model) -> tuple[int, ...]:
    """The decoder layers of a `transformers` model that have softmax attention, read from its own modules:
    every layer, or in a hybrid decoder (Qwen3.5) the full-attention ones between linear-attention layers."""
    return tuple(i for i, layer in enumerate(model.get_decoder().layers) if hasattr(layer, "self_attn"))


def attention_layers(model) -> tuple[int, ...]:
    """Those of them whose attention reaches every earlier token, the ones the prior and pruning read: all but
    Gemma 4's sliding-window layers, read from its own modules too."""
    layers = model.get_decoder().layers
    return tuple(i for i in softmax_layers(model) if getattr(layers[i].self_attn, "sliding_window", None) is None)


def is_hybrid(family) -> bool:
    """Whether the decoder has linear-attention layers."""
    return len(softmax_layers(family.adapter.model)) < len(family.adapter.model.get_decoder().layers)


def early_layer(family) -> int:
    """An early prune layer with a layer before it: the first softmax-attention layer after layer 0."""
    return next(layer for layer in attention_layers(family.adapter.model) if layer >= 1)


def deeper_layer(family) -> int:
    """A prune layer with two softmax-attention layers from layer 1 on up to it (2 if every layer has attention)."""
    return [layer for layer in attention_layers(family.adapter.model) if layer >= 1][1]


def own_inputs(adapter, frames: Frames, question: str, **template):
    """The model's own processor on the same sampled frames, told where they were sampled from and how long the
    video lasts (as its own video loaders tell it); `template` holds the chat template's own keywords
    (`enable_thinking`)."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True, **template)
    metadata = {"total_num_frames": frames.total_frames, "fps": frames.video_fps, "frames_indices": list(frames.indices),
                "duration": frames.duration_s}
    return adapter.processor(
        text=prompt, videos=[frames.images], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )


def own_generate(adapter, frames: Frames, question: str, max_new_tokens: int = 12) -> list[int]:
    """The model's own processor + generate on the same frames, nothing of ours involved."""
    inputs = own_inputs(adapter, frames, question)
    output = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module")
def eager():
    """eager(model_dir, dtype) -> the same checkpoint loaded with eager attention, which returns its weights."""
    loaded = {}

    def load(model_dir, dtype: DType):
        if (model_dir, dtype) not in loaded:
            loaded[model_dir, dtype] = AutoModelForImageTextToText.from_pretrained(
                model_dir, attn_implementation="eager", dtype=getattr(torch, dtype.value)).eval()
        return loaded[model_dir, dtype]

    return load


def eager_prior(eager_model, adapter, frames: Frames, question: str, layers, num_frames: int, per_frame: int) -> torch.Tensor:
    """§2.1 from `output_attentions` under eager attention, renormalised over the frames' tokens."""
    inputs = own_inputs(adapter, frames, question)
    with torch.no_grad():
        attentions = eager_model(**inputs, output_attentions=True).attentions
    video = (inputs["input_ids"][0] == adapter.video_token_id()).nonzero()[:, 0][: num_frames * per_frame]
    with_attention = softmax_layers(eager_model)  # `attentions` holds one entry per layer that has any
    assert len(attentions) == len(with_attention)
    per_layer = []
    for layer in layers:
        last_row = attentions[with_attention.index(layer)][0, :, -1, video].double()  # (H, F*T)
        last_row = last_row / last_row.sum(dim=-1, keepdim=True)
        per_layer.append(last_row.mean(dim=0).view(num_frames, per_frame).mean(dim=1))
    return normalise(torch.stack(per_layer).mean(dim=0)).float()


@contextmanager
def layer_inputs(adapter, index: int, keyword: str | None = None):
    """What decoder layer `index` receives each time it runs: its hidden states, or one keyword argument."""
    seen: list = []

    def record(module, args, kwargs):
        seen.append(kwargs[keyword] if keyword else args[0].clone())

    handle = adapter.language_model().layers[index].register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def kept_sequence(input_ids: torch.Tensor, video_token_id: int, plan) -> torch.Tensor:
    """(S_kept,) positions in the uncompressed prompt `input_ids` (S,) of what a compressed prompt holds,
    in its order: every text token, and where each frame's tokens were, that frame's kept tokens in the
    order they were kept."""
    video = (input_ids == video_token_id).nonzero()[:, 0]
    per_frame = plan.encoded.tokens_per_frame
    frame_tokens = plan.encoded.num_frames * per_frame
    text = (input_ids != video_token_id).nonzero()[:, 0].tolist()
    entries = [(position, 0) for position in text]
    for order, index in enumerate(plan.kept_index.tolist(), start=1):
        anchor = video[index // per_frame * per_frame] if index < frame_tokens else video[index]
        entries.append((int(anchor), order))
    ordered = sorted(range(len(entries)), key=lambda i: entries[i])
    positions = [*text, *video[plan.kept_index].tolist()]
    return torch.tensor([positions[i] for i in ordered])


# --- ratio 1 is the model itself ----------------------------------------------------------------

UNCOMPRESSED = {
    "none": dict(method=Method.none),
    "dytok": dict(method=Method.dytok, ratio=1.0),
    "visionzip": dict(method=Method.visionzip, ratio=1.0),
    "dytok-fastv": dict(method=Method.dytok_fastv, ratio=1.0),
    "dytok-fastv-every-K": dict(method=Method.dytok_fastv, ratio=1.0),  # at each softmax-attention layer in turn
}


@pytest.mark.parametrize("frames", [FRAMES, 5], ids=["even", "odd"])
@pytest.mark.parametrize("case", UNCOMPRESSED)
def test_uncompressed_answer_is_the_models_own_generate(family, clip, case, frames):
    if family.name.endswith("_moe") and (frames != FRAMES or case.endswith("every-K")):
        # A MoE variant shares its dense family's adapter, vision tower and prompt, which an odd frame count
        # (a temporal patch's padding) and pruning at each layer in turn exercise; only its MLP differs.
        pytest.skip("the dense family runs it")
    prune_layers = attention_layers(family.adapter.model) if case.endswith("every-K") else [None]
    expected = None
    for prune_layer in prune_layers:
        pipeline = Pipeline(settings(family, frames=frames, prune_layer=prune_layer, **UNCOMPRESSED[case]),
                            model=family.adapter)
        answer = pipeline.ask(clip, QUESTION)
        expected = expected or own_generate(family.adapter, pipeline.read(clip), QUESTION)
        assert answer.token_ids == expected, f"--prune-layer {prune_layer}"
        assert answer.text == family.adapter.decode(torch.tensor(expected))
        assert answer.plan.kept_tokens == answer.plan.encoded.num_frames * answer.plan.encoded.tokens_per_frame


def test_a_conversation_is_the_models_own(family, clip):
    """Text that goes with the video and earlier turns reach the prompt as the model's own chat template
    writes them: at ratio 1 the answer is its own `generate` over the same messages, and a later turn goes
    on from the video's prefix of the first."""
    first = Question(QUESTION, context="the dog is red")
    later = Question("how many people walks left?", history=((QUESTION, "a man walks"),), context="the dog is red")
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"the dog is red\n{QUESTION}"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a man walks"}]},
        {"role": "user", "content": [{"type": "text", "text": later.text}]},
    ]
    pipeline = Pipeline(settings(family, method=Method.none), model=family.adapter)
    visual = pipeline.prepare(clip)
    pipeline.ask(visual, first)
    answer = pipeline.ask(visual, later)
    frames = visual.frames
    prompt = family.adapter.processor.apply_chat_template(messages, add_generation_prompt=True)
    metadata = {"total_num_frames": frames.total_frames, "fps": frames.video_fps, "frames_indices": list(frames.indices),
                "duration": frames.duration_s}
    inputs = family.adapter.processor(text=prompt, videos=[frames.images], video_metadata=[metadata],
                                      do_sample_frames=False, return_tensors="pt")
    ours = family.adapter.build_inputs(later, visual.encoded.all_tokens(), video=visual.encoded)["input_ids"]
    assert torch.equal(ours, inputs["input_ids"])
    own = family.adapter.model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert answer.token_ids == own.tolist()
    assert answer.plan.reused_prefix_tokens > 0 and answer.plan.question == later


@pytest.mark.parametrize("method", [Method.dytok, Method.dytok_fastv])
def test_compression_changes_what_the_model_sees(family, clip, method):
    """Guards the oracles here: the tiny model's answer does depend on the visual tokens."""
    full = Pipeline(settings(family, method=Method.none), model=family.adapter).ask(clip, QUESTION)
    compressed = Pipeline(settings(family, method=method, ratio=0.1,
                                   prune_layer=None if method is Method.dytok else early_layer(family)),
                          model=family.adapter).ask(clip, QUESTION)
    assert compressed.token_ids != full.token_ids


# --- the keyframe prior -------------------------------------------------------------------------


# How far our prior may lie from the eager oracle's, in the family's dtype. float16: measured at most 1.2e-3
# (on weights near 1/6) over these tests: the oracle rounds its attention weights to float16, and its eager
# layers' float16 outputs differ from the SDPA ones our walk runs on, layer after layer.
PRIOR_TOLERANCE = {DType.float32: 1e-5, DType.float16: 2e-3}

# Which of a family's softmax-attention layers (all four of a 4-layer model's; a hybrid's full-attention ones).
PRIOR_LAYERS = {"first": slice(0, 1), "middle": slice(1, 3), "last": slice(-1, None), "all": slice(None)}


@pytest.mark.parametrize("pick", PRIOR_LAYERS)
def test_prior_matches_eager_attention(family, eager, clip, pick):
    layers = attention_layers(family.adapter.model)[PRIOR_LAYERS[pick]]
    assert family.adapter.attention_layers() == attention_layers(family.adapter.model)
    frames = Pipeline(settings(family), model=family.adapter).read(clip)
    video = family.adapter.encode(frames)
    reference = eager_prior(eager(family.dir, family.dtype), family.adapter, frames, QUESTION, layers, video.num_frames, video.tokens_per_frame)
    with_exit = keyframe_prior(family.adapter, video, QUESTION, layers, early_exit=True)
    without_exit = keyframe_prior(family.adapter, video, QUESTION, layers, early_exit=False)
    torch.testing.assert_close(with_exit, reference, atol=PRIOR_TOLERANCE[family.dtype], rtol=0)
    torch.testing.assert_close(without_exit, reference, atol=PRIOR_TOLERANCE[family.dtype], rtol=0)
    assert with_exit.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_early_exit_stops_after_the_last_prior_layer(family, clip):
    video = family.adapter.encode(Pipeline(settings(family), model=family.adapter).read(clip))
    layer = early_layer(family)
    with layer_inputs(family.adapter, 0) as first, layer_inputs(family.adapter, layer + 1) as after:
        keyframe_prior(family.adapter, video, QUESTION, (layer,))
    assert (len(first), len(after)) == (1, 0)  # the prior layer was entered, its attention seen, and the pass ended inside it


def test_assistant_prior_model(family, eager, build_family, load_family, clip):
    assistant_dir, assistant = build_family(family.name, **ASSISTANT), load_family(family.name, family.dtype, **ASSISTANT)
    pipeline = Pipeline(settings(family, prior_model=str(assistant_dir), ratio=0.25), model=family.adapter, prior=assistant)
    assert pipeline.prior_layers == (2,)  # the deepest third of the assistant's 3 layers
    plan = pipeline.plan(clip, QUESTION)
    encoded = plan.encoded
    frames = pipeline.read(clip)
    reference = eager_prior(eager(assistant_dir, family.dtype), assistant, frames, QUESTION, (2,), encoded.num_frames, encoded.tokens_per_frame)
    torch.testing.assert_close(plan.weights, reference, atol=PRIOR_TOLERANCE[family.dtype], rtol=0)
    own = keyframe_prior(family.adapter, encoded, QUESTION, attention_layers(family.adapter.model)[-2:])
    assert not torch.allclose(plan.weights, own, atol=1e-3)  # it really is the assistant's prior


def test_assistant_vision_pass_counts_as_prior_time(family, build_family, load_family, clip, monkeypatch):
    """A clock that moves only inside the vision passes: each lands in its own timing, once per video."""
    from dytok_cli import gpu

    assistant = load_family(family.name, family.dtype, **ASSISTANT)
    now = [0.0]
    monkeypatch.setattr(gpu, "perf_counter", lambda: now[0])

    def taking(seconds, encode):
        def timed(*args, **kwargs):
            now[0] += seconds
            return encode(*args, **kwargs)

        return timed

    monkeypatch.setattr(family.adapter, "encode", taking(10.0, family.adapter.encode))
    monkeypatch.setattr(assistant, "encode", taking(100.0, assistant.encode))
    pipeline = Pipeline(settings(family, prior_model=str(build_family(family.name, **ASSISTANT))),
                        model=family.adapter, prior=assistant)
    visual = pipeline.prepare(clip)
    first = pipeline.plan(visual, QUESTION).timings
    assert (first["vision_s"], first["prior_s"]) == (10.0, 100.0)
    again = pipeline.plan(visual, QUESTION).timings  # the encodings are reused
    assert (again["vision_s"], again["prior_s"]) == (0.0, 0.0)


# --- what is kept -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", COMPRESSING)
@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.6])
def test_kept_tokens_follow_budgets(family, clip, method, ratio, monkeypatch):
    pipeline = Pipeline(settings(family, method=method, ratio=ratio, max_new_tokens=1,
                                 prune_layer=early_layer(family) if method is Method.dytok_fastv else None),
                        model=family.adapter)
    seen = {}
    original = family.adapter.generate

    def spy(inputs, *args, **kwargs):
        seen["input_ids"] = inputs["input_ids"]
        return original(inputs, *args, **kwargs)

    monkeypatch.setattr(family.adapter, "generate", spy)
    plan = pipeline.answer(pipeline.plan(clip, QUESTION)).plan
    encoded = plan.encoded
    assert plan.kept_tokens == total_budget(ratio, encoded.num_frames, encoded.tokens_per_frame)
    assert [s.tokens.shape[0] for s in plan.selections] == plan.budgets.tolist()
    assert [s.dominant + s.contextual for s in plan.selections] == plan.budgets.tolist()
    assert plan.visual_tokens.shape[0] == plan.kept_tokens + encoded.extra.shape[0]
    placeholders = int((seen["input_ids"] == family.adapter.video_token_id()).sum())
    assert placeholders == plan.kept_tokens + encoded.extra.shape[0]
    if method is Method.visionzip:
        assert plan.budgets.max() - plan.budgets.min() <= 1
    if method is Method.dytok_fastv:  # whole tokens in their original order, nothing merged
        assert all(s.contextual == 0 and torch.equal(s.token_index, s.token_index.sort().values) for s in plan.selections)
        assert plan.timings["prior_s"] == 0.0 and plan.timings["prefill_s"] > 0


@pytest.mark.parametrize("method, ratio", [(Method.dytok, 0.3), (Method.visionzip, 0.5), (Method.none, 1.0), (Method.dytok_fastv, 0.3)])
def test_kept_tokens_keep_their_uncompressed_positions(family, clip, method, ratio):
    """The rotary embedding a decoder layer applies to the kept tokens is the one it applies to them in
    the model's own uncompressed run (renumbered contiguously for a 1-D family's two-pass prompt)."""
    adapter = family.adapter
    single = method is Method.dytok_fastv
    prune_layer = early_layer(family)
    layer = prune_layer + 1 if single else 0  # the first layer that sees only the kept tokens
    pipeline = Pipeline(settings(family, method=method, ratio=ratio, prune_layer=prune_layer if single else None,
                                 max_new_tokens=1), model=adapter)
    frames = pipeline.read(clip)
    plan = pipeline.plan(clip, QUESTION)
    inputs = own_inputs(adapter, frames, QUESTION)
    with layer_inputs(adapter, layer, "position_embeddings") as own, torch.no_grad():
        adapter.model(**inputs)
    with layer_inputs(adapter, layer, "position_embeddings") as ours:
        pipeline.answer(plan)
    kept = kept_sequence(inputs["input_ids"][0], adapter.video_token_id(), plan)
    if not (single or adapter.keeps_uncompressed_positions):
        kept = torch.arange(kept.numel())
    # The prompt may reach the layer in pieces: the single pass's layers after K run the kept tokens but
    # the last, generate's first (and, with one new token, only) step runs it; prefix reuse runs the
    # video's prefix first, then the question's tokens.
    received = [torch.cat(parts, dim=-2) for parts in zip(*ours)]
    for own_part, our_part in zip(own[0], received):  # cos, sin
        assert our_part.shape[-2] == kept.numel()
        torch.testing.assert_close(our_part, own_part[..., kept, :], atol=1e-6, rtol=0)


# --- the single pass ----------------------------------------------------------------------------


@pytest.mark.parametrize("reuse", [False, True], ids=["whole", "prefix-reuse"])
@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_single_pass_leaves_layers_up_to_k_untouched(family, clip, ratio, reuse):
    adapter, prune_layer = family.adapter, early_layer(family)
    pipeline = Pipeline(settings(family, method=Method.dytok_fastv, ratio=ratio, prune_layer=prune_layer, max_new_tokens=1,
                                 prefix_cache=reuse), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    encoded, prefill = plan.encoded, plan.prefill
    full = adapter.build_inputs(QUESTION, encoded.all_tokens(), video=encoded)
    # What layer K + 1 receives in the model's own uncompressed forward (DeepStack added, where a family has it).
    with layer_inputs(adapter, prune_layer + 1) as own, torch.no_grad():
        adapter.model(**full)
    with layer_inputs(adapter, prune_layer + 1) as after_k:
        pipeline.answer(plan)
    pruned = after_k[0]  # the prefill's pass: the kept tokens but the last, which generate's first step runs
    frame_tokens = encoded.num_frames * encoded.tokens_per_frame
    assert pruned.shape[1] == full["input_ids"].shape[1] - frame_tokens + plan.kept_tokens - 1
    if reuse or is_hybrid(family):
        # The prompt ran in pieces (with reuse the video's prefix, then the question; a hybrid's last token
        # alone): the same sums in another order, a linear-attention layer's chunked scan split elsewhere.
        # Measured at most 3.1e-4 apart (qwen3_5_moe with reuse, transformers 5.24; 1.1e-4 on 5.25) where
        # values reach 103, float32.
        torch.testing.assert_close(pruned, own[0][:, prefill.keep[:-1]], atol=1e-3, rtol=0)
    else:
        assert torch.equal(pruned, own[0][:, prefill.keep[:-1]])


def test_single_pass_prior_is_the_dytok_prior_over_the_same_layers(family, clip):
    prune_layer = deeper_layer(family)
    pipeline = Pipeline(settings(family, method=Method.dytok_fastv, prune_layer=prune_layer, prior_layers=f"1-{prune_layer}"),
                        model=family.adapter)
    plan = pipeline.plan(clip, QUESTION)
    with_attention = attention_layers(family.adapter.model)
    layers = tuple(layer for layer in with_attention if 1 <= layer <= prune_layer)
    assert pipeline.prior_layers == layers and len(layers) == 2
    torch.testing.assert_close(plan.weights, keyframe_prior(family.adapter, plan.encoded, QUESTION, layers), atol=1e-6, rtol=0)
    default = Pipeline(settings(family, method=Method.dytok_fastv, prune_layer=prune_layer), model=family.adapter)
    assert default.prior_layers == tuple(layer for layer in with_attention if layer <= prune_layer)


def test_single_pass_answer_decodes_from_the_pruned_cache(family, clip):
    """Decoding by hand from the pruned cache: the last prompt token (which it does not hold yet), then one
    token at a time, each one position further (on every M-RoPE axis)."""
    adapter = family.adapter
    pipeline = Pipeline(settings(family, method=Method.dytok_fastv, ratio=0.25, prune_layer=early_layer(family)), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    first = pipeline.answer(plan)
    assert pipeline.answer(plan).token_ids == first.token_ids  # a plan can be answered again
    cache = single_pass.finish(adapter, plan.prefill)
    prompt = plan.prefill.prompt
    token, position = prompt.input_ids[:, -1:], prompt.position_ids[..., -1:]
    expected = []
    with torch.inference_mode():  # as `generate` runs in the pipeline: a linear layer's states update in place
        for _ in range(len(first.token_ids)):
            cached = cache_argument(type(adapter.model).forward, cache)
            logits = adapter.model(input_ids=token, position_ids=position, use_cache=True, **cached).logits
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            expected.append(int(token))
            position = position + 1
    assert first.token_ids == expected


def test_prior_layers_beyond_the_prune_layer(family, clip):
    k, depth = early_layer(family), family.adapter.num_layers
    pipeline = Pipeline(settings(family, method=Method.dytok_fastv, prune_layer=k, prior_layers=f"{k + 1}-{k + 2}"),
                        model=family.adapter)
    with pytest.raises(InputError, match=rf"within 0-{k} \(--prune-layer\)"):
        pipeline.plan(clip, QUESTION)
    with pytest.raises(InputError, match=f"--prune-layer {depth} is outside the model's layers 0-{depth - 1}"):
        Pipeline(settings(family, method=Method.dytok_fastv, prune_layer=depth), model=family.adapter).plan(clip, QUESTION)


# --- a hybrid decoder (linear attention between softmax-attention layers) -------------------------


def test_a_hybrid_reads_and_prunes_at_full_attention_layers_only(family, clip):
    """And Gemma 4 at its global layers only: from the last prompt token a sliding-window layer sees no video."""
    with_attention = attention_layers(family.adapter.model)
    if len(with_attention) == family.adapter.num_layers:
        pytest.skip("every decoder layer has softmax attention over every token")
    listing = ", ".join(map(str, with_attention))
    linear = with_attention[0] - 1
    for method, fields in [(Method.dytok_fastv, dict(prune_layer=linear)), (Method.dytok, dict(prior_layers=f"0-{linear}"))]:
        with pytest.raises(InputError, match=f"full-attention layer.*choose among {listing}$"):
            Pipeline(settings(family, method=method, **fields), model=family.adapter).plan(clip, QUESTION)
    depth = family.adapter.num_layers
    assert Pipeline(settings(family, method=Method.dytok), model=family.adapter).prior_layers == tuple(
        layer for layer in with_attention if layer >= depth - math.ceil(depth / 3))
    assert Pipeline(settings(family, method=Method.dytok_fastv), model=family.adapter).prune_layer in with_attention


@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_a_hybrids_linear_layers_up_to_k_keep_their_state_after_every_token(family, clip, ratio):
    """The cache the single pass hands `generate` holds, at each linear-attention layer <= K, the model's
    own states after the whole prompt but its last token (which generate runs next), dropped tokens
    included; the layers after K have seen only the kept tokens. The prompt runs in two pieces (prefix
    reuse: the video's prefix, then the question), so a state is the model's own up to the order of sums."""
    if not is_hybrid(family):
        pytest.skip("every decoder layer has softmax attention")
    adapter = family.adapter
    with_attention = attention_layers(adapter.model)
    prune_layer = with_attention[0]
    pipeline = Pipeline(settings(family, method=Method.dytok_fastv, ratio=ratio, prune_layer=prune_layer), model=adapter)
    # A short question: a tiny model's linear layers decay fast, and would forget the dropped tokens over a long one.
    plan = pipeline.plan(clip, SHORT_QUESTION)
    handed = single_pass.finish(adapter, plan.prefill)
    encoded = plan.encoded
    full = adapter.build_inputs(SHORT_QUESTION, encoded.all_tokens(), video=encoded)
    before_last = {**full, "input_ids": full["input_ids"][:, :-1], "attention_mask": full["attention_mask"][:, :-1],
                   "position_ids": full["position_ids"][..., :-1]}
    with torch.no_grad():
        own = adapter.model(**before_last, use_cache=True).cache
    linear = [layer for layer in range(adapter.num_layers) if layer not in with_attention]
    changed = []
    for layer in linear:
        ours, theirs = handed.layers[layer], own.layers[layer]
        if layer < prune_layer or ratio == 1:
            # The layers below ran the prompt in pieces, split where the prefix ends: measured at most 2.3e-5
            # apart in a convolution state (entries up to 8.9), 6.9e-6 in a recurrent one (up to 1.5), float32.
            torch.testing.assert_close(ours.conv_states[0], theirs.conv_states[0], atol=1e-4, rtol=0)
            torch.testing.assert_close(ours.recurrent_states[0], theirs.recurrent_states[0], atol=5e-5, rtol=0)
        else:  # decay makes a state forget early tokens, so a layer may not show the dropped ones: some layer does
            changed.append(not torch.allclose(ours.recurrent_states[0], theirs.recurrent_states[0], atol=1e-3))
    assert ratio == 1 or any(changed)


# --- prefix reuse -----------------------------------------------------------------

# The third asks the first again, after a question that left the same prefix.
LATER_QUESTIONS = [QUESTION, "how many people walks left?", QUESTION]


def method_fields(family, method: Method) -> dict:
    return dict(method=method, ratio=None if method is Method.none else 0.25,
                prune_layer=early_layer(family) if method is Method.dytok_fastv else None)


@pytest.mark.parametrize("method", list(Method))
def test_answers_are_the_same_with_and_without_prefix_reuse(family, clip, method):
    reusing = Pipeline(settings(family, **method_fields(family, method)), model=family.adapter)
    fresh = Pipeline(settings(family, prefix_cache=False, **method_fields(family, method)), model=family.adapter)
    visual = reusing.prepare(clip)
    answers = [reusing.ask(visual, question) for question in LATER_QUESTIONS]
    expected = [fresh.ask(visual, question) for question in LATER_QUESTIONS[:2]]
    assert [answer.token_ids for answer in answers] == [answer.token_ids for answer in [*expected, expected[0]]]
    if method is Method.none:  # and the model's own, for the question that went on from the first's prefix
        assert answers[1].token_ids == own_generate(family.adapter, reusing.read(clip), LATER_QUESTIONS[1])
    # The video's prefix ran for the first question only: everything up to its last visual token.
    reused = [answer.plan.reused_prefix_tokens for answer in answers]
    assert reused[0] == 0 and reused[1] == reused[2] > answers[1].plan.encoded.num_frames
    assert all(answer.plan.reused_prefix_tokens == 0 for answer in expected)


# --- what generate goes on from ----------------------------------------------------------------

# The first answer token's logits against the model's own forward over the same prompt, fed through its own
# cache in the pieces the path runs it in, float32: measured at most 2.4e-6 over every family, method and
# path (transformers 5.24 and 5.25). Against one whole forward the pieces alone move a hybrid's logits by up
# to 1.5e-4 (the model's own forward, split where the video's prefix ends: its chunked linear attention
# computes in float32 whatever the dtype, and a tiny MoE amplifies it), which is why the pieces are the
# reference. A resumed cache that counted 4 tokens (transformers 5.25, before the fix) was off by 7e-2.
LOGITS_NOISE = 1e-5


class _FirstScores(LogitsProcessor):
    """Keeps the scores `generate` computes for the first answer token (float32, before any other processor)."""

    def __init__(self) -> None:
        self.scores: torch.Tensor | None = None

    def __call__(self, input_ids, scores):
        if self.scores is None:
            self.scores = scores[0].clone()
        return scores


def answer_with_first_logits(pipeline, plan, monkeypatch):
    adapter, first = pipeline.model, _FirstScores()
    generate = adapter.generate

    def recording(inputs, generation, logits_processor=None, streamer=None, **rest):
        return generate(inputs, generation, LogitsProcessorList([first, *(logits_processor or [])]), streamer, **rest)

    with monkeypatch.context() as patch:
        patch.setattr(adapter, "generate", recording)
        answer = pipeline.answer(plan)
    return answer, first.scores


def same_prompt(adapter, plan) -> dict:
    """The prompt `plan` answers from, as the model's own forward and `generate` take it whole."""
    return adapter.build_inputs(plan.question, plan.visual_tokens, plan.kept_index, video=plan.encoded,
                                deepstack=plan.deepstack or None)


def own_forward_in_pieces(adapter, inputs: dict, stops: list[int]) -> torch.Tensor:
    """The last token's logits of the model's own forward over `inputs`, fed as the pieces that end at
    `stops` through the model's own cache (the visual inputs with the first piece, which holds the video)."""
    ids, positions = inputs["input_ids"], inputs.get("position_ids")
    visual = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask", "position_ids")}
    cache, start = None, 0
    with torch.no_grad():
        for stop in stops:
            piece = dict(input_ids=ids[:, start:stop], attention_mask=torch.ones_like(ids[:, :stop]),
                         position_ids=torch.arange(start, stop)[None] if positions is None else positions[..., start:stop],
                         **(visual if start == 0 else cache_argument(type(adapter.model).forward, cache)))
            output = adapter.model(**piece, use_cache=True)
            cache, start = output.cache, stop
    return output.logits[0, -1]


def pieces(method: Method, reuse: bool, prefix: int, length: int) -> list[int]:
    """Where the path that answers with `method` cuts a prompt of `length` tokens whose video's prefix is
    `prefix` tokens long: generate runs the last token alone after a cache it is handed (the single pass's,
    prefix reuse's), which holds the prefix as run for the video's first question."""
    handed = method is Method.dytok_fastv or (reuse and method.traits.same_tokens_for_every_question)
    if not handed:
        return [length]
    return [prefix, length - 1, length] if reuse else [length - 1, length]


@pytest.mark.parametrize("reuse", [False, True], ids=["whole", "prefix-reuse"])
@pytest.mark.parametrize("method", list(Method))
def test_the_first_answer_token_is_the_models_own_forward(family, clip, method, reuse, monkeypatch):
    """Every path that hands `generate` a cache (the single pass, at ratio 1 where the model's own forward
    is its reference; prefix reuse for every method) answers as the model does: the first answer token's
    logits are its own forward's over the same prompt, the answer its own `generate`'s, token for token."""
    adapter = family.adapter
    fields = dict(method_fields(family, method), prefix_cache=reuse)
    if method is Method.dytok_fastv:
        fields["ratio"] = 1.0
    pipeline = Pipeline(settings(family, **fields), model=adapter)
    visual = pipeline.prepare(clip)
    for question in LATER_QUESTIONS[:2]:  # with reuse the second goes on from the first's prefix
        plan = pipeline.plan(visual, question)
        answer, logits = answer_with_first_logits(pipeline, plan, monkeypatch)
        inputs = same_prompt(adapter, plan)
        length = inputs["input_ids"].shape[1]
        prefix = int((inputs["input_ids"][0] == adapter.video_token_id()).nonzero().max()) + 1
        own = own_forward_in_pieces(adapter, inputs, pieces(method, reuse, prefix, length))
        assert (logits - own).abs().max().item() <= LOGITS_NOISE
        with torch.no_grad():
            own_answer = adapter.model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, length:].tolist()
        assert answer.token_ids == own_answer
    assert (plan.reused_prefix_tokens > 0) == reuse  # the second question's


def counted_lengths(cache) -> set[int]:
    """The sequence length `cache` reports, and each of its layers that counts one (transformers 5.25 counts a
    linear-attention layer's tokens too; `generate` may read either)."""
    counted = [layer.get_seq_length() for layer in cache.layers if hasattr(layer, "get_seq_length")]
    return {int(cache.get_seq_length()), *map(int, counted)}


def test_a_resumed_cache_counts_the_tokens_it_holds(family, clip):
    """What `generate` and a later walk go on from says how many tokens are behind it: the places that
    rebuild a cache from kept state (the single pass's hand-over, prefix reuse's hand-over and its start)."""
    adapter = family.adapter
    pipeline = Pipeline(settings(family, method=Method.dytok_fastv, ratio=0.25, prune_layer=early_layer(family)),
                        model=adapter)
    visual = pipeline.prepare(clip)
    reuse, decoder = PrefixReuse(), adapter.decoder()
    for question in LATER_QUESTIONS[:2]:
        prefill = pipeline.plan(visual, question).prefill
        assert counted_lengths(single_pass.finish(adapter, prefill)) == {prefill.prompt.length - 1}
        prompt = adapter.prompt_tensors(question, visual.encoded)
        assert counted_lengths(cache_before_last(adapter, prompt, reuse)) == {prompt.length - 1}
        head = reuse.head(decoder, prompt, range(decoder.num_layers))
        cache, start = decoder.start(head)
        assert start == head.length and counted_lengths(cache) == {head.length}
    assert reuse.reused == head.length  # the second question went on from the first's prefix


def test_the_tiny_hybrid_prompt_is_longer_than_a_linear_attention_chunk(family, clip):
    """Guards the hybrid oracles above: a prompt of one chunk (64 tokens) or a video of one temporal patch
    would hide what a chunked scan split at the reused prefix and several patches' positions do."""
    if not is_hybrid(family):
        pytest.skip("every decoder layer has softmax attention")
    visual = Pipeline(settings(family), model=family.adapter).prepare(clip)
    prompt = family.adapter.prompt_tensors(QUESTION, visual.encoded)
    assert prompt.length > 64 and int(prompt.visual_positions.max()) + 1 > 64 and visual.encoded.num_frames > 1


@pytest.mark.parametrize("method", [Method.none, Method.dytok_fastv])
def test_a_template_with_the_question_before_the_video_falls_back(family, clip, method, monkeypatch):
    adapter = family.adapter
    # SmolVLM2's processor renders a conversation with a video through its module's own template, whatever the
    # checkpoint's: that one is reversed too.
    module = sys.modules[type(adapter.processor).__module__]
    for owner, name in [(adapter.processor, "chat_template"), (adapter.tokenizer, "chat_template"),
                        (module, "DEFAULT_CHAT_TEMPLATE")]:
        if getattr(owner, name, None):
            template = getattr(owner, name).replace("in message['content'] %}", "in message['content'] | reverse %}")
            monkeypatch.setattr(owner, name, template)
    ids = adapter.prompt_ids(QUESTION)[0].tolist()
    assert ids.index(adapter.tokenizer.convert_tokens_to_ids("?")) < ids.index(adapter.video_token_id())
    fields = dict(method_fields(family, method), max_new_tokens=4)
    reusing = Pipeline(settings(family, **fields), model=adapter)
    fresh = Pipeline(settings(family, prefix_cache=False, **fields), model=adapter)
    visual = reusing.prepare(clip)
    answers = [reusing.ask(visual, question) for question in LATER_QUESTIONS[:2]]
    assert [answer.token_ids for answer in answers] == [fresh.ask(visual, question).token_ids for question in LATER_QUESTIONS[:2]]
    assert [answer.plan.reused_prefix_tokens for answer in answers] == [0, 0]


@pytest.mark.parametrize("method", [Method.none, Method.dytok_fastv, Method.dytok])
def test_a_prefix_is_kept_for_one_video_until_released(tiny_llava_dir, tiny_llava, clip, method):
    pipeline = Pipeline(settings(tiny_llava_dir, method=method, max_new_tokens=1,
                                 ratio=None if method is Method.none else 0.25), model=tiny_llava)
    first, second = pipeline.prepare(clip), pipeline.prepare(clip)  # the same file, encoded again: another video

    def reused(visual) -> int:
        return pipeline.ask(visual, QUESTION).plan.reused_prefix_tokens

    counts = [reused(first), reused(first), reused(second), reused(second)]
    assert counts[0] == 0 and counts[1] > 0 and counts[2:] == [0, counts[1]]
    # Another pipeline (another method) on the same model and video keeps its own.
    other = Pipeline(settings(tiny_llava_dir, method=Method.none if method is not Method.none else Method.visionzip,
                              max_new_tokens=1), model=tiny_llava)
    assert other.ask(second, QUESTION).plan.reused_prefix_tokens == 0
    pipeline.release()
    assert reused(second) == 0


# --- one process, many models -------------------------------------------------------------------


def test_probes_are_removed_and_models_do_not_interfere(family, build_family, load_family, clip):
    adapter, assistant = family.adapter, load_family(family.name, family.dtype, **ASSISTANT)
    frames = Pipeline(settings(family), model=adapter).read(clip)
    before = own_generate(adapter, frames, QUESTION)
    for method in (Method.dytok, Method.dytok_fastv):
        prior_model = str(build_family(family.name, **ASSISTANT)) if method is Method.dytok else None
        pipeline = Pipeline(settings(family, method=method, prior_model=prior_model), model=adapter,
                            prior=assistant if prior_model else None)
        pipeline.ask(clip, QUESTION)
    for model in (adapter.model, assistant.model):
        assert model.config.text_config._attn_implementation == "sdpa"
        assert model.config.vision_config._attn_implementation == "sdpa"
        assert not any(hasattr(module, "_dytok_attention_callback") for module in model.modules())
    assert own_generate(adapter, frames, QUESTION) == before


def test_sampling_is_reproducible_with_a_seed(family, clip):
    def sample(seed: int) -> list[int]:
        return Pipeline(settings(family, temperature=1.5, seed=seed), model=family.adapter).ask(clip, QUESTION).token_ids

    first = sample(3)
    assert sample(3) == first
    assert any(sample(seed) != first for seed in (4, 5, 6))  # it really samples
