"""Model families, one adapter file each, found by `config.model_type`; and loading by name."""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import torch

from ..config import Device, DType
from ..errors import ModelError
from .base import VideoModel

_REGISTRY: dict[str, type[VideoModel]] = {}


def register(adapter: type[VideoModel]) -> type[VideoModel]:
    _REGISTRY[adapter.model_type] = adapter
    return adapter


def _discover_families() -> None:
    """Import every adapter module of this package; each registers itself, so a family is one file."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def supported_model_types() -> list[str]:
    _discover_families()
    return sorted(_REGISTRY)


def resolve_device(device: Device) -> torch.device:
    if device is Device.auto:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device is Device.cuda and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if device is Device.mps and not torch.backends.mps.is_available():
        raise ModelError("--device mps was asked for, but PyTorch sees no MPS device")
    return torch.device(device.value)


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    if dtype is DType.auto:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    return getattr(torch, dtype.value)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _unreachable(name: str, reason: str) -> ModelError:
    return ModelError(
        f"cannot load model {name!r}: {reason}; pass --model PATH for a local model directory, "
        "or set HF_HUB_OFFLINE=1 to use only models already in the Hugging Face cache"
    )


def load_model(name: str, *, device: Device, dtype: DType, trust_remote_code: bool) -> VideoModel:
    """Load a model by hub id or local directory and wrap it in its family's adapter."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    path = Path(name).expanduser()
    if _looks_like_path(name) and not path.exists():
        raise ModelError(f"no such model directory: {name} (pass --model PATH, or a hub id with HF_HUB_OFFLINE unset)")
    if path.exists() and not path.is_dir():
        raise ModelError(f"--model {name} is a file; pass --model PATH to a model directory or a hub id")
    source = str(path) if path.exists() else name
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        reason = "it is not a model directory" if path.exists() else "not in the local cache and not reachable on the hub"
        raise _unreachable(name, reason) from error
    except ValueError as error:  # unrecognised model type, or remote code refused
        raise ModelError(f"cannot load model {name!r}: {str(error).splitlines()[0]}") from error
    _discover_families()
    adapter = _REGISTRY.get(config.model_type)
    if adapter is None:
        raise ModelError(
            f"model {name!r} is a {config.model_type!r} model; dytok supports: {', '.join(supported_model_types())}"
        )
    target = resolve_device(device)
    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            source,
            config=config,
            dtype=resolve_dtype(dtype, target),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    except OSError as error:
        raise _unreachable(name, str(error).splitlines()[0].rstrip(".")) from error
    return adapter(name, model.to(target).eval(), processor)


def presets() -> dict[str, Path]:
    """Shipped model shapes (configs only, values from the public checkpoints) by name."""
    folder = Path(__file__).resolve().parent.parent / "presets"
    return {path.stem: path for path in sorted(folder.glob("*.json"))}


def load_random_model(name: str, *, device: Device, dtype: DType) -> VideoModel:
    """A model with the real shape of `name` (a preset, hub id or local directory) and random
    weights: compute cost does not depend on the weights, so timings need no download. There is
    no tokenizer; prompts are synthetic token ids of realistic length."""
    import json

    from transformers import AutoConfig, AutoModelForImageTextToText

    shipped = presets()
    if name in shipped:
        description = json.loads(shipped[name].read_text())
        description.pop("source", None)
        config = AutoConfig.for_model(description.pop("model_type"), **description)
    else:
        path = Path(name).expanduser()
        try:
            config = AutoConfig.from_pretrained(str(path) if path.exists() else name)
        except (OSError, ValueError) as error:
            raise _unreachable(name, f"not a preset ({', '.join(shipped)}) and its config cannot be read") from error
    _discover_families()
    adapter = _REGISTRY.get(config.model_type)
    if adapter is None:
        raise ModelError(f"{name!r} is a {config.model_type!r} model; dytok supports: {', '.join(supported_model_types())}")
    target = resolve_device(device)
    model = AutoModelForImageTextToText.from_config(config, dtype=resolve_dtype(dtype, target))
    return adapter(name, model.to(target).eval(), adapter.processor_for(config))


__all__ = ["VideoModel", "load_model", "load_random_model", "presets", "register", "supported_model_types"]
