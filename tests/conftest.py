"""Shared fixtures: tiny models of the real classes and small clips, built offline once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Test helper modules (clips, tiny_models) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

# Nothing in the suite may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_llava_onevision

    return build_llava_onevision(tmp_path_factory.mktemp("models") / "tiny-llava-ov")


@pytest.fixture(scope="session")
def tiny_llava_assistant_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller, differently initialised model of the same family: a stand-in for a 0.5B assistant."""
    from tiny_models import build_llava_onevision

    path = tmp_path_factory.mktemp("models") / "tiny-llava-ov-assistant"
    return build_llava_onevision(path, seed=1, text_layers=3, hidden=32, heads=2, kv_heads=1)


@pytest.fixture(scope="session")
def tiny_llava(tiny_llava_dir: Path):
    from dytok_cli.config import Device, DType
    from dytok_cli.models import load_model

    return load_model(str(tiny_llava_dir), device=Device.cpu, dtype=DType.float32, trust_remote_code=False)


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clips import write_clip

    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", n_frames=24, size=(64, 48), fps=8.0)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_qwen2_5_vl

    return build_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_qwen(tiny_qwen_dir: Path):
    from dytok_cli.config import Device, DType
    from dytok_cli.models import load_model

    return load_model(str(tiny_qwen_dir), device=Device.cpu, dtype=DType.float32, trust_remote_code=False)
