"""On-disk cache of the query-independent work for a video (frames, vision features, selector scores, and
what is said in it, transcribed from its audio).

Entries are safetensors files named by a hash of the video's bytes and of everything else that
changes the result (sampling, --max-pixels, backend, model, dtype, device). Writes go to a temporary
file that is renamed into place, so concurrent runs never see half an entry; an entry that does not
load, or whose stored digest does not match its tensors, is ignored and recomputed, never trusted.

Entries get the umask's mode, as any new file, not a private one: a cache directory shared by a group
(a cluster's scratch space) is a normal use, and who may read the entries is the directory's to say
(a cache directory of mode 0700 keeps them private whatever their own mode).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..files import atomic_path, write_atomically
from ..types import EncodedVideo, Frames, Line, Transcript, Visual

_FORMAT = 4  # bump when the stored layout or the sampling changes; old entries then simply miss
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _tuples(value: Any) -> Any:
    """JSON brings sequences back as lists; the dataclasses hold tuples."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def _flatten(prefix: str, encoded: EncodedVideo, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    for field in dataclasses.fields(encoded):
        name, value = f"{prefix}.{field.name}", getattr(encoded, field.name)
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous()
        elif isinstance(value, tuple) and value and all(isinstance(item, torch.Tensor) for item in value):
            # A tuple of tensors (DeepStack features) is stored as name.0, name.1, ... and its length.
            for position, item in enumerate(value):
                tensors[f"{name}.{position}"] = item.detach().cpu().contiguous()
            meta[name] = {"tensors": len(value)}
        else:
            meta[name] = value


def _unflatten(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device) -> EncodedVideo:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(EncodedVideo):
        name = f"{prefix}.{field.name}"
        if name in tensors:
            values[field.name] = tensors[name].to(device)
        elif isinstance(meta[name], dict):
            values[field.name] = tuple(tensors[f"{name}.{position}"].to(device) for position in range(meta[name]["tensors"]))
        else:
            values[field.name] = _tuples(meta[name])
    return EncodedVideo(**values)


class VisualCache:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._digests: dict[tuple[str, int, int], str] = {}

    def digest(self, video: str | os.PathLike) -> str:
        """`file_digest(video)`, read once for each version of the file (its size and modification time):
        a long video's windows are each an entry, and hashing gigabytes for every one would cost more than
        the entry saves."""
        stat = os.stat(video)
        version = (os.fspath(video), stat.st_size, stat.st_mtime_ns)
        if version not in self._digests:
            self._digests[version] = file_digest(video)
        return self._digests[version]

    def key(self, video: str | os.PathLike, identity: dict[str, Any]) -> str:
        description = json.dumps({"format": _FORMAT, "file": self.digest(video), **identity}, sort_keys=True)
        return hashlib.sha256(description.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def load(self, key: str, video: str | os.PathLike, device: torch.device) -> Visual | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            tensors = load_file(path)
            with open(path, "rb") as handle:  # the metadata lives in the header
                header_size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(header_size))
            meta = json.loads(header["__metadata__"]["dytok"])
            if meta.get("digest") != _tensors_digest(tensors):
                return None
            details = {name: _tuples(value) for name, value in meta["frames"].items()}
            frames = Frames(images=tensors.pop("frames.images").numpy(), **details)
            encoded = _unflatten("encoded", tensors, meta["encoded"], device)
            prior = _unflatten("prior", tensors, meta["prior"], device) if meta["prior"] is not None else encoded
        except (OSError, ValueError, KeyError, TypeError, SafetensorError):
            return None  # unreadable or foreign: recompute and overwrite
        return Visual(str(video), frames, encoded, prior, {"decode_s": 0.0, "vision_s": 0.0}, cached=True)

    def store(self, key: str, visual: Visual) -> None:
        tensors: dict[str, torch.Tensor] = {"frames.images": torch.from_numpy(np.ascontiguousarray(visual.frames.images))}
        encoded_meta: dict[str, Any] = {}
        _flatten("encoded", visual.encoded, tensors, encoded_meta)
        prior_meta: dict[str, Any] | None = None
        if visual.prior_encoded is not visual.encoded:
            prior_meta = {}
            _flatten("prior", visual.prior_encoded, tensors, prior_meta)
        frames = {f.name: getattr(visual.frames, f.name) for f in dataclasses.fields(Frames) if f.name != "images"}
        meta = {"frames": frames, "encoded": encoded_meta, "prior": prior_meta, "digest": _tensors_digest(tensors)}
        with atomic_path(self._path(key)) as temporary:
            save_file(tensors, temporary, metadata={"dytok": json.dumps(meta)})

    def _transcript_path(self, key: str) -> Path:
        return self.directory / f"{key}.transcript.json"

    def load_transcript(self, key: str) -> Transcript | None:
        """What `store_transcript` kept under `key`; None when absent, unreadable or foreign."""
        try:
            stored = json.loads(self._transcript_path(key).read_text(encoding="utf-8"))
            lines = tuple(Line(float(start), float(end), str(text)) for start, end, text in stored["lines"])
            return Transcript(stored["source"], lines, stored["note"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store_transcript(self, key: str, transcript: Transcript) -> None:
        lines = [[line.start, line.end, line.text] for line in transcript.lines]
        data = json.dumps({"source": transcript.source, "lines": lines, "note": transcript.note}, ensure_ascii=False)
        write_atomically(self._transcript_path(key), data)
