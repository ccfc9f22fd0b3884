"""Measured cost per ratio, in one process: the speed-ups are ratios taken in the same run.

Every ratio (and method, when several are compared) runs the whole pipeline (decode, vision, prior, prefill, decode steps) after warm-up
runs, several times; the median of each measure is reported, with its smallest and largest value. Each run then asks the question again
on the same video, its decoded frames and vision passes reused, as a later question in one process
(or with `--cache-dir`) is, and with the prompt prefix's LLM work reused too (prefix reuse, unless
`prefix_cache` is off); then once more with that work done again, so the gain of prefix reuse is a
ratio within the run. Ratio 1 is the uncompressed model (no prior, every visual token), the baseline
the speed-ups are measured against.

Speed levers (`levers`) are measured the same way: every case runs with the compared levers all off, with
each alone, and with all of them when there are several, each against the same case with all off.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import BASELINE, Lever, Settings, with_levers
from ..gpu import clock
from ..models import (
    VideoModel,
    load_model,
    load_random_model,
    resolve_device,
    resolve_dtype,
)
from ..pipeline import Pipeline

MEASURES = ("vision_s", "prior_s", "prefill_s", "ttft_s", "decode_tok_s", "total_s", "next_question_s",
            "next_question_recomputed_s")


@contextmanager
def peak_rss() -> Iterator[Callable[[], int]]:
    """Resident memory high-water mark while the block runs (bytes), sampled every 10 ms on Linux;
    elsewhere the process's lifetime peak."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        yield lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return
    page = os.sysconf("SC_PAGE_SIZE")
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], int(statm.read_text().split()[1]) * page)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak[0]
    finally:
        done.set()
        sampler.join()


@contextmanager
def peak_gpu_memory(device: torch.device) -> Iterator[Callable[[], int | None]]:
    """The CUDA allocator's high-water mark while the block runs (bytes): the weights, the KV cache and
    the activations, which live on the GPU where RSS does not see them; None on any other device."""
    if device.type != "cuda":
        yield lambda: None
        return
    torch.cuda.reset_peak_memory_stats(device)
    yield lambda: torch.cuda.max_memory_allocated(device)


def dtype_name(settings: Settings) -> str:
    """The dtype `settings` run in on this machine (`--dtype auto` resolved)."""
    return str(resolve_dtype(settings.dtype, resolve_device(settings.device))).removeprefix("torch.")


def machine(settings: Settings) -> str:
    """The machine `settings` run on: its CPU, and the GPU only when they run on one."""
    device = resolve_device(settings.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {name}"


def _one_run(pipeline: Pipeline, video: str | Path, question: str) -> dict[str, float | None]:
    visual = pipeline.prepare(video)
    answer = pipeline.ask(visual, question, force_length=True)
    later = pipeline.ask(visual, question, force_length=True)
    recomputed = None
    if pipeline.settings.prefix_cache:
        # The same later question with the prompt prefix's LLM work done again, as --no-prefix-cache does it.
        pipeline.release()
        recomputed = pipeline.ask(visual, question, force_length=True).timings["total_s"]
    pipeline.release()
    timings = answer.timings
    new_tokens = len(answer.token_ids)
    decode_time = timings["generate_s"] - timings["prefill_s"]
    plan = answer.plan
    # The prompt as the model ran it: the kept visual tokens and, for families that write time into the
    # text (Qwen3-VL, Qwen3.5), every frame's timestamp and markers.
    inputs = pipeline.model.build_inputs(question, plan.visual_tokens, plan.kept_index, video=plan.encoded,
                                         deepstack=plan.deepstack, thinking=plan.thinking)
    prompt = inputs["input_ids"].shape[1]
    return {
        "visual_tokens": plan.kept_tokens,
        "reused_frames": plan.encoded.reused_frames,
        "vision_s": timings["vision_s"],
        "prior_s": timings["prior_s"],
        "prefill_s": timings["prefill_s"],
        "ttft_s": timings["decode_s"] + timings["vision_s"] + timings["prior_s"] + timings["prefill_s"],
        "decode_tok_s": (new_tokens - 1) / decode_time if new_tokens > 1 and decode_time > 0 else 0.0,
        "total_s": timings["total_s"],
        "next_question_s": later.timings["total_s"],
        "next_question_recomputed_s": recomputed,
        "kv_cache_bytes": pipeline.model.kv_cache_bytes(prompt),
    }


def load_models(settings: Settings, prior_model: str | None) -> tuple[VideoModel, VideoModel | None]:
    """The answering model and the assistant prior model (None without one); with `random_weights`,
    models of the named shape (a preset or a config) with random weights, so no download is needed."""

    def load(name: str) -> VideoModel:
        if settings.random_weights:
            return load_random_model(name, device=settings.device, dtype=settings.dtype)
        return load_model(name, device=settings.device, dtype=settings.dtype, trust_remote_code=settings.trust_remote_code)

    return load(settings.model), load(prior_model) if prior_model else None


def lever_sets(levers: list[Lever]) -> list[tuple[Lever, ...]]:
    """Which of the compared `levers` are on, case by case: none, each alone, and all of them when there
    are several. Without levers to compare, one set: the settings as given."""
    if not levers:
        return [()]
    return [(), *((lever,) for lever in levers), *([tuple(levers)] if len(levers) > 1 else [])]


def measured_cases(compared: list[Settings], ratios: list[float], levers: list[Lever] = ()) -> list[Settings]:
    """What `run` measures, in order: for each set of levers on (`lever_sets`), ratio 1 once, as the
    uncompressed baseline, and every compared method at each other ratio."""
    return [
        with_levers(settings.with_method(settings.method, ratio), levers, on)
        for on in lever_sets(list(levers))
        for ratio in ratios
        for settings in ([compared[0].with_method(BASELINE, 1.0)] if ratio == 1 else compared)
    ]


def levers_on(settings: Settings, levers: list[Lever]) -> list[str]:
    """The compared `levers` that `settings` has on, by name."""
    return [lever.value for lever in levers if lever.is_on(settings)]


@dataclass(frozen=True)
class Finished:
    """One run done, for a progress display: which (`label`), the `done`th of `total` runs (warm-ups
    included), its first question's seconds, and an estimate of the seconds the remaining runs take."""

    label: str
    done: int
    total: int
    seconds: float
    left_s: float


def run(
    compared: list[Settings],
    video: str | Path,
    ratios: list[float],
    *,
    question: str,
    repeat: int,
    warmup: int,
    levers: list[Lever] = (),
    model: VideoModel | None = None,
    prior: VideoModel | None = None,
    on_progress: Callable[[str], None] | None = None,
    on_finished: Callable[[Finished], None] | None = None,
) -> list[dict[str, Any]]:
    """One result per (levers on, ratio, method), ratios in the order given and the `compared` methods'
    settings (one per method, `Settings.for_methods`) within each, each the median over `repeat` timed runs,
    with `runs` (how many) and `spread` (each measure's smallest and largest value). Ratio 1 is measured
    once per set of levers, as the uncompressed baseline every method is compared with; each case with a
    lever on is compared with the same case with every compared lever off (`lever_speedup_*`). Models are
    loaded from the settings unless given. `on_progress` is told what starts, `on_finished` what ended.

    Each repetition runs every case once, in turn: a shared machine's speed drifts over minutes,
    and interleaving lays that drift on all cases alike instead of on whichever ran last."""
    prior_model = next((settings.prior_model for settings in compared if settings.prior_model), None)
    if model is None:
        if on_progress:
            on_progress(f"Loading {compared[0].model}")
        model, prior = load_models(compared[0], prior_model)
    levers = list(levers)
    cases = measured_cases(compared, ratios, levers)
    pipelines = [Pipeline(case, model=model, prior=prior if case.prior_model else None) for case in cases]
    labels = [f"ratio {case.ratio:g} {case.method.value}"
              + (f", {'+'.join(levers_on(case, levers)) or 'levers off'}" if levers else "") for case in cases]
    total = (warmup + repeat) * len(cases)
    elapsed = 0.0  # seconds the runs so far took, to tell how long the rest will
    done = 0

    def timed(number: int, step: str) -> dict[str, Any]:
        nonlocal elapsed, done
        label = f"{labels[number]}: {step}"
        if on_progress:
            on_progress(label)
        started = clock()  # a run's pipeline calls each end with its device's work done
        measured = _one_run(pipelines[number], video, question)
        elapsed += clock() - started
        done += 1
        if on_finished:
            on_finished(Finished(label, done, total, measured["total_s"], elapsed / done * (total - done)))
        return measured

    for index in range(warmup):
        for number in range(len(cases)):
            timed(number, f"warm-up {index + 1}/{warmup}")
    runs: list[list[dict[str, float]]] = [[] for _ in cases]
    peaks = [0] * len(cases)
    gpu_peaks: list[int | None] = [None] * len(cases)
    for index in range(repeat):
        for number in range(len(cases)):
            with peak_rss() as peak, peak_gpu_memory(model.device) as gpu_peak:
                runs[number].append(timed(number, f"run {index + 1}/{repeat}"))
            peaks[number] = max(peaks[number], peak())
            if (reached := gpu_peak()) is not None:
                gpu_peaks[number] = max(gpu_peaks[number] or 0, reached)
    results = []
    for case, measured, peak, gpu_peak in zip(cases, runs, peaks, gpu_peaks):
        result: dict[str, Any] = {"ratio": case.ratio, "method": case.method.value, "levers": levers_on(case, levers),
                                  "runs": len(measured)}
        result["visual_tokens"] = measured[0]["visual_tokens"]
        result["reused_frames"] = measured[0]["reused_frames"]
        spread: dict[str, list[float] | None] = {}
        for measure in MEASURES:
            values = [run[measure] for run in measured if run[measure] is not None]
            result[measure] = statistics.median(values) if values else None
            spread[measure] = [min(values), max(values)] if values else None
        result["spread"] = spread
        result["kv_cache_bytes"] = measured[0]["kv_cache_bytes"]
        result["peak_rss_bytes"] = peak
        result["peak_gpu_bytes"] = gpu_peak
        results.append(result)
    for result in results:
        baseline = next((r for r in results if r["ratio"] == 1 and r["levers"] == result["levers"]), None)
        off = next(r for r in results if (r["ratio"], r["method"], r["levers"]) == (result["ratio"], result["method"], []))
        result["lever_speedup_vision"] = off["vision_s"] / result["vision_s"] if levers and result["vision_s"] else None
        result["lever_speedup_total"] = off["total_s"] / result["total_s"] if levers else None
        result["speedup_prefill"] = baseline["prefill_s"] / result["prefill_s"] if baseline else None
        result["speedup_total"] = baseline["total_s"] / result["total_s"] if baseline else None
        result["speedup_next_question"] = baseline["next_question_s"] / result["next_question_s"] if baseline else None
        recomputed = result["next_question_recomputed_s"]
        result["speedup_prefix_reuse"] = recomputed / result["next_question_s"] if recomputed else None
        result["prior_share"] = result["prior_s"] / result["total_s"] if result["total_s"] else 0.0
    return results
