"""Frames that repeat the one before: found on the decoded pixels, so the vision tower encodes each still
once. Pure functions over arrays, no model.

The vision towers dytok drives encode each of the tower's frames on its own (LLaVA-OneVision's SigLIP a
frame at a time; Qwen's towers attend within one temporal patch at a time), with positions that do not
depend on which frame it is, so a frame whose pixels equal another's has that frame's features: only
its place in the video differs, and that is the prompt's business, not the tower's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Repeats:
    """Which of a video's G tower frames to encode, and whose features each takes."""

    encoded: tuple[int, ...]  # (U,) the tower frames to run through the tower, in order
    source: tuple[int, ...]  # (G,) for each tower frame, its row among the U encoded ones

    @classmethod
    def none(cls, count: int) -> Repeats:
        """Every one of `count` tower frames encoded."""
        return cls(tuple(range(count)), tuple(range(count)))

    @property
    def reused(self) -> int:
        """Tower frames that take the features of one encoded before them."""
        return len(self.source) - len(self.encoded)

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """(U, ...) per encoded tower frame -> (G, ...) per tower frame."""
        if not self.reused:
            return values
        return values[torch.tensor(self.source, device=values.device)]


def tower_frames(images: np.ndarray, per_group: int) -> np.ndarray:
    """(F, H, W, 3) sampled frames -> (G, per_group, H, W, 3): the tower's frames, `per_group` consecutive
    sampled frames each (Qwen's temporal patches hold 2), the last filled with copies of the last frame
    as the processors fill it."""
    missing = -len(images) % per_group
    if missing:
        images = np.concatenate([images, np.repeat(images[-1:], missing, axis=0)])
    return images.reshape(-1, per_group, *images.shape[1:])


def find_repeats(groups: np.ndarray, tolerance: int = 0) -> Repeats:
    """(G, ...) tower frames of uint8 pixels -> which to encode: a frame none of whose pixels differs by more
    than `tolerance` levels from the last frame encoded takes that frame's features; any other is encoded.
    At 0, bit-for-bit equal: exactly what encoding it would give. Above 0 a lossy approximation, for the
    frames a lossy codec makes of a still (measured: a slide's frames in H.264 differ by up to 38 levels,
    a cut by 255), which misses a change fainter than `tolerance`. Against the last frame encoded, not the
    one before: a slow fade cannot creep past the tolerance a frame at a time."""
    encoded, source = [0], [0]
    for index in range(1, len(groups)):
        if not _within(groups[index], groups[encoded[-1]], tolerance):
            encoded.append(index)
        source.append(len(encoded) - 1)
    return Repeats(tuple(encoded), tuple(source))


def _within(frame: np.ndarray, reference: np.ndarray, tolerance: int) -> bool:
    if tolerance == 0:
        return np.array_equal(frame, reference)
    return int(np.abs(frame.astype(np.int16) - reference).max()) <= tolerance
