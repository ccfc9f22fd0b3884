"""Reasoning before the answer (`models/thinking.py`), on tiny models whose own chat templates behave as the
published kinds do: Qwen3.5 0.8B/2B ("direct": an empty reasoning block unless `enable_thinking` is true),
Qwen3.5 4B and larger ("reasons": an open one unless it is false), Qwen3-VL -Thinking ("always": always an
open one), and Qwen3-VL -Instruct (no reasoning). The oracles are the model's own processor and `generate`."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from test_contract import own_inputs
from tiny_models import EMPTY_BLOCK, OPEN_BLOCK

from dytok_cli.apps import eval as evaluation
from dytok_cli.apps.eval import Item
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.models.thinking import AnswerLength, Markers, ReasoningBudget, ReasoningProgress
from dytok_cli.pipeline import Pipeline
from dytok_cli.record import answer_record

QUESTION = "what happens in the video?"
ANSWER_TOKENS, REASONING_TOKENS = 4, 5
# Each kind: the family it is built on, and the builder's options (`thinking`: its template's kind).
# Four decoder layers keep Qwen3.5's pattern (three linear-attention layers, then full attention) at half the cost.
KINDS = {"direct": ("qwen3_5", {"thinking": "direct", "text_layers": 4}),
         "reasons": ("qwen3_5", {"thinking": "reasons", "text_layers": 4}),
         "always": ("qwen3_vl", {"thinking": "always"}), "instruct": ("qwen3_vl", {})}


@pytest.fixture(scope="module")
def kind(build_family, load_family):
    """kind(name) -> (model directory, loaded adapter) of a tiny model of that template kind."""

    def get(name: str):
        family, options = KINDS[name]
        return build_family(family, **options), load_family(family, **options)

    return get


def settings(model_dir, **overrides) -> Settings:
    options = dict(model=str(model_dir), frames=4, device=Device.cpu, dtype=DType.float32, decode_timeout=None,
                   method=Method.none, max_new_tokens=ANSWER_TOKENS, max_reasoning_tokens=REASONING_TOKENS)
    return Settings(**{**options, **overrides})


def generated(adapter, inputs, max_new_tokens: int) -> list[int]:
    output = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def followed_by(inputs, tokens: list[int]):
    """The processor's `inputs` with `tokens` after the prompt, as though the prompt had ended with them."""
    extra = torch.tensor([tokens])
    # Every per-token input grows with them: the mask by ones, the token types (0: text) by zeros.
    grown = {"input_ids": extra, "attention_mask": torch.ones_like(extra), "mm_token_type_ids": torch.zeros_like(extra)}
    grown = {key: torch.cat([inputs[key], tail.to(inputs[key])], dim=1) for key, tail in grown.items() if key in inputs}
    return {**inputs, **grown}


# --- prompts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, switch, default_end, direct_end", [
    ("direct", True, EMPTY_BLOCK, EMPTY_BLOCK),
    ("reasons", True, OPEN_BLOCK, EMPTY_BLOCK),
    ("always", False, OPEN_BLOCK, OPEN_BLOCK),
    ("instruct", False, "assistant\n", "assistant\n"),
])
def test_prompt_ends_as_the_published_template_would(kind, name, switch, default_end, direct_end):
    _, adapter = kind(name)
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    # The template's own behaviour, as published: what a caller that passes nothing gets.
    published = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert published.endswith(default_end)
    assert adapter.thinking_switch is switch  # read from the template, not from a name
    direct = adapter.chat_text(QUESTION)
    assert direct.endswith(direct_end)  # the default: answer directly where the template can
    thinking = adapter.chat_text(QUESTION, thinking=True)
    assert thinking.endswith(OPEN_BLOCK if name != "instruct" else "assistant\n")
    assert adapter.can_think() is (name != "instruct")
    # They part only where the answer begins, after the video and the question: prefix reuse holds.
    assert f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n" in os.path.commonprefix([direct, thinking])


# --- splitting token ids ----------------------------------------------------------------------------------


MARKERS = Markers(open=1, close=2)
LABELLED = Markers(open=1, close=2, label=(3, 4))  # as Gemma 4's: "<|channel>", "<channel|>", "thought\n"


@pytest.mark.parametrize("generated_ids, reasoning_first, reasoning, answer, closed", [
    ([5, 6, 2, 7, 8], True, [5, 6], [7, 8], True),  # the prompt opened the block; the model closed it
    ([5, 6, 7], True, [5, 6, 7], [], False),  # cut off before `</think>`: no answer yet
    ([], True, [], [], False),
    ([1, 5, 2, 7], False, [5], [7], True),  # the model opened the block itself
    ([1, 5, 6], False, [5, 6], [], False),  # ... and was cut off
    ([7, 8], False, None, [7, 8], True),  # no reasoning
    ([7, 1, 5, 2], False, None, [7, 1, 5, 2], True),  # markers after the answer began are the answer's text
    ([2, 7], True, [], [7], True),  # an empty reasoning block
])
def test_an_answer_that_opens_with_reasoning_is_split(generated_ids, reasoning_first, reasoning, answer, closed):
    split = MARKERS.split(generated_ids, reasoning_first)
    assert (split.reasoning, split.answer, split.closed) == (reasoning, answer, closed)


@pytest.mark.parametrize("generated_ids, reasoning, answer, closed", [
    ([1, 3, 4, 5, 6, 2, 7], [5, 6], [7], True),  # the block's name is neither reasoning nor answer
    ([1, 3, 4, 2, 7], [], [7], True),
    ([1, 3, 5, 2, 7], [3, 5], [7], True),  # a block that does not begin with its whole name keeps all it holds
    ([1, 3, 4, 5], [5], [], False),  # cut off
    ([1, 3], [3], [], False),  # cut off inside the name
])
def test_a_named_block_is_split_without_its_name(generated_ids, reasoning, answer, closed):
    split = LABELLED.split(generated_ids, False)
    assert (split.reasoning, split.answer, split.closed) == (reasoning, answer, closed)


def generation_steps(prompt: list[int], generated: list[int], reasoning_first: bool, budget: int, length: int,
                     markers: Markers = MARKERS):
    """What `generate` hands the reasoning budget (before each token) and the answer's length (after it),
    one token at a time; yields (ids so far, the budget's forcing, whether to stop), as `Markers.split` of
    the ids so far would decide them too."""
    progress = ReasoningProgress(markers, len(prompt), reasoning_first)
    limit, stop = ReasoningBudget(progress, budget), AnswerLength(progress, length)
    for count in range(len(generated)):
        ids = torch.tensor([prompt + generated[:count]])
        forced = bool(limit(ids, torch.zeros(1, 10))[0, 0].isinf())
        stopped = bool(stop(torch.tensor([prompt + generated[: count + 1]]), None)[0])
        yield generated[: count + 1], forced, stopped


@examples(max_examples=300, deadline=None)
@given(generated=st.lists(st.sampled_from([1, 2, 3, 4, 5, 6, 7]), max_size=12), reasoning_first=st.booleans(),
       budget=st.integers(0, 4), length=st.integers(1, 4), markers=st.sampled_from([MARKERS, LABELLED]))
def test_the_reasoning_budget_and_answer_length_decide_as_the_split_does(generated, reasoning_first, budget, length,
                                                                          markers):
    for ids, forced, stopped in generation_steps([9, 8], generated, reasoning_first, budget, length, markers):
        before = markers.split(ids[:-1], reasoning_first)
        assert forced == (before.reasoning is not None and not before.closed and len(before.reasoning) >= budget)
        after = markers.split(ids, reasoning_first)
        assert stopped == (after.closed and len(after.answer) >= length)


@pytest.mark.parametrize("generated, reasoning_first, at_most", [
    ([7] * 200, False, 1),  # no reasoning: the first token says so, and nothing more is read
    ([1, *[5] * 100, 2, *[7] * 100], False, 102),  # one token a step while reasoning, then nothing
    ([*[5] * 50, 2, *[7] * 150], True, 51),
])
def test_generated_ids_are_read_once_and_not_after_the_answer_began(generated, reasoning_first, at_most, monkeypatch):
    """Each step copies to the host only what is new since the last look: on a GPU every copy waits for
    the device, and copying the whole answer every step grows with its length."""
    copied = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda tensor: copied.append(tensor.numel()) or tolist(tensor))
    steps = list(generation_steps([9, 3], generated, reasoning_first, budget=1000, length=1000))
    assert len(steps) == len(generated) and sum(copied) == at_most


def test_a_prompt_opens_reasoning_when_its_last_open_marker_is_not_closed():
    assert MARKERS.opens([9, 1, 3])
    assert not MARKERS.opens([9, 1, 3, 3, 2, 3])
    assert MARKERS.opens([1, 2, 9, 1])  # an earlier turn's closed block, then an open one
    assert not MARKERS.opens([9, 3])


# --- answers ------------------------------------------------------------------------------------------------


def test_without_think_the_answer_is_the_models_own_generate_with_thinking_off(kind, clip):
    model_dir, adapter = kind("reasons")  # whose template reasons unless told not to
    pipeline = Pipeline(settings(model_dir), model=adapter)
    answer = pipeline.ask(clip, QUESTION)
    inputs = own_inputs(adapter, pipeline.read(clip), QUESTION, enable_thinking=False)
    expected = generated(adapter, inputs, ANSWER_TOKENS)
    assert answer.token_ids == expected
    assert answer.reasoning is None and answer.text == adapter.decode(torch.tensor(expected))


@pytest.mark.parametrize("name, think", [("always", False), ("direct", True)])
def test_reasoning_is_kept_apart_from_the_answer(kind, clip, name, think):
    """The reasoning runs to its allowance, is closed there, and the answer follows: as the model's own
    generate gives it from the same prompt, which the template's switch opens (or always opens)."""
    model_dir, adapter = kind(name)
    pipeline = Pipeline(settings(model_dir, think=think), model=adapter)
    streamed, streamed_reasoning = [], []
    answer = pipeline.ask(clip, QUESTION, on_text=streamed.append, on_reasoning=streamed_reasoning.append)

    switch = {"enable_thinking": think} if adapter.thinking_switch else {}
    inputs = own_inputs(adapter, pipeline.read(clip), QUESTION, **switch)
    reasoning = generated(adapter, inputs, REASONING_TOKENS)
    close = adapter.markers.close
    assert close not in reasoning  # the tiny model does not end its reasoning by itself: the allowance does
    rest = generated(adapter, followed_by(inputs, [*reasoning, close]), ANSWER_TOKENS)
    assert answer.token_ids == [*reasoning, close, *rest]
    assert answer.text == adapter.decode(torch.tensor(rest)) and answer.reasoning == adapter.decode(torch.tensor(reasoning))
    assert answer.reasoning and answer.reasoning not in answer.text
    # Streamed: the answer's text alone to the answer, the reasoning's (and a line end) apart.
    assert "".join(streamed).strip() == answer.text
    assert "".join(streamed_reasoning).strip() == answer.reasoning and streamed_reasoning[-1] == "\n"
    record = answer_record(answer, pipeline.settings, pipeline.prior_name)
    assert (record["answer"], record["reasoning"]) == (answer.text, answer.reasoning)


@pytest.mark.parametrize("name, think", [("always", False), ("direct", True)])
def test_a_capped_text_reply_caps_the_answer_after_the_reasoning(kind, name, think):
    """A text reply capped below --max-new-tokens (a chapter title's, `Pipeline.complete`): the reasoning
    still runs to its own allowance and is closed, and the answer after it stops at the cap."""
    model_dir, adapter = kind(name)
    pipeline = Pipeline(settings(model_dir, think=think), model=adapter)
    prompt = "name this part of a video in a few words"
    prompt_ids = adapter.text_prompt_ids(prompt, think)
    inputs = {"input_ids": prompt_ids, "attention_mask": torch.ones_like(prompt_ids)}
    reasoning = generated(adapter, inputs, REASONING_TOKENS)
    close = adapter.markers.close
    assert close not in reasoning
    cap = ANSWER_TOKENS - 2
    rest = generated(adapter, followed_by(inputs, [*reasoning, close]), ANSWER_TOKENS)
    text, _ = pipeline.complete(prompt, max_new_tokens=cap)
    assert text == adapter.decode(torch.tensor(rest[:cap])) != adapter.decode(torch.tensor(rest))


def test_reasoning_cut_off_by_the_end_of_sequence_leaves_no_answer(kind, clip, monkeypatch):
    model_dir, adapter = kind("always")
    pipeline = Pipeline(settings(model_dir), model=adapter)
    reasoning = generated(adapter, own_inputs(adapter, pipeline.read(clip), QUESTION), REASONING_TOKENS)
    stop = reasoning.index(reasoning[2])  # the model's own third token ends the sequence
    monkeypatch.setattr(adapter.model.generation_config, "eos_token_id", reasoning[2])
    streamed, streamed_reasoning = [], []
    answer = pipeline.ask(clip, QUESTION, on_text=streamed.append, on_reasoning=streamed_reasoning.append)
    assert answer.token_ids == reasoning[: stop + 1]
    assert answer.text == "" and answer.reasoning == adapter.decode(torch.tensor(reasoning[: stop + 1]))
    assert "".join(streamed) == "" and "".join(streamed_reasoning).strip() == answer.reasoning


def test_a_video_prefix_is_reused_under_think(kind, clip):
    model_dir, adapter = kind("reasons")
    questions = [QUESTION, "is there a dog?"]
    reusing = Pipeline(settings(model_dir, think=True), model=adapter)
    visual = reusing.prepare(clip)
    answers = [reusing.ask(visual, question) for question in questions]
    assert answers[1].plan.reused_prefix_tokens > 0
    fresh = Pipeline(settings(model_dir, think=True, prefix_cache=False), model=adapter)
    assert answers[1].token_ids == fresh.ask(clip, questions[1]).token_ids
    assert answers[1].reasoning is not None


# --- the command line and eval ------------------------------------------------------------------------------


def test_think_json_record_and_reasoning_on_stderr(dytok_here, kind, clip):
    model_dir, _ = kind("reasons")
    common = (str(clip), QUESTION, "--model", str(model_dir), "--frames", "4", "--decode-timeout", "0", "--max-new-tokens", "4",
              "--max-reasoning-tokens", "6", "--json")
    thinking = dytok_here("ask", *common, "--think", "--show-reasoning")
    assert thinking.returncode == 0, thinking.stderr
    record = json.loads(thinking.stdout)
    assert record["reasoning"] and record["reasoning"] not in record["answer"]
    assert record["reasoning"] in thinking.stderr and record["answer"] not in thinking.stderr
    direct = dytok_here("ask", *common)
    assert direct.returncode == 0 and json.loads(direct.stdout)["reasoning"] is None


def test_think_on_a_model_without_a_thinking_mode_is_refused(dytok_here, kind, clip):
    model_dir, _ = kind("instruct")
    result = dytok_here("ask", str(clip), QUESTION, "--model", str(model_dir), "--frames", "4", "--decode-timeout", "0", "--think")
    assert result.returncode == 2
    assert result.stderr == f"dytok: error: --think: {model_dir} has no chat template with a thinking mode\n"


@pytest.mark.parametrize("flags, message", [
    (("--max-reasoning-tokens", "0"), "--max-reasoning-tokens must be at least 1, not 0"),
    (("--show-reasoning", "--engine", "ray"), "--show-reasoning shows what this process generates: only with --engine local"),
])
def test_bad_reasoning_flags_are_usage_errors(dytok_here, tiny_llava_dir, clip, flags, message):
    result = dytok_here("ask", str(clip), QUESTION, "--model", str(tiny_llava_dir), *flags)
    assert result.returncode == 2 and result.stderr == f"dytok: error: {message}\n"


def test_a_terminal_sees_the_answer_stream_without_the_reasoning(dytok_here, kind, clip, monkeypatch):
    model_dir, _ = kind("always")
    args = ["ask", str(clip), QUESTION, "--model", str(model_dir), "--frames", "4", "--decode-timeout", "0", "--max-new-tokens", "4",
            "--max-reasoning-tokens", "6"]
    record = json.loads(dytok_here(*args, "--json").stdout)
    monkeypatch.setattr("dytok_cli.render.stdout_is_terminal", lambda: True)  # what `ask` streams to
    streamed = dytok_here(*args)
    assert streamed.returncode == 0 and streamed.stdout == record["answer"] + "\n"
    assert record["reasoning"] and record["reasoning"] not in streamed.stdout + streamed.stderr


def test_eval_scores_the_answer_not_the_reasoning(kind, clip, tmp_path):
    model_dir, adapter = kind("always")
    item = Item("q1", str(clip), QUESTION, ("a dog runs", "a cat sits"), "A", None, None)
    run_settings = settings(model_dir, method=Method.none, max_new_tokens=3)
    data = tmp_path / "items.jsonl"
    data.write_text("")
    run_dir = evaluation.RunDirectory(tmp_path / "run", evaluation.manifest(data, [run_settings], None), force=False)
    cases = evaluation.grid([Method.none], [])
    evaluation.run(evaluation.pending([item], cases, run_dir.records), cases, [run_settings], run_dir, model=adapter)
    [prediction] = run_dir.records
    answer = Pipeline(run_settings, model=adapter).ask(clip, evaluation.prompt(item))
    assert (prediction["response"], prediction["reasoning"]) == (answer.text, answer.reasoning)
    assert answer.reasoning and prediction["prediction"] == evaluation.extract_letter(answer.text, item.options)
    assert run_dir.manifest["settings"]["think"] is False
    assert run_dir.manifest["settings"]["max_reasoning_tokens"] == REASONING_TOKENS
