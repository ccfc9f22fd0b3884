"""What only a GPU makes necessary: waiting for its queued work before a clock is read, and giving back the
memory its allocator keeps.

CUDA runs kernels asynchronously: a call returns once its work is queued, so a clock read after it
measures the launch, and the work is counted by whichever later stage waits for it first. Every stage
boundary that reads a clock reads it through `clock`, which waits for the device first; on a CPU there is
nothing to wait for and it costs nothing. torch is imported only on a CUDA device, so modules that must
not load it (`methods`) can import this one.
"""

from __future__ import annotations

import gc
from time import perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def synchronize(device: torch.device | None) -> None:
    """Wait until the work queued on `device` is done; work on the CPU (or None: no device) is done when
    its call returns."""
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def clock(device: torch.device | None = None) -> float:
    """`time.perf_counter()` once the work queued on `device` is done: a stage boundary's time."""
    synchronize(device)
    return perf_counter()


def free_cached_memory() -> None:
    """Drop what only a reference cycle still holds, and hand the CUDA allocator's cached blocks back to
    the driver, so the next allocation after an out-of-memory error finds whole free memory."""
    gc.collect()
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
