"""The public library API, used as the README shows: import from the package root, load once, ask twice."""

from __future__ import annotations

import pytest
import torch

import dytok_cli
from dytok_cli import Method, Pipeline, Settings


def test_the_readme_example(tiny_llava_dir, clip):
    pipeline = Pipeline(Settings(model=str(tiny_llava_dir), method="dytok", ratio=0.25, frames=6, device="cpu",
                                 dtype="float32", max_new_tokens=4, decode_timeout=None))
    video = pipeline.prepare(clip)
    answers = [pipeline.ask(video, question) for question in ("what happens?", "is there a dog?")]
    assert all(isinstance(answer, dytok_cli.Answer) for answer in answers)
    for answer in answers:
        assert answer.plan.budgets.sum() == answer.plan.kept_tokens == round(0.25 * 6 * 16)
        assert len(answer.token_ids) <= 4
    assert answers[1].timings["vision_s"] == 0.0  # the second question reused the video's vision pass
    assert not torch.equal(answers[0].plan.weights, answers[1].plan.weights)  # the prior depends on the question


def test_one_shot_ask(tiny_llava_dir, clip):
    answer = dytok_cli.ask(clip, "what happens?", model=str(tiny_llava_dir), frames=4, device="cpu", dtype="float32",
                           max_new_tokens=2, decode_timeout=None)
    assert answer.plan.kept_tokens == round(0.25 * 4 * 16)


def test_settings_take_choices_as_strings():
    settings = Settings(method="dytok-fastv", backend="pyav", device="cpu", dtype="bfloat16")
    assert (settings.method, settings.backend.value, settings.device.value, settings.dtype.value) == (
        Method.dytok_fastv, "pyav", "cpu", "bfloat16")
    assert Settings(method=Method.none).method is Method.none


@pytest.mark.parametrize("field, value, fragment", [
    ("method", "bogus", "--method must be one of 'dytok', 'visionzip', 'dytok-fastv', 'none', not 'bogus'"),
    ("device", "tpu", "--device must be one of"),
    ("dtype", "float8", "--dtype must be one of"),
    ("backend", "ffmpeg", "--backend must be one of"),
])
def test_settings_refuse_unknown_choices_at_construction(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        Settings(**{field: value})


def test_a_prior_model_needs_a_method_with_a_prior_pass():
    with pytest.raises(ValueError, match="--prior-model only applies to --method dytok"):
        Settings(method="dytok-fastv", prior_model="assistant")
