"""The Gated DeltaNet convolution in float32 on a CPU (`models/linear_attention.py`, issue 24): the same
answers and logits as `transformers`' reference, hooked into one model only, and removable."""

from __future__ import annotations

import copy
from types import MethodType

import pytest
import torch
import torch.nn.functional as F

from dytok_cli.config import Device, DType, Settings
from dytok_cli.models import linear_attention
from dytok_cli.pipeline import Pipeline

NAMES = ("causal_conv1d_fn", "causal_conv1d_update")
# float32: the reference's own arithmetic, measured 0 apart on the tiny model and the qwen3.5-0.8b shape
# (docs/performance.md): the same operations on the same tensors.
FLOAT32_LOGITS = 0.0


def wrappers(model):
    found = [layer.linear_attn.__dict__.get("_kernel_funcs", {}).get(name) for layer in model.language_model().layers
             if hasattr(layer, "linear_attn") for name in NAMES]
    return [wrapper for wrapper in found if wrapper is not None]


def hooked(load_family, family_name="qwen3_5"):
    model = load_family(family_name)
    if not wrappers(model):
        # `transformers` gives each layer its kernel wrappers only with a `kernels` it supports; without
        # them the reference runs, which test_without_wrappers_nothing_changes covers.
        pytest.skip("no per-layer kernel wrappers: `kernels` missing or not one this `transformers` supports")
    return model


def test_without_wrappers_nothing_changes(load_family):
    model = load_family("qwen3_5")
    if wrappers(model):
        pytest.skip("this environment has the wrappers")
    assert linear_attention.install(model.model) == linear_attention.remove(model.model) == 0


def generate(model, ids, new_tokens=8):
    with torch.inference_mode():
        return model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                    do_sample=False, output_logits=True, return_dict_in_generate=True)


def test_installed_at_load_and_removable(load_family):
    model = hooked(load_family)
    found = wrappers(model)
    assert found and all("forward" in wrapper.__dict__ for wrapper in found)
    try:
        assert linear_attention.remove(model.model) == len(found)
        assert all("forward" not in wrapper.__dict__ for wrapper in found)  # the class's own forward again
        assert linear_attention.remove(model.model) == 0
    finally:
        assert linear_attention.install(model.model) == len(found)
    assert linear_attention.install(model.model) == len(found)  # idempotent


@pytest.mark.parametrize("family_name", ["qwen3_5", "qwen3_5_moe"])
def test_same_tokens_and_logits_as_the_reference(load_family, family_name):
    model = hooked(load_family, family_name)
    ids = torch.randint(0, 200, (1, 70), generator=torch.Generator().manual_seed(0))  # > one 64-token chunk
    try:
        linear_attention.remove(model.model)
        reference = generate(model, ids)
    finally:
        linear_attention.install(model.model)
    ours = generate(model, ids)
    assert torch.equal(ours.sequences, reference.sequences)
    # The first logits come from the prompt's convolution, the later ones from the one-token updates.
    for step, (a, b) in enumerate(zip(ours.logits, reference.logits)):
        assert float((a - b).abs().max()) <= FLOAT32_LOGITS, step


def test_pipeline_answer_unchanged(build_family, load_family, clip):
    model = hooked(load_family)
    settings = Settings(model=str(build_family("qwen3_5")), frames=4, device=Device.cpu, dtype=DType.float32, max_new_tokens=6,
                        decode_timeout=None)
    pipeline = Pipeline(settings, model=model)
    ours = pipeline.ask(clip, "what happens?", force_length=True).token_ids
    try:
        linear_attention.remove(model.model)
        reference = pipeline.ask(clip, "what happens?", force_length=True).token_ids
    finally:
        linear_attention.install(model.model)
    assert ours == reference


def test_bfloat16_is_no_further_from_exact_than_the_reference():
    torch.manual_seed(0)
    x, w = torch.randn(1, 48, 30).bfloat16(), torch.randn(48, 4).bfloat16()
    exact = F.silu(F.conv1d(x.double(), w.double().unsqueeze(1), padding=3, groups=48)[:, :, :30])
    reference = F.silu(F.conv1d(x, w.unsqueeze(1), padding=3, groups=48)[:, :, :30])
    ours = linear_attention.causal_conv1d_fn(x, w, None, activation="silu")
    assert ours.dtype == torch.bfloat16
    assert float((ours.double() - exact).abs().max()) <= float((reference.double() - exact).abs().max())
    state, token = torch.randn(1, 48, 4).bfloat16(), torch.randn(1, 48, 1).bfloat16()
    state_reference = state.clone()
    step = linear_attention.causal_conv1d_update(token, state, w, None, "silu")
    joined = torch.cat([state_reference, token], dim=-1)
    assert torch.equal(state, joined[:, :, -4:])  # the state moved on by one token, in place
    exact_step = F.silu((joined[:, :, 1:].double() * w.double()).sum(-1, keepdim=True))
    assert torch.allclose(step.double(), exact_step, rtol=2**-8, atol=1e-3)  # one bfloat16 rounding


def test_leaves_other_forwards_and_models_alone(load_family):
    model = hooked(load_family)
    copied = copy.deepcopy(model.model)
    first = wrappers(model)[0]
    copied_first = next(module._kernel_funcs["causal_conv1d_fn"] for module in copied.modules()
                        if isinstance(module.__dict__.get("_kernel_funcs"), dict))
    # A deep copy's forwards are bound to its own wrappers; removing them leaves the original hooked.
    assert copied_first.forward.__self__ is copied_first
    assert linear_attention.install(copied) == len(wrappers(model))
    linear_attention.remove(copied)
    assert "forward" in first.__dict__

    def kernel(self, *args, **kwargs):  # what `kernels.kernelize` would have set
        raise AssertionError

    try:
        linear_attention.remove(model.model)
        first.forward = hub_kernel = MethodType(kernel, first)
        linear_attention.install(model.model)
        assert first.forward is hub_kernel
        linear_attention.remove(model.model)
        assert first.forward is hub_kernel
    finally:
        del first.forward
        linear_attention.install(model.model)
