"""What only a GPU would show, proven on the CPU: CUDA's queries are stood in for, and its asynchrony is
modelled where timing depends on it."""

from __future__ import annotations

import pytest
import torch

from dytok_cli import gpu
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.pipeline import Pipeline
from dytok_cli.prefill import prior_pass, single_pass

QUESTION = "what happens in the video?"


def test_only_a_cuda_device_is_waited_for(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", waited.append)
    gpu.clock()
    gpu.clock(torch.device("cpu"))
    assert waited == []
    gpu.clock(torch.device("cuda", 1))
    assert waited == [torch.device("cuda", 1)]


class QueuedWork:
    """A GPU's asynchrony on the CPU: a stage's calls return at once and leave `seconds` of work queued;
    `gpu.synchronize` waits it out, so the clock (`gpu.perf_counter`) moves only there. A stage boundary
    that reads the clock without waiting first charges the queued work to a later stage."""

    def __init__(self, monkeypatch) -> None:
        self.now = 0.0
        self.queued = 0.0
        self.waits = 0
        monkeypatch.setattr(gpu, "perf_counter", lambda: self.now)
        monkeypatch.setattr(gpu, "synchronize", self.synchronize)

    def synchronize(self, device) -> None:
        self.waits += 1
        if device is not None:  # the host's own work is done when its call returns
            self.now += self.queued
            self.queued = 0.0

    def queue(self, owner, name: str, seconds, monkeypatch) -> None:
        """`owner.name` leaves `seconds` (or `seconds(call number)`) of work queued each call."""
        real = getattr(owner, name)
        calls = [0]

        def launched(*args, **kwargs):
            result = real(*args, **kwargs)
            calls[0] += 1
            self.queued += seconds(calls[0]) if callable(seconds) else seconds
            return result

        monkeypatch.setattr(owner, name, launched)


@pytest.mark.parametrize("method", [Method.none, Method.dytok, Method.dytok_fastv])
def test_every_stage_is_charged_its_own_device_time(tiny_llava, tiny_llava_dir, clip, method, monkeypatch):
    """Vision 1000 s, the prior pass 10 s, the single pass up to its prune layer 50 s, the prompt's forward
    100 s and 1 s per later token: each stage's time is exactly its own work, however late it finished."""
    new_tokens = 5
    settings = Settings(model=str(tiny_llava_dir), method=method, frames=4, device=Device.cpu, dtype=DType.float32,
                        max_new_tokens=new_tokens, decode_timeout=None, prefix_cache=False,
                        ratio=0.5 if method.traits.compresses else None)
    pipeline = Pipeline(settings, model=tiny_llava)
    work = QueuedWork(monkeypatch)
    work.queue(tiny_llava, "encode", 1000.0, monkeypatch)
    work.queue(prior_pass, "keyframe_prior", 10.0, monkeypatch)
    work.queue(single_pass, "run_to_prune_layer", 50.0, monkeypatch)
    work.queue(tiny_llava.model, "forward", lambda call: 100.0 if call == 1 else 1.0, monkeypatch)
    answer = pipeline.ask(clip, QUESTION, force_length=True)
    timings = answer.timings
    assert len(answer.token_ids) == new_tokens
    assert timings["decode_s"] == 0.0  # decoding is the host's; no device time lands on it
    assert timings["vision_s"] == 1000.0
    assert timings["prior_s"] == (10.0 if method is Method.dytok else 0.0)
    assert timings["prefill_s"] == (50.0 if method is Method.dytok_fastv else 0.0) + 100.0
    assert timings["generate_s"] - timings["prefill_s"] == new_tokens - 1
    assert work.queued == 0.0 and work.waits > 0
