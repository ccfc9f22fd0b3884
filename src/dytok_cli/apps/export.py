"""Keyframe images, their manifests and a contact sheet on disk, for `dytok inspect --export-keyframes`.

An export is built complete in a hidden directory beside the target and renamed into place, so no
one ever sees half of it and a failure leaves the target exactly as it was. Images are written at
decoded resolution with Pillow.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..config import DEFAULT_TOP, ImageFormat
from ..errors import InputError
from ..timecode import clock

MANIFEST_JSON = "keyframes.json"
MANIFEST_CSV = "keyframes.csv"
CONTACT_SHEET = "contact_sheet.png"
MANIFEST_FIELDS = ("rank", "index", "frame", "timestamp", "weight", "budget", "file")

# Contact-sheet geometry, in pixels. Fixed so a sheet's size follows from the frame count and the
# frames' aspect ratio alone (see `contact_sheet_size`).
THUMB_WIDTH = 160
SHEET_COLUMNS = 8
MARGIN = 6  # around each thumbnail; the top-K outline is drawn inside it
OUTLINE_WIDTH = 3
BAR_HEIGHT = 8
LABEL_HEIGHT = 14

BACKGROUND = (24, 24, 24)
OUTLINE = (255, 160, 0)
BAR_TRACK = (70, 70, 70)
BAR_FILL = (80, 160, 230)
LABEL = (235, 235, 235)

_PIL_FORMATS = {ImageFormat.jpg: "JPEG", ImageFormat.png: "PNG"}


@dataclass(frozen=True)
class Export:
    keyframes: list[dict[str, Any]]  # the manifest rows, in rank order
    contact_sheet: Path | None


def keyframe_name(rank: int, frame: int, timestamp: float, image_format: ImageFormat, rank_digits: int = 2) -> str:
    """`rank01_f000123_00m05.12s.jpg`: zero-padded so `ls` lists files by rank, with the time in view."""
    return f"rank{rank:0{rank_digits}d}_f{frame:06d}_{clock(timestamp, 'm')}s.{image_format.value}"


def encode_image(image: np.ndarray, image_format: ImageFormat) -> bytes:
    """An (H, W, 3) uint8 RGB frame as JPEG or PNG bytes."""
    buffer = io.BytesIO()
    options = {"quality": 95} if image_format is ImageFormat.jpg else {}
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=_PIL_FORMATS[image_format], **options)
    return buffer.getvalue()


def contact_sheet_size(num_frames: int, frame_height: int, frame_width: int) -> tuple[int, int]:
    """(width, height) of the sheet: min(F, 8) columns of cells 172 px wide, each cell the thumbnail
    (160 px wide, height to scale) plus 34 px for margins, budget bar and label."""
    columns = min(num_frames, SHEET_COLUMNS)
    rows = math.ceil(num_frames / columns)
    cell_width, cell_height = _cell_size(_thumb_height(frame_height, frame_width))
    return columns * cell_width, rows * cell_height


def _thumb_height(frame_height: int, frame_width: int) -> int:
    return max(1, round(THUMB_WIDTH * frame_height / frame_width))


def _cell_size(thumb_height: int) -> tuple[int, int]:
    return THUMB_WIDTH + 2 * MARGIN, thumb_height + 2 * MARGIN + BAR_HEIGHT + LABEL_HEIGHT


def thumbnail_origin(index: int, num_frames: int, frame_height: int, frame_width: int) -> tuple[int, int]:
    """Top-left pixel of frame `index`'s thumbnail on the sheet (frames fill rows left to right)."""
    columns = min(num_frames, SHEET_COLUMNS)
    cell_width, cell_height = _cell_size(_thumb_height(frame_height, frame_width))
    row, column = divmod(index, columns)
    return column * cell_width + MARGIN, row * cell_height + MARGIN


def contact_sheet(images: np.ndarray, frames: Sequence[dict[str, Any]], tokens_per_frame: int, top: int) -> Image.Image:
    """All sampled frames in time order, each with its budget as a bar under it (full width = every
    token kept) and the `top` highest-ranked frames outlined. `frames` are the record's frame entries."""
    num_frames, frame_height, frame_width = images.shape[:3]
    thumb_height = _thumb_height(frame_height, frame_width)
    sheet = Image.new("RGB", contact_sheet_size(num_frames, frame_height, frame_width), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for entry in frames:
        x, y = thumbnail_origin(entry["index"], num_frames, frame_height, frame_width)
        thumbnail = Image.fromarray(np.ascontiguousarray(images[entry["index"]])).resize(
            (THUMB_WIDTH, thumb_height), Image.Resampling.BILINEAR
        )
        sheet.paste(thumbnail, (x, y))
        if entry["rank"] <= top:
            left, top_edge = x - OUTLINE_WIDTH, y - OUTLINE_WIDTH
            right, bottom = x + THUMB_WIDTH - 1 + OUTLINE_WIDTH, y + thumb_height - 1 + OUTLINE_WIDTH
            draw.rectangle((left, top_edge, right, bottom), outline=OUTLINE, width=OUTLINE_WIDTH)
        bar_y = y + thumb_height + MARGIN
        draw.rectangle((x, bar_y, x + THUMB_WIDTH - 1, bar_y + BAR_HEIGHT - 1), fill=BAR_TRACK)
        filled = round(THUMB_WIDTH * entry["budget"] / tokens_per_frame)
        if filled:
            draw.rectangle((x, bar_y, x + filled - 1, bar_y + BAR_HEIGHT - 1), fill=BAR_FILL)
        rank = f"#{entry['rank']}  " if entry["rank"] <= top else ""
        label = f"{rank}{clock(entry['timestamp'])}  {entry['budget']}/{tokens_per_frame}"
        draw.text((x, bar_y + BAR_HEIGHT + 1), label, fill=LABEL)
    return sheet


def check_target(directory: Path, force: bool) -> None:
    """Refuse a target that would lose data, before any work is done: a file, or a non-empty
    directory without `force`."""
    if directory.is_symlink():
        # Renaming onto a link would replace the link, not the directory it points to.
        raise InputError(f"--export-keyframes {directory}: is a symbolic link; give the directory itself")
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--export-keyframes {directory}: exists and is not a directory")
    if directory.is_dir() and not force and any(directory.iterdir()):
        raise InputError(f"--export-keyframes {directory}: exists and is not empty (use --force to replace it)")


def export_keyframes(
    record: dict[str, Any],
    images: np.ndarray,
    directory: Path,
    *,
    top: int = DEFAULT_TOP,
    image_format: ImageFormat = ImageFormat.jpg,
    sheet: bool = False,
    force: bool = False,
) -> Export:
    """Write the `top` highest-ranked frames of an inspect record (capped at the frame count), their
    manifests and optionally a contact sheet into `directory`, all or nothing.

    `images` are the decoded frames, (F, H, W, 3) uint8 RGB, indexed by the record's frame `index`.
    """
    check_target(directory, force)
    ranked = sorted(record["frames"], key=lambda entry: entry["rank"])[: min(top, len(record["frames"]))]
    digits = max(2, len(str(len(ranked))))
    rows = [
        {
            "rank": entry["rank"],
            "index": entry["index"],
            "frame": entry["frame"],
            "timestamp": entry["timestamp"],
            "weight": entry["weight"],
            "budget": entry["budget"],
            "file": keyframe_name(entry["rank"], entry["frame"], entry["timestamp"], image_format, digits),
        }
        for entry in ranked
    ]
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".{directory.name}.{secrets.token_hex(4)}.partial"
        # mkdir, not mkdtemp: the published directory should get the user's usual permissions.
        staging.mkdir()
    except OSError as error:
        raise InputError(f"--export-keyframes {directory}: {error.strerror or error}") from None
    try:
        for row in rows:
            (staging / row["file"]).write_bytes(encode_image(images[row["index"]], image_format))
        if sheet:
            contact_sheet(images, record["frames"], record["tokens_per_frame"], len(rows)).save(staging / CONTACT_SHEET)
        _write_manifests(staging, record, rows, CONTACT_SHEET if sheet else None)
        _publish(staging, directory, force)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"--export-keyframes {directory}: {error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Export(rows, directory / CONTACT_SHEET if sheet else None)


def _write_manifests(folder: Path, record: dict[str, Any], rows: list[dict[str, Any]], sheet: str | None) -> None:
    manifest = {
        "video": record["video"],
        "question": record["question"],
        "model": record["model"],
        "prior_model": record["prior_model"],
        "method": record["method"],
        "ratio": record["ratio"],
        "frames": len(record["frames"]),
        "tokens_per_frame": record["tokens_per_frame"],
        "keyframes": rows,
        "contact_sheet": sheet,
    }
    (folder / MANIFEST_JSON).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with (folder / MANIFEST_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _publish(staging: Path, directory: Path, force: bool) -> None:
    """Move a finished export to `directory`. A missing or empty target is replaced by one rename;
    an existing one (with `force`) is moved aside first and deleted only once the new one is in place."""
    if not directory.exists() or not any(directory.iterdir()):
        os.replace(staging, directory)
        return
    if not force:  # filled by someone else since `check_target`
        raise InputError(f"--export-keyframes {directory}: exists and is not empty (use --force to replace it)")
    aside = directory.parent / f".{directory.name}.{secrets.token_hex(4)}.old"
    os.rename(directory, aside)
    try:
        os.rename(staging, directory)
    except BaseException:
        os.rename(aside, directory)
        raise
    shutil.rmtree(aside, ignore_errors=True)
