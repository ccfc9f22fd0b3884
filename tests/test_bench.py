"""`dytok bench`: the measurements' shape and invariants (timings themselves are never asserted)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from dytok_cli.apps import bench
from dytok_cli.config import Device, DType, Lever, Method, Settings
from dytok_cli.models import load_random_model, presets
from dytok_cli.pipeline import Pipeline

RESULT_KEYS = {
    "ratio", "method", "visual_tokens", "vision_s", "prior_s", "prefill_s", "ttft_s", "decode_tok_s", "total_s",
    "kv_cache_bytes", "peak_rss_bytes", "peak_gpu_bytes", "speedup_prefill", "speedup_total", "prior_share", "next_question_s",
    "speedup_next_question", "next_question_recomputed_s", "speedup_prefix_reuse", "runs", "spread",
    "levers", "reused_frames", "lever_speedup_vision", "lever_speedup_total",
}


@pytest.mark.parametrize(
    "name, hidden, layers, kv_heads",
    [("llava-ov-0.5b", 896, 24, 2), ("llava-ov-7b", 3584, 28, 4), ("qwen2.5-vl-3b", 2048, 36, 2), ("qwen2.5-vl-7b", 3584, 28, 4),
     ("qwen3-vl-2b", 2048, 28, 8), ("qwen3-vl-4b", 2560, 36, 8), ("qwen3-vl-8b", 4096, 36, 8),
     ("qwen3.5-0.8b", 1024, 24, 2), ("qwen3.5-2b", 2048, 24, 2), ("qwen3.5-4b", 2560, 32, 4),
     ("internvl3.5-1b", 1024, 28, 8), ("internvl3.5-2b", 2048, 28, 8), ("internvl3.5-4b", 2560, 36, 8),
     ("internvl3.5-8b", 4096, 36, 8),
     ("smolvlm2-256m", 576, 30, 3), ("smolvlm2-500m", 960, 32, 5), ("smolvlm2-2.2b", 2048, 24, 32)],
)
def test_presets_hold_the_public_shapes(name, hidden, layers, kv_heads):
    description = json.loads(presets()[name].read_text())
    description.pop("source")
    config = AutoConfig.for_model(description.pop("model_type"), **description)
    text = config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, text.num_key_value_heads) == (hidden, layers, kv_heads)


@pytest.mark.parametrize("name", ["qwen3.5-0.8b", "qwen3.5-2b", "qwen3.5-4b"])
def test_qwen3_5_presets_have_full_attention_every_fourth_layer(name):
    description = json.loads(presets()[name].read_text())
    description.pop("source")
    text = AutoConfig.for_model(description.pop("model_type"), **description).get_text_config()
    assert [i for i, kind in enumerate(text.layer_types) if kind == "full_attention"] == list(range(3, text.num_hidden_layers, 4))


def test_bench_on_a_random_weight_hybrid_counts_the_kv_of_attention_layers_only(build_family, clip):
    """A hybrid's linear-attention layers hold a fixed-size state, not keys and values per position."""
    directory = build_family("qwen3_5")
    model = load_random_model(str(directory), device=Device.cpu, dtype=DType.float32)
    settings = Settings(model=str(directory), frames=4, device=Device.cpu, dtype=DType.float32, max_new_tokens=3,
                        decode_timeout=None)
    results = bench.run([settings], clip, [1.0, 0.25], model=model, question="q", repeat=1, warmup=0)
    assert [r["method"] for r in results] == ["none", "dytok-fastv"]
    dropped = results[0]["visual_tokens"] - results[1]["visual_tokens"]
    per_position = 2 * 2 * 2 * 16 * 4  # K and V, 2 full-attention layers, 2 KV heads, head_dim 16, float32
    assert (results[0]["kv_cache_bytes"] - results[1]["kv_cache_bytes"]) / dropped == per_position
    # What the model's own cache holds for the uncompressed prompt: every position, the per-frame
    # timestamps and markers of its text included.
    encoded = model.encode(Pipeline(settings, model=model).read(clip))
    with torch.no_grad():
        cache = model.model(**model.build_inputs("q", encoded.all_tokens(), video=encoded), use_cache=True).cache
    keyed = [layer for layer in cache.layers if getattr(layer, "keys", None) is not None]
    assert len(keyed) == 2 and results[0]["kv_cache_bytes"] == sum(layer.keys.nbytes + layer.values.nbytes for layer in keyed)


def test_bench_results_on_a_random_weight_model(tiny_llava_dir, clip):
    model = load_random_model(str(tiny_llava_dir), device=Device.cpu, dtype=DType.float32)
    assert model.tokenizer is None  # synthetic prompts
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32,
                        max_new_tokens=5, decode_timeout=None, method=Method.dytok)
    results = bench.run([settings], clip, [1.0, 0.5, 0.25], model=model, question="q", repeat=1, warmup=0)
    assert [r["ratio"] for r in results] == [1.0, 0.5, 0.25]
    assert all(set(r) == RESULT_KEYS for r in results)
    assert [r["method"] for r in results] == ["none", "dytok", "dytok"]
    assert [r["visual_tokens"] for r in results] == [64, 32, 16]
    assert results[0]["speedup_prefill"] == results[0]["speedup_total"] == results[0]["speedup_next_question"] == 1.0
    assert results[0]["prior_s"] < results[1]["prior_s"]  # the baseline runs no prior
    # The KV cache grows by exactly one position's bytes per visual token dropped or kept.
    per_position = (results[0]["kv_cache_bytes"] - results[1]["kv_cache_bytes"]) / (64 - 32)
    assert per_position == (results[1]["kv_cache_bytes"] - results[2]["kv_cache_bytes"]) / (32 - 16)
    assert per_position == 2 * 4 * 2 * 16 * 4  # K and V, 4 layers, 2 KV heads, head_dim 16, float32
    assert all(r["peak_rss_bytes"] > 0 and r["decode_tok_s"] > 0 for r in results)
    assert all(r["next_question_recomputed_s"] > 0 and r["speedup_prefix_reuse"] > 0 for r in results)


def test_a_lever_is_measured_on_and_off_and_each_case_against_itself_with_it_off(tiny_llava_dir, tiny_llava, tmp_path):
    from clips import write_stills

    slides = write_stills(tmp_path / "slides.mp4", [0, 0, 0, 0, 1, 1, 1, 1])
    settings = Settings(model=str(tiny_llava_dir), frames=8, device=Device.cpu, dtype=DType.float32,
                        max_new_tokens=2, decode_timeout=None)
    results = bench.run([settings], slides, [1.0, 0.25], model=tiny_llava, question="q", repeat=1, warmup=0,
                        levers=[Lever.reuse_repeats])
    assert [(r["levers"], r["ratio"], r["method"]) for r in results] == [
        ([], 1.0, "none"), ([], 0.25, "dytok-fastv"), (["reuse-repeats"], 1.0, "none"), (["reuse-repeats"], 0.25, "dytok-fastv"),
    ]
    assert [r["reused_frames"] for r in results] == [0, 0, 6, 6]
    off, on = results[:2], results[2:]
    for without, with_lever in zip(off, on):
        assert with_lever["lever_speedup_total"] == without["total_s"] / with_lever["total_s"]
        assert with_lever["lever_speedup_vision"] == without["vision_s"] / with_lever["vision_s"]
        assert without["lever_speedup_total"] == without["lever_speedup_vision"] == 1.0
    # Each set of levers has its own uncompressed baseline.
    assert on[0]["speedup_total"] == off[0]["speedup_total"] == 1.0


def test_several_levers_are_measured_alone_and_together():
    assert bench.lever_sets([]) == [()]
    assert bench.lever_sets([Lever.reuse_repeats]) == [(), (Lever.reuse_repeats,)]
    assert len(bench.lever_sets([Lever.reuse_repeats, Lever.reuse_repeats])) == 4  # none, each alone, both


def test_bench_command_json(dytok_here, tiny_llava_dir, clip):
    result = dytok_here("bench", str(clip), "--model", str(tiny_llava_dir), "--random-weights", "--ratios", "1,0.25",
                        "--frames", "4", "--repeat", "1", "--warmup", "0", "--max-new-tokens", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"machine", "model", "frames", "results"} <= set(report)
    assert [r["ratio"] for r in report["results"]] == [1.0, 0.25]


@pytest.mark.parametrize("ratios", ["0,1", "1,x", ""])
def test_bad_ratios_are_usage_errors(dytok_here, clip, ratios):
    result = dytok_here("bench", str(clip), "--ratios", ratios)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--ratios" in result.stderr


def test_bench_runs_a_random_weight_qwen(tiny_qwen_dir, clip):
    model = load_random_model(str(tiny_qwen_dir), device=Device.cpu, dtype=DType.float32)
    # One temporal patch: the checkpoints' processor settings make it 1610 tokens even from a 64x48 clip.
    settings = Settings(model=str(tiny_qwen_dir), frames=2, device=Device.cpu, dtype=DType.float32,
                        max_new_tokens=3, decode_timeout=None, method=Method.visionzip)
    results = bench.run([settings], clip, [1.0, 0.5], model=model, question="q", repeat=1, warmup=0)
    assert results[1]["visual_tokens"] * 2 == results[0]["visual_tokens"]


def test_bench_runs_dytok_fastv(tiny_llava_dir, clip):
    model = load_random_model(str(tiny_llava_dir), device=Device.cpu, dtype=DType.float32)
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32,
                        max_new_tokens=3, decode_timeout=None, method=Method.dytok_fastv, prune_layer=1)
    results = bench.run([settings], clip, [1.0, 0.5], model=model, question="q", repeat=1, warmup=0)
    assert [r["method"] for r in results] == ["none", "dytok-fastv"]
    assert [r["visual_tokens"] for r in results] == [64, 32]
    assert results[1]["prior_s"] == 0 and results[1]["prefill_s"] > 0  # the prior is part of the prefill
    # Every layer's cache holds only the kept visual tokens.
    assert results[0]["kv_cache_bytes"] - results[1]["kv_cache_bytes"] == model.kv_cache_bytes(32)


def test_bench_compares_methods_against_one_baseline(tiny_llava_dir, clip):
    model = load_random_model(str(tiny_llava_dir), device=Device.cpu, dtype=DType.float32)
    compared = Settings.for_methods([Method.dytok, Method.dytok_fastv], model=str(tiny_llava_dir), frames=4, device=Device.cpu,
                                    dtype=DType.float32, max_new_tokens=3, decode_timeout=None, prune_layer=1)
    assert [settings.prune_layer for settings in compared] == [None, 1]  # only the single pass takes it
    results = bench.run(compared, clip, [1.0, 0.5], model=model, question="q", repeat=1, warmup=0)
    assert [(r["ratio"], r["method"]) for r in results] == [(1.0, "none"), (0.5, "dytok"), (0.5, "dytok-fastv")]
    assert all(r["speedup_total"] == results[0]["total_s"] / r["total_s"] for r in results)


def test_next_question_reuses_the_video(tiny_llava_dir, tiny_llava_assistant_dir, clip, monkeypatch):
    """Each run asks three times on one decoded, encoded video: the later ones pay no decoding or vision
    pass, the assistant's included; the second is what `next_question_s` reports, the third (its prompt
    prefix recomputed) `next_question_recomputed_s`."""
    model = load_random_model(str(tiny_llava_dir), device=Device.cpu, dtype=DType.float32)
    assistant = load_random_model(str(tiny_llava_assistant_dir), device=Device.cpu, dtype=DType.float32)
    settings = Settings(model=str(tiny_llava_dir), prior_model=str(tiny_llava_assistant_dir), frames=4,
                        device=Device.cpu, dtype=DType.float32, max_new_tokens=3, decode_timeout=None, method=Method.dytok)
    answers = []
    original = bench.Pipeline.ask

    def recording(self, *args, **kwargs):
        answers.append(original(self, *args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(bench.Pipeline, "ask", recording)
    [result] = bench.run([settings], clip, [0.5], model=model, prior=assistant, question="q", repeat=1, warmup=0)
    first, later, recomputed = answers
    assert min(first.timings["decode_s"], first.timings["vision_s"]) > 0
    for again in (later, recomputed):
        assert again.timings["decode_s"] == again.timings["vision_s"] == 0
        assert again.timings["prior_s"] > 0  # the assistant's LLM pass runs again for the question
    # the later question took the prior model's prompt prefix from the first; the last one ran it again
    assert [answer.plan.reused_prefix_tokens for answer in answers] == [0, later.plan.reused_prefix_tokens, 0]
    assert later.plan.reused_prefix_tokens > 0
    assert (result["total_s"], result["next_question_s"], result["next_question_recomputed_s"]) == (
        first.timings["total_s"], later.timings["total_s"], recomputed.timings["total_s"])
    assert result["speedup_next_question"] is None  # no ratio 1 in this run


def test_repetitions_interleave_the_cases(tiny_llava_dir, clip):
    """Every case runs once per repetition, in turn, so a machine's drift falls on all of them alike."""
    model = load_random_model(str(tiny_llava_dir), device=Device.cpu, dtype=DType.float32)
    settings = Settings(model=str(tiny_llava_dir), frames=2, device=Device.cpu, dtype=DType.float32,
                        max_new_tokens=2, decode_timeout=None, method=Method.visionzip)
    progress: list[str] = []
    finished: list[bench.Finished] = []
    results = bench.run([settings], clip, [1.0, 0.5], model=model, question="q", repeat=2, warmup=1,
                        on_progress=progress.append, on_finished=finished.append)
    assert progress == [
        "ratio 1 none: warm-up 1/1", "ratio 0.5 visionzip: warm-up 1/1",
        "ratio 1 none: run 1/2", "ratio 0.5 visionzip: run 1/2",
        "ratio 1 none: run 2/2", "ratio 0.5 visionzip: run 2/2",
    ]
    assert all(r["peak_rss_bytes"] > 0 for r in results)
    # Each run is reported as it ends, with how many are done and an estimate of the time the rest take.
    assert [run.label for run in finished] == progress
    assert [(run.done, run.total) for run in finished] == [(done, 6) for done in range(1, 7)]
    assert all(run.seconds > 0 and run.left_s > 0 for run in finished[:-1]) and finished[-1].left_s == 0
    # The median of two runs, between its two values, which the spread gives.
    for result in results:
        assert result["runs"] == 2
        for measure in bench.MEASURES:
            if result[measure] is not None:
                low, high = result["spread"][measure]
                assert low <= result[measure] <= high and result[measure] == (low + high) / 2
