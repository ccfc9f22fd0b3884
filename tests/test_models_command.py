"""`dytok models`: every shipped preset with its family, its parameters (counted as a checkpoint holds them),
the published score and measured time where there is one, whether its weights are in the local cache, and
the default marked; a table that fits 100 columns (80 without the family), names never cut, or JSON."""

from __future__ import annotations

import json
import math

import pytest
from safetensors import safe_open
from tiny_models import FAMILIES
from transformers import AutoConfig

from dytok_cli.apps import catalog
from dytok_cli.config import DEFAULT_MODEL, preset_names
from dytok_cli.models import parameter_count, presets

PRESET_KEYS = {"preset", "model", "family", "parameters", "video_mme", "cached", "first_question", "default"}


@pytest.fixture(scope="module")
def listed():
    from conftest import dytok_in_this_process

    result = dytok_in_this_process("models", "--json")
    assert result.returncode == 0, result.stderr
    return {entry["preset"]: entry for entry in json.loads(result.stdout)}


def test_every_preset_is_listed_with_its_checkpoint_and_family(listed):
    assert list(listed) == preset_names()
    for name, entry in listed.items():
        shipped = json.loads(presets()[name].read_text())
        assert set(entry) == PRESET_KEYS
        assert (entry["model"], entry["family"]) == (shipped["source"], shipped["model_type"])
    assert [name for name, entry in listed.items() if entry["default"]] == ["qwen3.5-0.8b"]
    assert listed["qwen3.5-0.8b"]["model"] == DEFAULT_MODEL


def test_published_scores_and_measured_times_are_given_where_known_and_never_made_up(listed):
    assert listed["qwen3.5-0.8b"]["video_mme"] == {"score": 57.7, "thinking": True}
    assert listed["llava-ov-0.5b"]["video_mme"] == {"score": 44.0, "thinking": False}
    assert listed["qwen3-vl-2b"]["video_mme"] == {"score": 62.1, "thinking": False}
    assert listed["llava-ov-7b"]["video_mme"] is None and listed["qwen3-vl-8b"]["video_mme"] is None
    first = listed["qwen3.5-0.8b"]["first_question"]
    assert first["seconds"] == {"360p": 50.3, "1080p": 199.9} and "32 frames" in first["conditions"]
    assert listed["llava-ov-0.5b"]["first_question"]["seconds"]["360p"] == 201.1
    assert listed["smolvlm2-500m"]["video_mme"] == {"score": 42.2, "thinking": False}
    # Every preset of 4B parameters or less of the first run, at both sizes; none of the larger ones.
    first_run = [name for name, entry in listed.items() if entry["first_question"] and entry["first_question"]["run"] == "2026-12-05"]
    assert first_run == [name for name, entry in listed.items() if entry["parameters"] < 5e9
                         and entry["family"] not in ("internvl", "smolvlm", "gemma4")]
    assert first_run == ["llava-ov-0.5b", "qwen2.5-vl-3b", "qwen3-vl-2b", "qwen3-vl-4b", "qwen3.5-0.8b", "qwen3.5-2b", "qwen3.5-4b"]
    assert all(set(listed[name]["first_question"]["seconds"]) == {"360p", "1080p"} for name in first_run)
    # The later families' smallest shapes in a run of their own, beside the default model again (360p only).
    later = {name: entry["first_question"] for name, entry in listed.items()
             if entry["first_question"] and entry["first_question"]["run"] == "2026-12-08"}
    assert set(later) == {"gemma4-e2b", "internvl3.5-1b", "smolvlm2-256m", "smolvlm2-500m"}
    assert all(set(first["seconds"]) == {"360p"} and first["default_model_360p"] == 20.3 and "bfloat16" in first["conditions"]
               for first in later.values())
    assert listed["qwen3.5-0.8b"]["first_question"]["default_model_360p"] == 50.3


def test_parameters_are_the_shapes_own(listed):
    """Published sizes (2.13B for Qwen3-VL-2B, tied embeddings counted once) within a percent."""
    assert 0.84e9 < listed["qwen3.5-0.8b"]["parameters"] < 0.86e9
    assert 2.12e9 < listed["qwen3-vl-2b"]["parameters"] < 2.14e9
    assert 8.7e9 < listed["qwen3-vl-8b"]["parameters"] < 8.8e9
    # SmolVLM2's checkpoints are stored in float32: 1.03 GB (256M), 2.03 GB (500M) of weights.
    assert 0.256e9 < listed["smolvlm2-256m"]["parameters"] < 0.258e9
    assert 0.506e9 < listed["smolvlm2-500m"]["parameters"] < 0.508e9
    assert 2.24e9 < listed["smolvlm2-2.2b"]["parameters"] < 2.26e9


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_the_count_is_what_a_saved_checkpoint_holds(build_family, model_type):
    folder = build_family(model_type)
    with safe_open(folder / "model.safetensors", "pt") as weights:
        saved = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    assert parameter_count(AutoConfig.from_pretrained(folder)) == saved


def fake_cache(root, model: str, files: dict[str, str]) -> None:
    """The hub cache's layout for `model` at one commit holding `files` (name: text)."""
    repository = root / f"models--{model.replace('/', '--')}"
    (repository / "refs").mkdir(parents=True)
    (repository / "refs" / "main").write_text("0" * 40)
    for name, text in files.items():
        path = repository / "snapshots" / ("0" * 40) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_weights_count_as_cached_only_when_every_shard_is_there(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    index = json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})
    fake_cache(tmp_path, "o/whole", {"config.json": "{}", "model.safetensors.index.json": index,
                                     "model-1.safetensors": "", "model-2.safetensors": ""})
    fake_cache(tmp_path, "o/half", {"model.safetensors.index.json": index, "model-1.safetensors": ""})
    fake_cache(tmp_path, "o/single", {"model.safetensors": ""})
    fake_cache(tmp_path, "o/config", {"config.json": "{}"})
    fake_cache(tmp_path, "o/broken", {"model.safetensors.index.json": "{", "model.safetensors": ""})
    cached = {name: catalog.weights_cached(f"o/{name}") for name in ("whole", "half", "single", "config", "broken", "absent")}
    assert cached == {"whole": True, "half": False, "single": True, "config": False, "broken": False, "absent": False}


def table_rows(lines: list[str]) -> dict[str, list[str]]:
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in preset_names()}
    assert list(rows) == preset_names()  # every preset's name whole, on a row of its own
    return rows


def test_the_table_marks_the_default_and_fits_100_columns(dytok_here, tmp_path, monkeypatch):
    """Piped without COLUMNS: 100 columns, the whole table."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("COLUMNS", raising=False)
    fake_cache(tmp_path, "Qwen/Qwen3-VL-2B-Instruct", {"model.safetensors": ""})
    result = dytok_here("models", env={"DYTOK_MODEL": "Qwen/Qwen3-VL-2B-Instruct"})
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100 and not any(line.endswith(" ") for line in lines)
    rows = table_rows(lines)
    assert rows["qwen3-vl-2b"][1:4] == ["Qwen/Qwen3-VL-2B-Instruct", "(default)", "qwen3_vl"]
    assert rows["qwen3-vl-2b"][-2:] == ["yes", "141"] and rows["qwen3-vl-8b"][-2:] == ["no", "—"]
    assert rows["qwen3.5-0.8b"][-4:] == ["853M", "57.7*", "no", "50"]
    assert "family column" not in result.stdout


def test_at_80_columns_no_name_is_cut(dytok_here):
    """COLUMNS is honoured on a pipe too; the family column gives way, and the legend says so."""
    result = dytok_here("models", env={"COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and "…" not in result.stdout
    assert max(len(line) for line in lines) <= 80 and not any(line.endswith(" ") for line in lines)
    rows = table_rows(lines)
    assert rows["llava-ov-0.5b"][:2] == ["llava-ov-0.5b", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"]
    assert rows["qwen3.5-0.8b"][1:5] == ["Qwen/Qwen3.5-0.8B", "(default)", "853M", "57.7*"]
    assert "The family column needs " in " ".join(result.stdout.split())


def test_narrower_than_the_names_the_table_keeps_them_whole(dytok_here):
    """The table keeps its 80 columns (a terminal wraps them) rather than cut a name; the legend fits."""
    result = dytok_here("models", env={"COLUMNS": "50"})
    lines = result.stdout.splitlines()
    rows = table_rows(lines)
    assert rows["llava-ov-0.5b"][1] == "llava-hf/llava-onevision-qwen2-0.5b-ov-hf" and "…" not in result.stdout
    legend = lines[lines.index(next(line for line in lines if line.startswith("model: "))):]
    assert max(len(line) for line in legend) <= 50 and not any(line.endswith(" ") for line in lines)
