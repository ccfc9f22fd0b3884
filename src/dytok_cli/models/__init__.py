"""Model families, one adapter file each, found by `config.model_type`; and loading by name."""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from typing import Any

import torch

from ..config import PRESETS_DIR, Device, DType, shape_name_problem
from ..errors import ModelError, ModelUnavailable
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


# CPU flags (as Linux names them) of native bfloat16 arithmetic: AVX512-BF16 and AMX.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes in bfloat16 natively; elsewhere PyTorch emulates it, slower than float32.

    PyTorch has no public query for it (`torch.backends.cpu.get_cpu_capability` says "AVX512" with or
    without BF16), so the kernel's CPU flags decide; without them (not Linux), no.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(
        not _NATIVE_BF16_FLAGS.isdisjoint(line.split(":", 1)[1].split())
        for line in text.splitlines()
        if line.startswith("flags")
    )


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    if dtype is DType.auto:
        if device.type == "cuda":
            # Below compute capability 8 (T4, V100) bfloat16 is emulated, slower than float16, and the
            # attention falls back to its slowest kernel: such a card counts as one without it.
            return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
        if device.type == "mps":
            return torch.float16
        # Measured on an AVX512-BF16 CPU: the vision tower 1.8x and the LLM prefill 1.9x faster than float32.
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return getattr(torch, dtype.value)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _unreachable(name: str, reason: str, flag: str = "--model", *, available: bool = False,
                 random_weights: bool = False) -> ModelError:
    """Why `name` (given with `flag`) does not load, and what loads instead. `available`: the failure is the
    model's or the name's (exit 2); otherwise the model is not to be had now (`ModelUnavailable`, exit 3), and
    random weights in its shape, which need no download, are named too where they apply."""
    instead = f"pass {flag} PATH for a local model directory"
    if not available and flag == "--model" and not random_weights:
        instead += ", or --random-weights to run without a download"
    return (ModelError if available else ModelUnavailable)(f"cannot load model {name!r}: {reason}; {instead}")


# A reachable hub answers a HEAD in well under a second; a network that drops packets would
# otherwise hold the first run for the hub library's 10 s, and then its retries for 23 s more.
_HUB_PROBE_TIMEOUT_S = 5.0


def _hub_files_only_local(name: str, flag: str = "--model", *, random_weights: bool = False) -> bool:
    """Whether `name` (a hub id) must load from the local cache alone; raises when it cannot load at all:
    `ModelUnavailable` when there is no network or the hub fails, `ModelError` when the hub says no.

    The hub library retries an unreachable hub with backoff for half a minute, printing each try,
    whenever a file is not cached yet. One short request first tells a working network from none,
    so offline the answer comes at once: the cache if it has the model, else one line.
    """
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_url,
        is_offline_mode,
        try_to_load_from_cache,
    )
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
    )

    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except HFValidationError:
        raise ModelError(f"{flag} {name!r} is neither a local model directory nor a valid hub id") from None
    if is_offline_mode():
        if not cached:
            raise _unreachable(name, "not in the local cache (HF_HUB_OFFLINE is set, so nothing is downloaded)", flag,
                               random_weights=random_weights)
        return True
    available = True  # the hub answered about the model itself: asking again gives the same answer
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=_HUB_PROBE_TIMEOUT_S)
    except GatedRepoError:
        reason = "the hub repository is gated: accept its terms on the hub and log in with `hf auth login`"
    except RepositoryNotFoundError:
        reason = "no such model on the hub (or it is private: log in with `hf auth login`)"
    except EntryNotFoundError:
        reason = "the hub repository has no config.json: not a transformers model"
    except HfHubHTTPError as error:  # a server error, a rate limit: the hub failing, not the name
        reason, available = f"not in the local cache, and the hub answered {error.response.status_code}", False
    except Exception as error:  # noqa: BLE001 - the network's failures come in many types; all mean offline
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason, available = f"not in the local cache, and the hub is not reachable ({cause})", False
    else:
        return False
    if cached:
        return True
    raise _unreachable(name, reason, flag, available=available, random_weights=random_weights)


def fetch_failed(error: BaseException) -> bool:
    """Whether `error`, raised while loading a model, came from fetching its files (not in the cache and no
    network, the hub failing, a download broken off) rather than from the model (a file it lacks, a name or
    revision the hub does not know): read from the hub library's errors in its chain."""
    import httpx
    from huggingface_hub.errors import (
        BadRequestError,
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, LocalEntryNotFoundError):  # before its base class EntryNotFoundError
            return True
        if isinstance(cause, (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, BadRequestError)):
            return False
        if isinstance(cause, (HfHubHTTPError, httpx.TransportError, ConnectionError, TimeoutError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _load_failure(name: str, error: Exception) -> ModelError | None:
    """`error` from `from_pretrained(name)` as the one line to report, or None where it is not about
    loading (a bug is not dressed up as a missing model)."""
    reason = str(error).splitlines()[0].rstrip(".") if str(error) else type(error).__name__
    if fetch_failed(error):
        return _unreachable(name, reason)
    return _unreachable(name, reason, available=True) if isinstance(error, OSError) else None


def model_source(name: str, flag: str = "--model") -> tuple[str, bool]:
    """Where `from_pretrained` loads `name` (given with `flag`) from, and whether from local files only:
    a local model directory, or a hub id (from the cache alone when the hub cannot be reached)."""
    path = Path(name).expanduser()
    if _looks_like_path(name) and not path.exists():
        raise ModelError(f"no such model directory: {name} (pass {flag} PATH, or a hub id with HF_HUB_OFFLINE unset)")
    if path.exists() and not path.is_dir():
        raise ModelError(f"{flag} {name} is a file; pass {flag} PATH to a model directory or a hub id")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"no config.json in {name}: not a transformers model directory")
        return str(path), True
    return name, _hub_files_only_local(name, flag)


def load_model(name: str, *, device: Device, dtype: DType, trust_remote_code: bool) -> VideoModel:
    """Load a model by hub id or local directory and wrap it in its family's adapter."""
    source, local_only = model_source(name)
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    options = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except ValueError as error:  # unrecognised model type, or remote code refused
        raise ModelError(f"cannot load model {name!r}: {str(error).splitlines()[0]}") from error
    except Exception as error:
        if (failure := _load_failure(name, error)) is None:
            raise
        raise failure from error
    _discover_families()
    adapter = _REGISTRY.get(config.model_type)
    if adapter is None:
        raise ModelError(
            f"model {name!r} is a {config.model_type!r} model; dytok supports: {', '.join(supported_model_types())}"
        )
    target = resolve_device(device)
    try:
        processor = AutoProcessor.from_pretrained(source, **options)
        # Straight onto the device: loaded on the host first, a 7B checkpoint would take its whole size in
        # host memory and minutes of copying on its way to a GPU.
        model = AutoModelForImageTextToText.from_pretrained(
            source, config=config, dtype=resolve_dtype(dtype, target), use_safetensors=True,
            device_map={"": str(target)}, **options
        )
    except Exception as error:
        if (failure := _load_failure(name, error)) is None:
            raise
        raise failure from error
    return adapter(name, model.eval(), processor)


def presets() -> dict[str, Path]:
    """Shipped model shapes (configs only, values from the public checkpoints) by name."""
    return {path.stem: path for path in sorted(PRESETS_DIR.glob("*.json"))}


def preset_for(name: str) -> Path | None:
    """The shipped preset `name` names: by its own name, or by the hub id of the checkpoint it is the
    shape of (so the default model runs with random weights offline); None for neither."""
    import json

    shipped = presets()
    if name in shipped:
        return shipped[name]
    return next((path for path in shipped.values() if json.loads(path.read_text()).get("source") == name), None)


def preset_config(preset: Path) -> Any:
    """The `transformers` config of the shipped preset at `preset`: its checkpoint's shape."""
    import json

    from transformers import AutoConfig

    description = json.loads(preset.read_text())
    description.pop("source", None)
    return AutoConfig.for_model(description.pop("model_type"), **description)


def parameter_count(config: Any) -> int:
    """The parameters of a model of `config`, counted without weights: the model is built on the meta
    device, which allocates no memory (0.15 to 0.5 s a shipped preset on a 2-core CPU). Tied weights
    count once, as a checkpoint stores them, and so do the buffers it stores (Gemma 4's per-layer scalars)."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    # What `state_dict` holds is what a checkpoint stores; a tied weight is one tensor under two names.
    stored = {id(tensor): tensor for tensor in model.state_dict(keep_vars=True).values()}
    return sum(tensor.numel() for tensor in stored.values())


def load_random_model(name: str, *, device: Device, dtype: DType) -> VideoModel:
    """A model with the real shape of `name` (a preset, the hub id of one, another hub id or a local
    directory) and random weights: compute cost does not depend on the weights, so timings need no
    download. There is no tokenizer; prompts are synthetic token ids of realistic length."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    shipped = presets()
    if problem := shape_name_problem("--model", name):
        raise ModelError(problem)
    preset = preset_for(name)
    if preset is not None:
        config = preset_config(preset)
    else:
        path = Path(name).expanduser()
        local_only = path.exists() or _hub_files_only_local(name, random_weights=True)
        try:
            config = AutoConfig.from_pretrained(str(path) if path.exists() else name, local_files_only=local_only)
        except (OSError, ValueError) as error:
            raise _unreachable(name, f"not a preset ({', '.join(shipped)}) and its config cannot be read",
                               available=path.exists() or isinstance(error, ValueError), random_weights=True) from error
    _discover_families()
    adapter = _REGISTRY.get(config.model_type)
    if adapter is None:
        raise ModelError(f"{name!r} is a {config.model_type!r} model; dytok supports: {', '.join(supported_model_types())}")
    target = resolve_device(device)
    # Built where it runs: initialising a 7B shape at random takes the CPU minutes, and its copy would
    # hold the whole model in host memory on its way to the GPU.
    with target:
        model = AutoModelForImageTextToText.from_config(config, dtype=resolve_dtype(dtype, target))
    return adapter(name, model.eval(), adapter.processor_for(config))


__all__ = [
    "VideoModel", "fetch_failed", "load_model", "load_random_model", "model_source", "parameter_count", "preset_config",
    "preset_for", "presets", "register", "resolve_device", "resolve_dtype", "supported_model_types",
]
