"""The lmms-eval plugin: its own logic with stand-ins for lmms-eval's requests, and (where lmms-eval is
installed with this package's entry point) a real `lmms-eval --model dytok` run on a local task, offline."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from clips import write_clip, write_text_file

from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.apps.lmms_eval.plugin import Answerer, Request, cut_at, gpu_index, request_from_args, settings_from_args
from dytok_cli.pipeline import Pipeline

QUESTION = "what happens in the video?\nA. dog\nB. cat\nAnswer with the option's letter from the given choices directly."


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lmms-videos")
    write_clip(root / "a.mp4", n_frames=12)
    write_clip(root / "b.mp4", n_frames=16)
    write_text_file(root / "broken.mp4")
    return root


def test_model_args_become_settings():
    # As lmms-eval's parser hands them over: digits as numbers, the rest as strings.
    settings = settings_from_args({
        "pretrained": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "prior_model": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        "method": "dytok", "ratio": 0.25, "max_frames_num": 32, "prior_layers": "16-23", "device": "cuda:0",
        "dtype": "bfloat16", "max_new_tokens": 16,
    })
    assert settings == Settings(
        model="llava-hf/llava-onevision-qwen2-7b-ov-hf", prior_model="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        method=Method.dytok, ratio=0.25, frames=32, prior_layers="16-23", device=Device.cuda, dtype=DType.bfloat16,
        max_new_tokens=16,
    )
    assert settings_from_args({"prior_layers": 20, "ratio": 1}).prior_layers == "20"
    with pytest.raises(ValueError, match="unknown model_args 'conv_template'"):
        settings_from_args({"conv_template": "qwen_1_5"})


@pytest.mark.parametrize("model_args, environ, expected", [
    ({"device": "cuda:1"}, {}, 1),
    ({"device": "cuda:3"}, {"WORLD_SIZE": "4", "LOCAL_RANK": "1"}, 3),  # named, it wins
    ({"device": "cuda"}, {}, None),  # CUDA's current device
    ({}, {}, None),
    ({"device": "cuda"}, {"WORLD_SIZE": "4", "LOCAL_RANK": "2"}, 2),  # `accelerate launch`: a GPU per process
    ({}, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 1),
    ({"device": "cpu"}, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, None),
])
def test_each_process_answers_on_the_gpu_it_is_given(model_args, environ, expected):
    assert gpu_index(model_args, environ) == expected
    assert settings_from_args(model_args).device in (Device.cuda, Device.cpu, Device.auto)


def test_a_gpu_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match="device 'cuda:x' names no CUDA device"):
        gpu_index({"device": "cuda:x"})


def test_the_gpu_is_made_current_before_any_model_loads(tiny_llava_dir, monkeypatch):
    import torch

    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    answerer = Answerer(Settings(model=str(tiny_llava_dir), device=Device.cpu), gpu=1)
    assert current == [1] and "model" not in answerer._shared.__dict__  # nothing loaded yet


def test_the_lmms_class_under_accelerate_launch(tiny_llava_dir, monkeypatch):
    """`model.Dytok` with stand-ins for lmms-eval and accelerate: process 1 of 2 takes its share of the
    requests (its rank) and answers on GPU 1."""
    import types

    import torch

    class Lmms:
        def __init__(self) -> None:
            self._rank, self._world_size = 0, 1

        @property
        def rank(self) -> int:
            return self._rank

        @property
        def world_size(self) -> int:
            return self._world_size

    class Accelerator:
        process_index, num_processes, local_process_index = 1, 2, 1

    stand_ins = {"lmms_eval": types.ModuleType("lmms_eval"), "lmms_eval.api": types.ModuleType("lmms_eval.api"),
                 "lmms_eval.api.instance": types.ModuleType("lmms_eval.api.instance"),
                 "lmms_eval.api.model": types.ModuleType("lmms_eval.api.model"), "accelerate": types.ModuleType("accelerate")}
    stand_ins["lmms_eval.api.instance"].Instance = object
    stand_ins["lmms_eval.api.model"].lmms = Lmms
    stand_ins["accelerate"].Accelerator = Accelerator
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    import dytok_cli.apps.lmms_eval as package

    try:  # imported over the stand-ins, and forgotten afterwards
        from dytok_cli.apps.lmms_eval.model import Dytok

        model = Dytok(pretrained=str(tiny_llava_dir), device="cuda")
    finally:
        sys.modules.pop("dytok_cli.apps.lmms_eval.model", None)
        vars(package).pop("model", None)
    assert (model.rank, model.world_size, model.device, current) == (1, 2, torch.device("cuda", 1), [1])


def test_requests_from_lmms_eval_arguments():
    docs = {"videomme": {"test": [{"video": "/data/a.mp4"}, {"images": ["x.png", "y.png"]}]}}
    to_visual = lambda doc: [doc["video"]] if "video" in doc else doc["images"]  # noqa: E731
    generation = {"max_new_tokens": 16, "temperature": 0, "do_sample": False, "until": "\n\n"}
    request = request_from_args(("prompt", generation, to_visual, 0, "videomme", "test"), docs)
    assert request == Request("/data/a.mp4", "prompt", 16, 0.0, ("\n\n",))
    sampled = request_from_args(("p", {"temperature": 0.7, "do_sample": True}, to_visual, 0, "videomme", "test"), docs)
    assert (sampled.max_new_tokens, sampled.temperature, sampled.until) == (None, 0.7, ())
    with pytest.raises(ValueError, match="one video file; videomme document 1 gives 2 visuals"):
        request_from_args(("p", generation, to_visual, 1, "videomme", "test"), docs)


def test_cut_at_the_first_stop_string():
    assert cut_at("B. a cat\n\nmore", ("\n\n", ".")) == "B"
    assert cut_at("B", ("\n\n",)) == "B" and cut_at("B", ()) == "B"


def test_answers_grouped_by_video_equal_one_question_at_a_time(tiny_llava, tiny_llava_dir, videos, monkeypatch):
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32,
                        method=Method.dytok_fastv, ratio=0.5, max_new_tokens=4, decode_timeout=None)
    other = QUESTION.replace("dog", "door")
    requests = [
        Request(str(videos / "a.mp4"), QUESTION, None, 0.0, ()),
        Request(str(videos / "b.mp4"), QUESTION, 6, 0.0, ()),
        Request(str(videos / "broken.mp4"), QUESTION, None, 0.0, ()),
        Request(str(videos / "a.mp4"), other, 6, 0.0, ()),
    ]
    alone = []
    for request in requests[:2] + requests[3:]:
        variant = dataclasses.replace(settings, max_new_tokens=request.max_new_tokens or 4)
        alone.append(Pipeline(variant, model=tiny_llava).ask(request.video, request.question).text)

    encodes = []
    encode = tiny_llava.encode
    monkeypatch.setattr(tiny_llava, "encode", lambda *a, **k: encodes.append(a) or encode(*a, **k))
    answered = []
    replies = Answerer(settings, model=tiny_llava).answer(requests, on_answer=lambda: answered.append(1))
    assert len(encodes) == 2  # a.mp4 once for its two questions, b.mp4 once
    assert replies == [alone[0], alone[1], "", alone[2]]
    assert all(replies[:2]) and len(answered) == len(requests)


def _lmms_eval_with_dytok() -> bool:
    try:
        import lmms_eval  # noqa: F401
    except ImportError:
        return False
    return any(entry.name == "dytok" for entry in entry_points(group="lmms_eval.models"))


@pytest.mark.skipif(not _lmms_eval_with_dytok(), reason="needs lmms-eval and this package installed with its entry point")
def test_lmms_eval_runs_dytok_on_a_local_task(tiny_llava, tiny_llava_dir, videos, tmp_path):
    docs = [{"id": index, "video": str(videos / name), "question": QUESTION, "answer": "A"}
            for index, name in enumerate(["a.mp4", "b.mp4", "a.mp4"])]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    task = tmp_path / "task"
    task.mkdir()
    (task / "local.yaml").write_text(f"""task: dytok_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
""")
    (task / "utils.py").write_text(
        "def doc_to_visual(doc):\n    return [doc['video']]\n\n"
        "def doc_to_text(doc, lmms_eval_specific_kwargs=None):\n    return doc['question']\n\n"
        "def process_results(doc, results):\n    return {'exact': float(results[0].strip() == doc['answer'])}\n"
    )
    output = tmp_path / "out"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "dytok", "--model_args",
         f"pretrained={tiny_llava_dir},method=dytok,ratio=0.5,max_frames_num=4,device=cpu,dtype=float32",
         "--tasks", "dytok_local", "--include_path", str(task), "--output_path", str(output), "--log_samples"],
        capture_output=True, text=True, env=environment, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [json.loads(line) for path in output.rglob("*_samples_dytok_local.jsonl") for line in path.read_text().splitlines()]
    settings = Settings(model=str(tiny_llava_dir), frames=4, device=Device.cpu, dtype=DType.float32,
                        method=Method.dytok, ratio=0.5, max_new_tokens=4)
    pipeline = Pipeline(settings, model=tiny_llava)
    assert {sample["doc_id"]: sample["filtered_resps"] for sample in samples} == {
        doc["id"]: pipeline.ask(doc["video"], QUESTION).text for doc in docs
    }
