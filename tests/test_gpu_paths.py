"""What only a GPU would show, proven on the CPU: CUDA's queries are stood in for, and its asynchrony is
modelled where timing depends on it."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from dytok_cli import batch, gpu
from dytok_cli.apps import bench, ray_engine
from dytok_cli.apps.ray_engine import RayOptions
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.errors import DytokError
from dytok_cli import models
from dytok_cli.models import resolve_dtype
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


def test_the_gpu_peak_is_the_allocators_high_water_mark_since_the_block_began(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: calls.append(("peak", device)) or 7 << 30)
    with bench.peak_gpu_memory(torch.device("cpu")) as peak:
        pass
    assert peak() is None and calls == []
    cuda = torch.device("cuda", 0)
    with bench.peak_gpu_memory(cuda) as peak:
        assert calls == [("reset", cuda)]
    assert peak() == 7 << 30 and calls[-1] == ("peak", cuda)


def test_bench_reports_each_cases_own_gpu_peak(tiny_llava, tiny_llava_dir, clip, monkeypatch):
    """Reset before every timed run of a case, its largest peak reported; null on the CPU."""
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32, max_new_tokens=2,
                        decode_timeout=None)
    results = bench.run([settings], clip, [1.0, 0.5], model=tiny_llava, question="q", repeat=1, warmup=0)
    assert [result["peak_gpu_bytes"] for result in results] == [None, None]
    blocks = []

    @contextmanager
    def peaks(device):
        blocks.append(device)
        yield lambda: 100 * len(blocks)

    monkeypatch.setattr(bench, "peak_gpu_memory", peaks)
    results = bench.run([settings], clip, [1.0, 0.5], model=tiny_llava, question="q", repeat=2, warmup=1)
    # Timed runs alternate between the cases: ratio 1's are blocks 1 and 3, ratio 0.5's 2 and 4.
    assert blocks == [tiny_llava.device] * 4
    assert [result["peak_gpu_bytes"] for result in results] == [300, 400]


@pytest.mark.parametrize("device, named", [(Device.cpu, "cpu"), (Device.cuda, "NVIDIA T4"), (Device.auto, "NVIDIA T4")])
def test_bench_names_the_gpu_only_when_it_runs_on_one(device, named, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA T4")
    machine = bench.machine(Settings(model="m", device=device))
    assert machine.endswith(f", {named}")


@pytest.mark.parametrize("card, major, expected", [("T4", 7, torch.float16), ("V100", 7, torch.float16),
                                                   ("A100", 8, torch.bfloat16), ("H100", 9, torch.bfloat16)])
def test_auto_dtype_on_a_gpu_is_bfloat16_only_where_it_is_native(card, major, expected, monkeypatch):
    """torch's own `is_bf16_supported` on a card of compute capability `major`, where bfloat16 tensors can
    be made (emulated below 8: what it counts as support unless told not to)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(name=card, major=major))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    monkeypatch.setattr(torch.version, "hip", None)
    assert torch.cuda.is_bf16_supported()  # emulation counted: what `--dtype auto` used to go by
    assert resolve_dtype(DType.auto, torch.device("cuda")) == expected


class FakeRay:
    """What the engine asks of Ray before any work, answered without starting it: a joined cluster with
    `gpus` GPUs, and the options `map_batches` is called with."""

    def __init__(self, gpus: float) -> None:
        self.gpus = gpus
        self.mapped: dict = {}
        self.data = SimpleNamespace(from_items=lambda rows, override_num_blocks: self,
                                    ActorPoolStrategy=lambda size: ("actors", size))

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict:
        return {"CPU": 16.0, **({"GPU": self.gpus} if self.gpus else {})}

    def remote(self, **options):
        return lambda cls: SimpleNamespace(remote=lambda: "attempts")

    def map_batches(self, fn, **options):
        self.mapped = options
        return self


def actor_options(device: Device, gpus: float, options: RayOptions = RayOptions(workers=2)) -> dict:
    ray, notes = FakeRay(gpus), []
    settings = Settings(model="m", device=device)
    with ray_engine._connected(ray, options, settings.device, notes.append) as settled:
        ray_engine._mapped(ray, settings, ray_engine.Answer(), [{"video": "a.mp4", "indices": [0]}], settled, None)
    assert notes == []
    return ray.mapped


@pytest.mark.parametrize("device, gpus, expected", [
    (Device.cuda, 2, 1), (Device.auto, 2, 1), (Device.auto, 0, None), (Device.cpu, 2, None),
])
def test_ray_workers_reserve_a_gpu_each_where_the_models_run_on_one(device, gpus, expected):
    """Ray hands an actor only the GPUs it reserved; one that reserved none sees every GPU (Ray 2.60 leaves
    CUDA_VISIBLE_DEVICES alone at zero), and every such actor would load onto the first."""
    mapped = actor_options(device, gpus)
    assert mapped["num_gpus"] == expected and mapped["compute"] == ("actors", 2)


def test_ray_workers_take_the_gpus_per_worker_given():
    assert actor_options(Device.cuda, 2, RayOptions(workers=4, gpus_per_worker=0.5))["num_gpus"] == 0.5
    assert actor_options(Device.auto, 2, RayOptions(workers=2, gpus_per_worker=0))["num_gpus"] is None


@pytest.mark.parametrize("options, device, message", [
    (RayOptions(workers=4, gpus_per_worker=1), Device.auto,
     "--workers 4 with --gpus-per-worker 1 need 4 GPUs: the Ray cluster has 2 GPUs; --gpus-per-worker 0.5 shares them"),
    (RayOptions(workers=3), Device.cuda,
     "--workers 3 with one GPU per worker (--device cuda) need 3 GPUs: the Ray cluster has 2 GPUs; "
     "--gpus-per-worker 0.66 shares them"),
    (RayOptions(workers=1, gpus_per_worker=3), Device.cuda, "--gpus-per-worker 3: the Ray cluster has 2 GPUs; "
     "--gpus-per-worker 2 shares them"),
])
def test_a_pool_the_gpus_cannot_hold_is_refused_before_any_work(options, device, message):
    """Every worker's GPUs count: 4 workers of 1 GPU on 2 GPUs would wait forever for the other two."""
    with pytest.raises(DytokError) as refused:
        ray_engine._check_gpus(FakeRay(2), options, device, pytest.fail, started_here=True)
    assert str(refused.value) == message
    notes = []
    ray_engine._check_gpus(FakeRay(2), options, device, notes.append, started_here=False)
    assert notes == [message.replace(": the Ray cluster has 2 GPUs", ": the Ray cluster has 2 GPUs now; the workers wait "
                                     "for more (Ctrl-C stops)", 1)]


def test_a_pool_that_fits_the_gpus_goes_ahead():
    settled = ray_engine._check_gpus(FakeRay(2), RayOptions(workers=4, gpus_per_worker=0.5), Device.cuda, pytest.fail,
                                     started_here=True)
    assert settled.gpus_per_worker == 0.5
    assert ray_engine._check_gpus(FakeRay(0), RayOptions(workers=8), Device.auto, pytest.fail, True).gpus_per_worker == 0


def test_a_batch_out_of_gpu_memory_frees_it_and_answers_the_next_question(tiny_llava, tiny_llava_dir, clip, monkeypatch):
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32, max_new_tokens=2,
                        decode_timeout=None, method=Method.dytok, ratio=0.5)
    pipeline = Pipeline(settings, model=tiny_llava)
    ask, failures, freed = pipeline.ask, [1], []

    def short_of_memory(*args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            ask(*args, **kwargs)  # as far as a question goes before it runs out: its prefix is kept
            assert pipeline._prefix is not None
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return ask(*args, **kwargs)

    monkeypatch.setattr(pipeline, "ask", short_of_memory)
    monkeypatch.setattr(batch, "free_cached_memory", lambda: freed.append((pipeline._prefix, sys.exc_info()[0])))
    outcomes = []
    failed = batch.run(pipeline, [str(clip)], ["what?", "and then?"], outcomes.append)
    assert failed == 1 and "out of memory" in outcomes[0].record["error"] and outcomes[1].answer is not None
    # Freed once, outside the error's handler (whose frames hold tensors), with the prompt prefix gone.
    assert freed == [(None, None)]


def test_random_weights_are_built_on_the_device_they_run_on(build_family, monkeypatch):
    """Not initialised on the CPU and copied: the meta device stands in for the GPU (it holds no memory)."""
    from transformers import AutoModelForImageTextToText

    from_config, built_on = AutoModelForImageTextToText.from_config, []

    def spy(*args, **kwargs):
        built_on.append(torch.get_default_device())
        return from_config(*args, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_config", spy)
    monkeypatch.setattr(models, "resolve_device", lambda device: torch.device("meta"))
    model = models.load_random_model(str(build_family("llava_onevision")), device=Device.cuda, dtype=DType.float32)
    assert built_on == [torch.device("meta")]
    assert {parameter.device for parameter in model.model.parameters()} == {torch.device("meta")}


def host_reads(monkeypatch) -> list[str]:
    """Every read of a tensor's values or size by the host that waits for a GPU's queued work."""
    reads = []
    for name in ("tolist", "item", "nonzero", "cpu", "numpy"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda tensor, *a, _real=real, _name=name, **k: reads.append(_name)
                            or _real(tensor, *a, **k))
    return reads


def test_visionzip_and_the_kept_index_wait_for_the_device_once_not_per_frame(monkeypatch):
    from dytok_cli.math.selectors.visionzip import select_video
    from dytok_cli.types import EncodedVideo

    generator = torch.Generator().manual_seed(0)
    frames, tokens = 8, 30
    features, keys = torch.randn(frames, tokens, 16, generator=generator), torch.randn(frames, tokens, 4, generator=generator)
    attention, budgets = torch.rand(frames, tokens, generator=generator), torch.tensor([3, 7, 12, 30, 0, 1, 9, 5])
    video = EncodedVideo(features, torch.zeros(1, 16), attention, keys)
    reads = host_reads(monkeypatch)
    _, selections = select_video(features, attention, keys, budgets)
    assert reads == ["tolist"]  # the budgets, which live on the host
    video.kept_index([selection.token_index for selection in selections])
    assert reads == ["tolist", "cpu"]


def test_a_checkpoint_loads_straight_onto_its_device(tiny_llava_dir, monkeypatch):
    """Weights go to the device as they are read (accelerate's device map), not through host memory and a
    copy of the whole model: the loader is asked for the device, and the model is never moved after."""
    from transformers import AutoModelForImageTextToText

    from_pretrained, asked, moved = AutoModelForImageTextToText.from_pretrained, [], []

    def spy(*args, **kwargs):
        asked.append(kwargs["device_map"])
        return from_pretrained(*args, **{**kwargs, "device_map": {"": "cpu"}})

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", spy)
    monkeypatch.setattr(models, "resolve_device", lambda device: torch.device("cuda", 1))
    real_to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda module, *a, **k: moved.append(a) or real_to(module, *a, **k))
    models.load_model(str(tiny_llava_dir), device=Device.cuda, dtype=DType.float32, trust_remote_code=False)
    assert asked == [{"": "cuda:1"}] and moved == []
