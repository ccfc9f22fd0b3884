"""Gemma 4 against oracles that do not come from our code, beyond the contract suite: the keys its KV-shared
layers read, each token's per-layer inputs, its frames' timestamps and budgets in the prompt, and the 26B-A4B
kind, whose frames attend to each other both ways in its sliding layers.

The tiny models (`tiny_models.build_gemma4`) have 6 decoder layers, sliding (0, 2, 4) and global (1, 3, 5), and
63 tokens a frame, so 6 frames make a prompt far longer than the sliding window of 64 tokens. In the E2B/E4B
kind layers 4 and 5 read the keys and values of layers 2 and 3.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys

import pytest
import torch
from test_contract import (
    LATER_QUESTIONS,
    LOGITS_NOISE,
    QUESTION,
    answer_with_first_logits,
    own_forward_in_pieces,
    own_generate,
    own_inputs,
    pieces,
    same_prompt,
    settings,
)
from speech_helpers import speech_like, tiny_whisper_dir, write_clip_with_audio  # noqa: F401 (a fixture)
from transformers import LogitsProcessor, LogitsProcessorList

from dytok_cli import cli
from dytok_cli.apps import bench
from dytok_cli.attention import watch_attention
from dytok_cli.config import Device, DType, Method
from dytok_cli.media.audio import read_audio
from dytok_cli.models import load_random_model
from dytok_cli.models.thinking import Markers
from dytok_cli.pipeline import Pipeline
from dytok_cli.record import subtitles_record
from dytok_cli.types import HEARD, Frames, Question

TOKENS = 63  # per frame


@pytest.fixture(scope="module")
def gemma(build_family, load_family):
    """(model directory, loaded adapter) of the tiny Gemma 4 of the E2B/E4B kind."""
    return build_family("gemma4"), load_family("gemma4")


@pytest.fixture(scope="module")
def large(build_family, load_family):
    """(model directory, loaded adapter) of the tiny Gemma 4 of the 26B-A4B kind."""
    return build_family("gemma4", large=True), load_family("gemma4", large=True)


def shared_from(config) -> dict[int, int]:
    """Each KV-shared layer and the layer whose keys and values it reads, from the model's own config: the
    last layer of its kind before the shared ones ("store")."""
    modes, kinds = config.kv_sharing_modes, config.layer_types
    stores = {kinds[i]: i for i, mode in enumerate(modes) if mode == "store"}
    return {i: stores[kinds[i]] for i, mode in enumerate(modes) if mode == "reuse"}


@pytest.mark.parametrize("prune_layer", [1, 3], ids=["before-the-shared-keys", "after-them"])
def test_a_kv_shared_layer_reads_the_kept_keys_of_the_layer_it_shares(gemma, clip, prune_layer):
    """Pruned after a global layer before the layers whose keys are shared (1), those layers run the kept tokens
    and the layers that share them read what they made; pruned after them (3), they hold the kept tokens' own keys
    from the whole prompt, and the sharing layers read exactly those. Either way, while the answer is generated
    too, a sharing layer sees the same kept set as the layer it shares, never the dropped tokens."""
    directory, adapter = gemma
    shared = shared_from(adapter.model.config.text_config)
    assert shared == {4: 2, 5: 3}
    # Without prefix reuse the prompt runs whole, as in the model's own forward: the same sums, bit for bit.
    pipeline = Pipeline(settings(directory, method=Method.dytok_fastv, ratio=0.25, prune_layer=prune_layer,
                                 max_new_tokens=3, prefix_cache=False), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    modules = adapter.text_attention_modules()
    seen: dict[int, list[torch.Tensor]] = {layer: [] for layer in (2, 3, 4, 5)}

    def keep(layer):
        return lambda query, key, scaling: seen[layer].append(key.clone())

    with watch_attention(adapter.model, "text_config", {modules[layer]: keep(layer) for layer in seen}):
        pipeline.answer(plan)
    handed = plan.prefill.keep[:-1]  # the kept prompt but its last token, which generate runs
    for reader, store in shared.items():
        assert seen[reader][0].shape[-2] == handed.numel()  # the kept tokens, and no other
        if prune_layer < store:  # the store layer ran the kept tokens after pruning, the reader read them
            assert len(seen[reader]) == len(seen[store]) == 4  # the kept tokens but the last; three steps of generate
        else:  # the store layer ran the whole prompt before pruning: the reader reads its keys of the kept tokens
            full = adapter.build_inputs(QUESTION, plan.encoded.all_tokens(), video=plan.encoded)
            own: list[torch.Tensor] = []
            with watch_attention(adapter.model, "text_config", {modules[store]: lambda q, k, s: own.append(k.clone())}):
                with torch.no_grad():
                    adapter.model(**full)
            assert torch.equal(seen[reader][0], own[0][:, :, handed])
            seen[reader] = seen[reader][1:]  # then generate's steps, which the store layer runs too
        for read, stored in zip(seen[reader], seen[store], strict=True):
            assert torch.equal(read, stored)


def test_each_tokens_layer_inputs_are_its_own_after_pruning(gemma, clip):
    """Per-layer embeddings: what a layer after the prune layer adds to each kept token is what it adds to that
    token in the model's own forward over the whole prompt, and the tokens' count is the kept prompt's."""
    directory, adapter = gemma
    prune_layer = 1
    pipeline = Pipeline(settings(directory, method=Method.dytok_fastv, ratio=0.25, prune_layer=prune_layer,
                                 max_new_tokens=1), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    layers = adapter.language_model().layers

    def recorded(run) -> list[torch.Tensor]:
        seen = []
        handle = layers[prune_layer + 1].register_forward_pre_hook(  # the model's own forward passes it second
            lambda module, args, kwargs: seen.append((args[1] if len(args) > 1 else kwargs["per_layer_input"]).clone()),
            with_kwargs=True)
        try:
            with torch.no_grad():
                run()
        finally:
            handle.remove()
        return seen

    full = adapter.build_inputs(QUESTION, plan.encoded.all_tokens(), video=plan.encoded)
    own = recorded(lambda: adapter.model(**full))[0]
    ours = recorded(lambda: pipeline.answer(plan))[0]  # the kept tokens but the last, which generate runs
    handed = plan.prefill.keep[:-1]
    assert ours.shape[1] == handed.numel() < own.shape[1]
    assert torch.equal(ours, own[:, handed])


def spelled(adapter, ids: torch.Tensor) -> str:
    """The prompt's text without the word-level tokenizer's spaces."""
    return "".join(adapter.tokenizer.decode(ids.flatten()).split())


def test_prompt_times_are_the_decoder_times_given(gemma, clip):
    """Times that no index / fps could give (a variable frame rate) reach the prompt as they are, as the
    processor writes a time: minutes and seconds."""
    directory, adapter = gemma
    images = Pipeline(settings(directory), model=adapter).read(clip).images
    times = (0.0, 0.5, 3.0, 59.75, 61.0, 754.5)
    frames = Frames(images=images, indices=tuple(range(6)), timestamps=times, backend="pyav", video_fps=2.0,
                    total_frames=6, duration_s=755.0)
    video = adapter.encode(frames)
    assert video.timestamps == times and video.features.shape[:2] == (6, TOKENS)
    text = spelled(adapter, adapter.build_inputs(QUESTION, video.all_tokens(), video=video)["input_ids"])
    expected = "".join(f"{stamp}<|image>" + "<|video|>" * TOKENS + "<image|>"
                       for stamp in ("00:00", "00:00", "00:03", "00:59", "01:01", "12:34"))
    assert expected in text


def per_frame_placeholders(adapter, ids: torch.Tensor) -> list[int]:
    """Placeholders between each frame's opening and closing markers."""
    ids = ids.flatten().tolist()
    opens = [i for i, token in enumerate(ids) if token == adapter.model.config.boi_token_id]
    closes = [i for i, token in enumerate(ids) if token == adapter.model.config.eoi_token_id]
    return [ids[a:b].count(adapter.video_token_id()) for a, b in zip(opens, closes, strict=True)]


@pytest.mark.parametrize("method", [Method.dytok, Method.dytok_fastv])
def test_each_frame_keeps_its_timestamp_and_exactly_its_budget(gemma, clip, method, monkeypatch):
    directory, adapter = gemma
    pipeline = Pipeline(settings(directory, method=method, ratio=0.01, max_new_tokens=1,
                                 prune_layer=1 if method is Method.dytok_fastv else None), model=adapter)
    seen = {}
    generate = adapter.generate

    def spy(inputs, *args, **kwargs):
        seen["input_ids"] = inputs["input_ids"]
        return generate(inputs, *args, **kwargs)

    monkeypatch.setattr(adapter, "generate", spy)
    plan = pipeline.answer(pipeline.plan(clip, QUESTION)).plan
    assert 0 in plan.budgets.tolist()  # 4 tokens for 6 frames: a frame left without one keeps its time and markers
    ids = seen["input_ids"][0]
    assert per_frame_placeholders(adapter, ids) == plan.budgets.tolist()
    # Every word of the processor's prompt is there, in order: only placeholders were dropped.
    full = own_inputs(adapter, pipeline.read(clip), QUESTION)["input_ids"][0]
    video = adapter.video_token_id()
    assert torch.equal(ids[ids != video], full[full != video])


def test_selector_scores_are_the_last_vision_layers_pooled_as_the_pooler_pools(gemma, clip):
    """VisionZip's scores: the attention each patch receives within its frame and its key, in the tower's last
    layer (recomputed from what that layer received with the model's own rotary embedding), averaged into soft
    tokens by the model's own pooler."""
    directory, adapter = gemma
    tower = adapter.model.model.vision_tower
    module = tower.encoder.layers[-1].self_attn
    rope = sys.modules[type(module).__module__].apply_multidimensional_rope
    seen = {}

    def before_attention(module, args, kwargs):
        seen.update(hidden=args[0] if args else kwargs["hidden_states"], rope=kwargs["position_embeddings"],
                    positions=kwargs["position_ids"])

    handle = module.register_forward_pre_hook(before_attention, with_kwargs=True)
    try:
        encoded = adapter.encode(Pipeline(settings(directory), model=adapter).read(clip))
    finally:
        handle.remove()
    with torch.inference_mode():
        hidden, positions = seen["hidden"], seen["positions"]
        shape = (*hidden.shape[:-1], -1, module.head_dim)
        query = rope(module.q_norm(module.q_proj(hidden).view(shape)), *seen["rope"], positions).transpose(1, 2)
        key = rope(module.k_norm(module.k_proj(hidden).view(shape)), *seen["rope"], positions).transpose(1, 2)
        padding = (positions == -1).all(dim=-1)  # (F, P)
        logits = (query @ key.transpose(-1, -2) * module.scaling).masked_fill(padding[:, None, None], float("-inf"))
        received = (logits.softmax(dim=-1) * ~padding[:, None, :, None]).sum(dim=(1, 2)) / (
            module.config.num_attention_heads * (~padding).sum(dim=-1, keepdim=True))  # (F, P)

        def pooled(values: torch.Tensor) -> torch.Tensor:  # (F, P, C) -> (F, T, C), as the tower pools its output
            output, kept = tower.pooler(hidden_states=values, pixel_position_ids=positions, padding_positions=padding,
                                        output_length=values.shape[1] // 4)
            return (output / tower.pooler.root_hidden_size)[kept].view(values.shape[0], -1, values.shape[-1])

        expected_attention = pooled(received[..., None])[..., 0]
        expected_keys = pooled(key.mean(dim=1))
    assert encoded.attention.shape == (6, TOKENS)
    # The same sums in another order: measured 9.3e-10 apart (attention, about 4e-3 each) and 6.0e-8 (keys, up to 1.1).
    torch.testing.assert_close(encoded.attention, expected_attention, atol=1e-8, rtol=0)
    torch.testing.assert_close(encoded.keys, expected_keys, atol=1e-6, rtol=0)
    # Within each frame the attention received sums to 1 over its patches (1/4 over soft tokens of 4 patches).
    torch.testing.assert_close(encoded.attention.sum(dim=1), torch.full((6,), 0.25), atol=1e-6, rtol=0)


def test_bench_counts_the_kv_cache_the_models_own_holds(gemma, clip):
    """Random weights of the tiny shape (synthetic prompts): the KV cache bench reports for the uncompressed
    prompt is what the model's own cache holds after it: no keys in the KV-shared layers, a window's worth but one
    in the sliding layers, every position in the global ones with their wider heads."""
    directory, _ = gemma
    model = load_random_model(str(directory), device=Device.cpu, dtype=DType.float32)
    options = settings(directory, max_new_tokens=3, method=Method.dytok_fastv)
    results = bench.run([options], clip, [1.0, 0.25], model=model, question="q", repeat=1, warmup=0)
    assert [r["method"] for r in results] == ["none", "dytok-fastv"]
    encoded = model.encode(Pipeline(options, model=model).read(clip))
    with torch.no_grad():
        cache = model.model(**model.build_inputs("q", encoded.all_tokens(), video=encoded), use_cache=True).cache
    keyed = [layer for layer in cache.layers if getattr(layer, "keys", None) is not None]
    assert len(keyed) == 4 and results[0]["kv_cache_bytes"] == sum(layer.keys.nbytes + layer.values.nbytes for layer in keyed)
    # Pruning shortens the global layers' keys; the sliding layers' window is still full. A position costs K and V
    # in the 2 global layers that hold keys, 2 KV heads of 32, float32.
    dropped = results[0]["visual_tokens"] - results[1]["visual_tokens"]
    assert (results[0]["kv_cache_bytes"] - results[1]["kv_cache_bytes"]) / dropped == 2 * 2 * 2 * 32 * 4


# --- thinking ------------------------------------------------------------------------------------------


def test_the_switch_adds_a_system_turn_as_the_published_template_does(gemma):
    _, adapter = gemma
    direct, thinking = adapter.chat_text(QUESTION), adapter.chat_text(QUESTION, thinking=True)
    assert direct.startswith("<bos><|turn>user\n<|video|>") and direct.endswith("<|turn>model\n")
    assert thinking == direct.replace("<bos>", "<bos><|turn>system\n<|think|>\n<turn|>\n")
    assert adapter.can_think() and not adapter.reasons_first(adapter.prompt_ids(QUESTION, thinking=True))
    token = adapter.tokenizer.convert_tokens_to_ids
    assert adapter.markers == Markers(token("<|channel>"), token("<channel|>"), (token("thought"),))


class _Writes(LogitsProcessor):
    """Makes the model write `tokens` first, then leaves it alone."""

    def __init__(self, prompt_length: int, tokens: list[int]) -> None:
        self.prompt_length, self.tokens = prompt_length, tokens

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        if step < len(self.tokens):
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.tokens[step]] = 0.0
        return scores


def test_a_reasoning_block_is_kept_apart_without_its_name(gemma, clip, monkeypatch):
    """Asked with `--think`, the model opens its block itself: what follows the block's name is the reasoning,
    what follows the block the answer, each streamed apart, the markers and the name in neither."""
    directory, adapter = gemma
    token = adapter.tokenizer.convert_tokens_to_ids
    block = [token("<|channel>"), token("thought"), token("red"), token("dog"), token("<channel|>")]
    generate = adapter.generate

    def writing(inputs, generation, logits_processor=None, streamer=None, **rest):
        processors = [_Writes(inputs["input_ids"].shape[1], block), *(logits_processor or [])]
        return generate(inputs, generation, LogitsProcessorList(processors), streamer, **rest)

    monkeypatch.setattr(adapter, "generate", writing)
    pipeline = Pipeline(settings(directory, method=Method.none, think=True, max_new_tokens=3), model=adapter)
    streamed, streamed_reasoning = [], []
    answer = pipeline.ask(clip, QUESTION, on_text=streamed.append, on_reasoning=streamed_reasoning.append)
    assert answer.token_ids[:5] == block and len(answer.token_ids) == 8
    assert answer.reasoning == "red dog" and answer.text == adapter.decode(torch.tensor(answer.token_ids[5:]))
    assert "".join(streamed_reasoning) == "red dog\n" and "".join(streamed).strip() == answer.text


# --- the 26B-A4B kind: frames that attend both ways -------------------------------------------------


def test_the_large_kind_has_what_it_is_built_for(large):
    text = large[1].model.config.text_config
    assert text.use_bidirectional_attention == "vision" and text.enable_moe_block and text.attention_k_eq_v
    assert not text.hidden_size_per_layer_input and not text.num_kv_shared_layers


@pytest.mark.parametrize("fields", [dict(method=Method.none), dict(method=Method.dytok, ratio=1.0),
                                    dict(method=Method.dytok_fastv, ratio=1.0, prune_layer=1)],
                         ids=["none", "dytok", "dytok-fastv"])
def test_the_large_kinds_uncompressed_answer_is_its_own_generate(large, clip, fields):
    """Its own processor marks the frames, whose tokens then attend both ways in its sliding layers: our walk
    through the layers (the prior, the single pass) and our prompts do the same."""
    directory, adapter = large
    pipeline = Pipeline(settings(directory, **fields), model=adapter)
    assert pipeline.ask(clip, QUESTION).token_ids == own_generate(adapter, pipeline.read(clip), QUESTION)


@pytest.mark.parametrize("method", [Method.none, Method.dytok_fastv])
def test_the_large_kinds_first_answer_token_is_its_own_forward(large, clip, method, monkeypatch):
    """With prefix reuse (the video's prefix walked by us, then the question) and the single pass at ratio 1:
    the first answer token's logits are the model's own forward's, fed in the same pieces (float32 noise:
    `LOGITS_NOISE`)."""
    directory, adapter = large
    pipeline = Pipeline(settings(directory, method=method, ratio=1.0 if method is Method.dytok_fastv else None,
                                 prune_layer=1 if method is Method.dytok_fastv else None), model=adapter)
    visual = pipeline.prepare(clip)
    for question in LATER_QUESTIONS[:2]:
        plan = pipeline.plan(visual, question)
        answer, logits = answer_with_first_logits(pipeline, plan, monkeypatch)
        inputs = same_prompt(adapter, plan)
        length = inputs["input_ids"].shape[1]
        prefix = int((inputs["input_ids"][0] == adapter.video_token_id()).nonzero().max()) + 1
        own = own_forward_in_pieces(adapter, inputs, pieces(method, True, prefix, length))
        assert (logits - own).abs().max().item() <= LOGITS_NOISE
    assert plan.reused_prefix_tokens > 0


def test_the_large_kinds_compressed_prompt_marks_its_frames(large, clip, monkeypatch):
    """A compressed two-pass prompt carries the token types that make its frames' kept tokens attend to each
    other, as the processor's would; a frame's tokens change the answer only through them."""
    directory, adapter = large
    pipeline = Pipeline(settings(directory, method=Method.dytok, ratio=0.25, max_new_tokens=1), model=adapter)
    plan = pipeline.plan(clip, QUESTION)
    inputs = same_prompt(adapter, plan)
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == adapter.video_token_id()).long() * 2)
    with torch.no_grad():
        marked = adapter.model(**inputs).logits[0, -1]
        causal = adapter.model(**{key: value for key, value in inputs.items() if key != "mm_token_type_ids"}).logits[0, -1]
    assert not torch.allclose(marked, causal, atol=1e-3)


# --- every command, end to end ------------------------------------------------------------------------


def cli_settings(directory, **overrides):
    """The settings the command lines below give (`--frames 4 --max-new-tokens 4 --dtype float32`)."""
    return settings(directory, frames=4, max_new_tokens=4, **overrides)


CLI = ["--frames", "4", "--max-new-tokens", "4", "--dtype", "float32", "--decode-timeout", "0"]


def test_ask_and_inspect_give_the_pipelines_answer_and_plan(gemma, clip, dytok_here):
    directory, adapter = gemma
    asked = dytok_here("ask", str(clip), QUESTION, "--model", str(directory), *CLI, "--json")
    inspected = dytok_here("inspect", str(clip), QUESTION, "--model", str(directory), "--frames", "4", "--dtype",
                           "float32", "--decode-timeout", "0", "--json")
    assert asked.returncode == inspected.returncode == 0, asked.stderr + inspected.stderr
    answer = Pipeline(cli_settings(directory, method=Method.dytok_fastv), model=adapter).ask(clip, QUESTION)
    record, plan = json.loads(asked.stdout), json.loads(inspected.stdout)
    assert record["answer"] == answer.text and record["method"] == "dytok-fastv"
    assert [frame["budget"] for frame in record["frames"]] == [frame["budget"] for frame in plan["frames"]] \
        == answer.plan.budgets.tolist()
    assert [frame["timestamp"] for frame in plan["frames"]] == list(answer.plan.encoded.timestamps)
    assert plan["tokens_per_frame"] == TOKENS and plan["visual_tokens"] == {"full": 4 * TOKENS, "kept": 63}


def test_chat_answers_each_turn_after_the_earlier_ones(gemma, clip, capfd, monkeypatch):
    directory, adapter = gemma
    monkeypatch.setattr("sys.stdin", io.StringIO("what happens?\nand then?\n"))
    monkeypatch.setenv("NO_COLOR", "1")
    capfd.readouterr()
    assert cli.main(["chat", str(clip), "--model", str(directory), *CLI, "--jsonl"]) == 0
    first, second = (json.loads(line) for line in capfd.readouterr().out.splitlines())
    expected = Pipeline(cli_settings(directory, method=Method.dytok_fastv, prefix_cache=False), model=adapter).ask(
        clip, Question("and then?", history=(("what happens?", first["answer"]),)))
    assert second["answer"] == expected.text and second["turn"] == 2


def test_eval_and_serve_run_it(gemma, clip, tmp_path, dytok_here, monkeypatch):
    """`eval` (an item under two methods) and `serve` (a request answered as the pipeline answers it) over the
    tiny Gemma 4; `summarize` runs it in tests/test_summarize.py, the Ray engine in tests/ray_cases.py."""
    directory, adapter = gemma
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no plot: it has a test of its own
    item = {"id": "q1", "video": clip.name, "question": QUESTION, "options": ["a dog", "a cat", "a ball", "a car"],
            "answer": "B", "category": "objects", "duration": "short"}
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps(item) + "\n")
    run = dytok_here("eval", str(data), "--output", str(tmp_path / "run"), "--video-dir", str(clip.parent),
                     "--model", str(directory), *CLI, "--method", "none", "--method", "dytok-fastv", "--ratios", "0.5")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(record["method"] for record in records) == ["dytok-fastv", "none"]
    assert all(record["error"] is None for record in records)

    serve = pytest.importorskip("test_serve")
    service = serve.Service(cli_settings(directory, method=Method.dytok_fastv), serve.Limits(queue=1, keep_videos=1))
    with serve.serving(service, clip.parent) as (url, _, _):
        with serve.httpx.Client(base_url=url, headers={"Authorization": f"Bearer {serve.KEY}"}, timeout=120) as http:
            body = http.post("/v1/chat/completions", json=serve.request(f"file:{clip.name}", QUESTION, max_tokens=4))
    assert body.status_code == 200, body.text
    expected = Pipeline(cli_settings(directory, method=Method.dytok_fastv), model=service.model).ask(clip, QUESTION)
    assert body.json()["choices"][0]["message"]["content"] == expected.text


# --- audio: the E2B/E4B kind hears the video's audio track itself ----------------------------------------------


@pytest.fixture(scope="module")
def hearing(build_family, load_family):
    """(model directory, loaded adapter) of the tiny Gemma 4 of the E2B/E4B kind with an audio tower."""
    return build_family("gemma4", audio=True), load_family("gemma4", audio=True)


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory):
    """A 35-second clip whose audio track is two items for the model (30 s and 5 s), at 1 frame a second."""
    return write_clip_with_audio(tmp_path_factory.mktemp("talking") / "talk.mp4", speech_like(35.0), n_frames=35, fps=1)


def own_generate_hearing(adapter, frames: Frames, samples, question: str, max_new_tokens: int = 6) -> list[int]:
    """The model's own processor + generate on the same frames and audio, the audio cut into the 30-second items
    its feature extractor takes, before the video."""
    items = [samples[start : start + 30 * 16000] for start in range(0, samples.size, 30 * 16000)]
    content = [*[{"type": "audio"}] * len(items), {"type": "video"}, {"type": "text", "text": question}]
    prompt = adapter.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    metadata = {"total_num_frames": frames.total_frames, "fps": frames.video_fps, "frames_indices": list(frames.indices),
                "duration": frames.duration_s}
    inputs = adapter.processor(text=prompt, videos=[frames.images], audio=items, video_metadata=[metadata],
                               do_sample_frames=False, return_tensors="pt")
    output = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("fields", [dict(method=Method.dytok, ratio=1.0), dict(method=Method.dytok_fastv, ratio=1.0,
                                    prune_layer=1)], ids=["dytok", "dytok-fastv"])
def test_the_heard_answer_is_its_own_generate_on_the_same_audio(hearing, talking_clip, fields):
    """The audio's tokens in our prompt (written into its embeddings, `generate` going on from the cache our walk
    prefilled, whole or after the single pass) give the answer the model's own processor and generate give, for
    and the audio changes that answer. (--method none, whose prefix every question shares, is
    `test_speech_gives_...`.)"""
    directory, adapter = hearing
    pipeline = Pipeline(settings(directory, frames=4, max_new_tokens=6, **fields), model=adapter)
    visual = pipeline.prepare(talking_clip)
    samples = read_audio(talking_clip)
    audio = adapter.encode_audio(samples)
    assert [item.shape[0] for item in audio] == [750, 125]  # 40 ms a token
    visual.encoded = visual.prior_encoded = dataclasses.replace(visual.encoded, audio=audio)
    frames = pipeline.read(talking_clip)
    answer = pipeline.ask(visual, QUESTION)
    assert answer.token_ids == own_generate_hearing(adapter, frames, samples, QUESTION)
    if fields["method"] is Method.dytok:
        assert answer.token_ids != own_generate_hearing(adapter, frames, speech_like(35.0, seed=1), QUESTION)


def test_speech_gives_a_hearing_model_the_audio_and_others_a_transcript(hearing, gemma, talking_clip, tiny_whisper_dir):
    """--speech: the model with an audio tower hears the track (the answer its own generate gives with that
    audio, the record saying so and counting the audio's prompt tokens); one without gets Whisper's lines."""
    directory, adapter = hearing
    pipeline = Pipeline(settings(directory, frames=4, max_new_tokens=6, method=Method.none, speech=True,
                                 speech_model=str(tiny_whisper_dir)), model=adapter)
    answer = pipeline.ask(talking_clip, QUESTION)
    samples = read_audio(talking_clip)
    assert answer.token_ids == own_generate_hearing(adapter, pipeline.read(talking_clip), samples, QUESTION)
    said = subtitles_record(answer.plan)
    assert (said["source"], said["speech"], said["tokens"], said["lines"]) == (HEARD, "native-audio", 750 + 125 + 4, [])
    assert "transcriber" not in pipeline.__dict__  # no Whisper loaded
    directory, adapter = gemma
    pipeline = Pipeline(settings(directory, frames=4, max_new_tokens=1, method=Method.none, speech=True,
                                 speech_model=str(tiny_whisper_dir)), model=adapter)
    plan = pipeline.plan(talking_clip, QUESTION)
    assert plan.encoded.audio == () and subtitles_record(plan)["speech"] == "whisper"


def test_a_hearing_model_given_no_audio_track_answers_from_the_frames_as_whisper_would(hearing, clip):
    """A video without an audio track: --speech says so and the prompt is the one without --speech."""
    directory, adapter = hearing
    plans = [Pipeline(settings(directory, frames=4, method=Method.none, speech=speech), model=adapter).plan(clip, QUESTION)
             for speech in (True, False)]
    assert plans[0].transcript.note == "no audio track; answering from the frames alone"
    assert plans[0].encoded.audio == () and subtitles_record(plans[0])["speech"] is None
    assert torch.equal(same_prompt(adapter, plans[0])["input_ids"], same_prompt(adapter, plans[1])["input_ids"])
