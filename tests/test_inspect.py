"""`dytok inspect`: the budgets table, the JSON record and keyframe export, against `ask` and the files."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import dytok_in_this_process, modes, plain_modes
from PIL import Image

from dytok_cli import render
from dytok_cli.apps import export
from dytok_cli.timecode import clock
from dytok_cli.config import Device, DType, ImageFormat, Method, Settings
from dytok_cli.errors import InputError
from dytok_cli.pipeline import Pipeline
from dytok_cli.record import answer_record, frame_ranks, inspect_record

QUESTION = "when does the dog jump?"
FRAMES = 6
RATIO = 0.5
TABLE_ROW = re.compile(
    r"^\s*(?P<index>\d+)\s+(?P<frame>\d+)\s+(?P<time>\d\d:\d\d\.\d\d)\s+(?P<weight>\d\.\d{4})\s+(?P<rank>\d+)"
    r"\s+(?P<budget>\d+)\s+(?P<kept>\d+\.\d)%\s+(?P<dominant>\d+)/(?P<contextual>\d+)(\s|$)"  # an empty bar ends the line
)
KEYFRAME_NAME = re.compile(r"^rank\d{2}_f\d{6}_\d{2}m\d{2}\.\d{2}s\.(png|jpg)$")


# --- library level ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inspected(tiny_llava_dir, tiny_llava, clip) -> SimpleNamespace:
    settings = Settings(
        model=str(tiny_llava_dir), frames=FRAMES, ratio=RATIO, device=Device.cpu, dtype=DType.float32,
        max_new_tokens=2, decode_timeout=None, method=Method.dytok,
    )
    pipeline = Pipeline(settings, model=tiny_llava)
    plan = pipeline.plan(clip, QUESTION)
    record = inspect_record(plan, settings, pipeline.prior_name)
    return SimpleNamespace(settings=settings, pipeline=pipeline, plan=plan, record=record, images=plan.frames.images)


def table_rows(text: str) -> list[dict[str, str]]:
    return [match.groupdict() for line in text.splitlines() if (match := TABLE_ROW.match(line))]


def test_ranks_order_frames_by_weight_and_break_ties_by_time():
    assert frame_ranks([0.1, 0.3, 0.3, 0.2, 0.1]) == [4, 1, 2, 3, 5]
    assert frame_ranks([0.25] * 4) == [1, 2, 3, 4]


def test_record_is_the_ask_record_without_answer_plus_rank(inspected, tiny_llava, clip):
    answer = Pipeline(inspected.settings, model=tiny_llava).ask(clip, QUESTION)
    asked = answer_record(answer, inspected.settings, inspected.pipeline.prior_name)
    record = inspected.record
    assert set(record) == set(asked) - {"answer", "reasoning"}
    without_rank = [{key: value for key, value in frame.items() if key != "rank"} for frame in record["frames"]]
    assert without_rank == asked["frames"]
    assert record["visual_tokens"] == asked["visual_tokens"] == {"full": FRAMES * 16, "kept": 48}
    by_rank = sorted(record["frames"], key=lambda frame: frame["rank"])
    assert [frame["rank"] for frame in by_rank] == list(range(1, FRAMES + 1))
    assert [frame["weight"] for frame in by_rank] == sorted((frame["weight"] for frame in by_rank), reverse=True)
    timings = record["timings"]
    assert timings["generate_s"] == 0  # nothing is generated; dytok-fastv's pass to layer K is prefill_s
    parts = timings["decode_s"] + timings["vision_s"] + timings["prior_s"] + timings["prefill_s"]
    assert timings["total_s"] == pytest.approx(parts, abs=1e-3)


def test_table_has_one_row_per_frame_with_the_record_budgets(inspected, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    render.budgets_table(inspected.record, inspected.pipeline.prior_layers)
    text = capsys.readouterr().out
    rows = table_rows(text)
    frames = inspected.record["frames"]
    assert [int(row["index"]) for row in rows] == list(range(FRAMES))
    assert [int(row["budget"]) for row in rows] == [frame["budget"] for frame in frames]
    assert [int(row["rank"]) for row in rows] == [frame["rank"] for frame in frames]
    assert [int(row["frame"]) for row in rows] == [frame["frame"] for frame in frames]
    assert [row["time"] for row in rows] == [clock(frame["timestamp"]) for frame in frames]
    assert [int(row["dominant"]) + int(row["contextual"]) for row in rows] == [frame["budget"] for frame in frames]
    assert "96 → 48" in text and "ratio 0.5" in text and "layers 2-3" in text  # the tiny model has 4 layers
    assert max(len(line) for line in text.splitlines()) <= 80


def test_table_without_colour_keeps_its_bars(inspected, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # as on a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    render.budgets_table(inspected.record, inspected.pipeline.prior_layers)
    text = capsys.readouterr().out
    parameters = {int(p) for codes in re.findall(r"\x1b\[([0-9;]*)m", text) for p in codes.split(";") if p}
    assert not parameters & {*range(30, 39), *range(40, 49), *range(90, 98)}
    assert "█" in text


def test_export_writes_the_top_k_frames_by_rank(inspected, tmp_path):
    target = tmp_path / "keyframes"
    written = export.export_keyframes(inspected.record, inspected.images, target, top=3, image_format=ImageFormat.png)
    images = sorted(name for name in os.listdir(target) if name.endswith(".png"))
    assert sorted(os.listdir(target)) == sorted([*images, "keyframes.json", "keyframes.csv"])
    assert len(images) == 3 and all(KEYFRAME_NAME.match(name) for name in images)

    frames = inspected.record["frames"]
    heaviest = sorted(frames, key=lambda frame: (-frame["weight"], frame["index"]))[:3]
    manifest = json.loads((target / "keyframes.json").read_text())
    rows = manifest["keyframes"]
    assert [row["file"] for row in rows] == images  # `ls` order is rank order
    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert [row["index"] for row in rows] == [frame["index"] for frame in heaviest]
    assert written.keyframes == rows and manifest["contact_sheet"] is None
    for row in rows:
        frame = frames[row["index"]]
        assert (row["frame"], row["timestamp"], row["weight"], row["budget"]) == (
            frame["frame"], frame["timestamp"], frame["weight"], frame["budget"]
        )
        assert f"_f{frame['frame']:06d}_{clock(frame['timestamp'], 'm')}s." in row["file"]
        decoded = cv2.cvtColor(cv2.imread(str(target / row["file"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decoded, inspected.images[row["index"]])  # PNG is lossless

    with (target / "keyframes.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [{**row, "rank": int(row["rank"]), "index": int(row["index"]), "frame": int(row["frame"]),
             "timestamp": float(row["timestamp"]), "weight": float(row["weight"]), "budget": int(row["budget"])}
            for row in table] == rows


def test_jpeg_by_default_at_decoded_resolution_and_top_capped_at_frames(inspected, tmp_path):
    target = tmp_path / "keyframes"
    export.export_keyframes(inspected.record, inspected.images, target, top=50)
    images = sorted(name for name in os.listdir(target) if name.endswith(".jpg"))
    assert len(images) == FRAMES
    for name, row in zip(images, json.loads((target / "keyframes.json").read_text())["keyframes"]):
        with Image.open(target / name) as image:
            assert image.format == "JPEG"
            assert np.asarray(image.convert("RGB")).shape == inspected.images[row["index"]].shape


def test_contact_sheet_size_and_marks(inspected, tmp_path):
    target = tmp_path / "keyframes"
    export.export_keyframes(inspected.record, inspected.images, target, top=2, sheet=True)
    assert json.loads((target / "keyframes.json").read_text())["contact_sheet"] == "contact_sheet.png"
    _, height, width, _ = inspected.images.shape
    thumb_height = round(160 * height / width)
    with Image.open(target / "contact_sheet.png") as image:
        assert image.format == "PNG"
        sheet = np.asarray(image.convert("RGB"))
    assert sheet.shape[:2] == (thumb_height + 34, FRAMES * 172)  # the documented formula, one row
    for frame in inspected.record["frames"]:
        x, y = export.thumbnail_origin(frame["index"], FRAMES, height, width)
        outline = tuple(sheet[y + thumb_height // 2, x - 2])
        assert outline == (export.OUTLINE if frame["rank"] <= 2 else export.BACKGROUND)
        bar_start = tuple(sheet[y + thumb_height + export.MARGIN + 1, x])
        assert bar_start == (export.BAR_FILL if frame["budget"] else export.BAR_TRACK)


def test_contact_sheet_wraps_after_eight_frames():
    images = np.zeros((11, 30, 40, 3), np.uint8)
    frames = [{"index": i, "rank": i + 1, "timestamp": i / 2, "budget": i} for i in range(11)]
    sheet = export.contact_sheet(images, frames, tokens_per_frame=16, top=3)
    assert sheet.size == export.contact_sheet_size(11, 30, 40) == (8 * 172, 2 * (120 + 34))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.iterdir()}


def test_non_empty_target_is_refused_and_left_alone(inspected, tmp_path):
    target = tmp_path / "keyframes"
    export.export_keyframes(inspected.record, inspected.images, target, top=2)
    before = snapshot(target)
    with pytest.raises(InputError, match="not empty.*--force"):
        export.export_keyframes(inspected.record, inspected.images, target, top=4)
    assert snapshot(target) == before
    assert os.listdir(tmp_path) == ["keyframes"]


def test_an_empty_directory_or_force_is_replaced_whole(inspected, tmp_path):
    target = tmp_path / "keyframes"
    target.mkdir()
    export.export_keyframes(inspected.record, inspected.images, target, top=2)
    assert len(os.listdir(target)) == 2 + 2
    export.export_keyframes(inspected.record, inspected.images, target, top=4, image_format=ImageFormat.png, force=True)
    names = os.listdir(target)
    assert len(names) == 4 + 2 and not [name for name in names if name.endswith(".jpg")]
    assert os.listdir(tmp_path) == ["keyframes"]  # nothing staged or set aside is left beside it


def test_the_export_and_its_files_get_the_mode_mkdir_and_open_would(inspected, tmp_path, umask):
    """Staged in a directory of its own that is renamed into place: made by mkdir, not mkdtemp (0700)."""
    target = tmp_path / "keyframes"
    export.export_keyframes(inspected.record, inspected.images, target, top=2, sheet=True)
    assert len(os.listdir(target)) == 2 + 3  # the frames, the sheet and the two manifests
    assert modes(target) == plain_modes(target, umask)


def test_a_file_is_never_replaced(inspected, tmp_path):
    target = tmp_path / "keyframes"
    target.write_text("mine")
    with pytest.raises(InputError, match="not a directory"):
        export.export_keyframes(inspected.record, inspected.images, target, force=True)
    assert target.read_text() == "mine"


@pytest.fixture
def encoder_failing_on_second_image(monkeypatch):
    calls = []
    encode = export.encode_image

    def failing(image: np.ndarray, image_format: ImageFormat) -> bytes:
        calls.append(image_format)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return encode(image, image_format)

    monkeypatch.setattr(export, "encode_image", failing)
    return calls


def test_failed_export_leaves_no_target(inspected, tmp_path, encoder_failing_on_second_image):
    target = tmp_path / "keyframes"
    with pytest.raises(InputError, match="No space left on device"):
        export.export_keyframes(inspected.record, inspected.images, target, top=3)
    assert len(encoder_failing_on_second_image) == 2
    assert os.listdir(tmp_path) == []


def test_failed_forced_export_keeps_the_old_one(inspected, tmp_path, monkeypatch):
    target = tmp_path / "keyframes"
    export.export_keyframes(inspected.record, inspected.images, target, top=2)
    before = snapshot(target)

    def broken(image: np.ndarray, image_format: ImageFormat) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(export, "encode_image", broken)
    with pytest.raises(RuntimeError, match="boom"):
        export.export_keyframes(inspected.record, inspected.images, target, top=3, force=True)
    assert snapshot(target) == before
    assert os.listdir(tmp_path) == ["keyframes"]


# --- the command, in this process ---------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dytok: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]


def common_flags(model_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--frames", str(FRAMES), "--ratio", str(RATIO)]


@pytest.fixture(scope="module")
def cli_export(tiny_llava_dir, clip, tmp_path_factory) -> SimpleNamespace:
    """One `inspect --json` run that also exports, with --force over a stale directory."""
    target = tmp_path_factory.mktemp("cli") / "keyframes"
    target.mkdir()
    (target / "stale.txt").write_text("from an earlier run")
    result = dytok_in_this_process("inspect", str(clip), *common_flags(tiny_llava_dir), "--json",
                                   "--export-keyframes", str(target), "--top", "3", "--sheet", "--force")
    assert result.returncode == 0, result.stderr
    return SimpleNamespace(result=result, record=json.loads(result.stdout), target=target)


def test_cli_json_budgets_are_the_ones_ask_uses(dytok_here, cli_export, tiny_llava_dir, clip):
    asked = dytok_here("ask", str(clip), *common_flags(tiny_llava_dir), "--max-new-tokens", "2", "--json")
    assert asked.returncode == 0, asked.stderr
    asked = json.loads(asked.stdout)
    record = cli_export.record
    assert set(record) == set(asked) - {"answer", "reasoning"} and record["question"] == asked["question"] == "Describe this video."
    for mine, theirs in zip(record["frames"], asked["frames"], strict=True):
        assert mine["weight"] == pytest.approx(theirs["weight"], abs=1e-6)
        assert {key: mine[key] for key in ("index", "frame", "budget", "dominant", "contextual")} == {
            key: theirs[key] for key in ("index", "frame", "budget", "dominant", "contextual")
        }
    assert sorted(frame["rank"] for frame in record["frames"]) == list(range(1, FRAMES + 1))
    # No --question: the default is named on stderr, as is what was written.
    assert "Describe this video." in cli_export.result.stderr and "wrote 3 keyframes" in cli_export.result.stderr


def test_cli_export_with_force_replaces_the_directory(cli_export):
    target = cli_export.target
    names = sorted(os.listdir(target))
    images = [name for name in names if KEYFRAME_NAME.match(name)]
    assert names == sorted([*images, "contact_sheet.png", "keyframes.csv", "keyframes.json"])  # stale.txt is gone
    rows = json.loads((target / "keyframes.json").read_text())["keyframes"]
    by_rank = sorted(cli_export.record["frames"], key=lambda frame: frame["rank"])[:3]
    assert [row["file"] for row in rows] == images
    assert [(row["index"], row["budget"]) for row in rows] == [(frame["index"], frame["budget"]) for frame in by_rank]
    with Image.open(target / "contact_sheet.png") as sheet:
        assert sheet.size == export.contact_sheet_size(FRAMES, 48, 64)


def test_cli_table_matches_the_json_record(dytok_here, cli_export, tiny_llava_dir, clip):
    result = dytok_here("inspect", str(clip), *common_flags(tiny_llava_dir), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    frames = cli_export.record["frames"]
    assert len(rows) == FRAMES
    assert [int(row["budget"]) for row in rows] == [frame["budget"] for frame in frames]
    assert [int(row["rank"]) for row in rows] == [frame["rank"] for frame in frames]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_cli_refuses_a_non_empty_directory_before_any_work(dytok_here, tmp_path, clip):
    target = tmp_path / "keyframes"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    before = snapshot(target)
    result = dytok_here("inspect", str(clip), "--model", "./no/such/model", "--export-keyframes", str(target))
    assert_one_line_error(result, str(target), "--force")
    assert snapshot(target) == before and os.listdir(tmp_path) == ["keyframes"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--sheet"], "--export-keyframes"),
        (["--top", "3"], "--export-keyframes"),
        (["--json", "--show-budgets"], "--json"),
        (["--export-keyframes", "out", "--top", "0"], "--top"),
        (["--export-keyframes", "out", "--format", "gif"], "--format"),
        (["when?", "-q", "what?"], "give the question once"),
    ],
)
def test_cli_bad_flag_combinations(dytok_here, clip, args, fragment):
    assert_one_line_error(dytok_here("inspect", str(clip), *args), fragment)


def test_cli_question_as_an_argument_is_the_question(dytok_here, tiny_llava_dir, clip):
    question = "is there a dog?"
    positional, flagged = (dytok_here("inspect", str(clip), *where, *common_flags(tiny_llava_dir), "--json")
                           for where in ([question], ["-q", question]))
    assert positional.returncode == 0, positional.stderr
    assert json.loads(positional.stdout)["question"] == question
    assert json.loads(positional.stdout)["frames"] == json.loads(flagged.stdout)["frames"]


def test_cli_unreadable_video(dytok_here, tmp_path, tiny_llava_dir):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    assert_one_line_error(dytok_here("inspect", str(path), "-q", "what?", "--model", str(tiny_llava_dir)), str(path))


def test_keyframe_names_sort_by_rank_and_show_time():
    names = [export.keyframe_name(rank, 10 * rank, 61.5 - rank, ImageFormat.jpg) for rank in (10, 2, 1)]
    assert sorted(names) == names[::-1]
    assert names[2] == "rank01_f000010_01m00.50s.jpg"
