"""`dytok ask --engine ray` and `dytok summarize --engine ray`: the same records as the local engine, from Ray
actors on a local Ray.

Ray starts once for the module (two CPUs, no dashboard); each run starts its own actors, which load the
tiny model once each. Not collected on its own: `test_ray_engine.py` runs this file in a network
namespace of its own, because Ray's head process probes a cloud metadata address at start-up.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from clips import write_clip, write_shots, write_text_file  # noqa: E402
from conftest import dytok_in_this_process  # noqa: E402

from dytok_cli import cli  # noqa: E402
from dytok_cli.apps import ray_engine  # noqa: E402
from dytok_cli.config import Device, Settings  # noqa: E402
from dytok_cli.errors import DytokError  # noqa: E402
from dytok_cli.apps.ray_engine import MANIFEST, OutputFormat, RayOptions  # noqa: E402

DYTOK = shutil.which("dytok")
QUESTIONS = ("what happens?", "is there a dog?")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A two-CPU Ray for the module; its workers inherit the variable that arms the worker-death hook."""
    hook = tmp_path_factory.mktemp("hook") / "exit-once"
    settings = {ray_engine.TEST_CRASH_FILE_ENV: str(hook), "RAY_USAGE_STATS_ENABLED": "0", "RAY_BACKEND_LOG_LEVEL": "fatal"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield {"address": ray.get_runtime_context().gcs_address, "hook": hook}
    finally:
        ray.shutdown()
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="module")
def videos(clip, tmp_path_factory) -> list[str]:
    """Two good clips and one file that is not a video."""
    folder = tmp_path_factory.mktemp("ray-videos")
    other = write_clip(folder / "other.mp4", n_frames=16)
    return [str(clip), str(other), str(write_text_file(folder / "unreadable.mp4"))]


def ask_args(model_dir: Path, videos: list[str], *extra: str) -> list[str]:
    questions = [arg for question in QUESTIONS for arg in ("-q", question)]
    return ["ask", *videos, *questions, "--model", str(model_dir), "--frames", "4", "--max-new-tokens", "4",
            "--decode-timeout", "0", *extra]


def script(argv: list[str]) -> tuple[int, list[dict], str]:
    result = subprocess.run([DYTOK, *argv], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def in_process(argv: list[str], capsys, monkeypatch) -> tuple[int, list[dict], str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, [json.loads(line) for line in captured.out.splitlines()], captured.err


# A Ray actor and a local run use different numbers of torch threads, so a frame weight's sums run in
# another order: measured 1.1e-7 apart at most, the same as OMP_NUM_THREADS=1 against 2 in one local run
# (torch 2.14, transformers 5.25). Everything else in a record is equal.
WEIGHT_NOISE = 1e-6


@dataclass(frozen=True)
class Weight:
    """A frame weight that equals another within the float noise of a different thread count."""

    value: float

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Weight) and abs(self.value - other.value) <= WEIGHT_NOISE


def untimed(records) -> list[dict]:
    """The records without their timings, frame weights compared within `WEIGHT_NOISE`."""

    def frame(entry: dict) -> dict:
        return {**entry, "weight": Weight(entry["weight"])}

    return [{key: [frame(f) for f in value] if key == "frames" and value else value
             for key, value in record.items() if key != "timings"} for record in records]


@pytest.fixture(scope="module")
def local_run(tiny_llava_dir, videos):
    """The local engine's answers, in this process: what a Ray run must give, record for record."""
    result = dytok_in_this_process(*ask_args(tiny_llava_dir, videos, "--jsonl"))
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_ray_records_equal_the_local_ones_and_both_exit_1(local_ray, local_run, tiny_llava_dir, videos):
    if DYTOK is None:
        pytest.skip("the dytok script is not installed (pip install -e .)")
    local_status, local_records, local_err = local_run
    status, records, err = script(ask_args(tiny_llava_dir, videos, "--jsonl", "--engine", "ray", "--workers", "2",
                                           "--ray-address", local_ray["address"]))
    assert local_status == status == 1
    assert untimed(records) == untimed(local_records)  # answers, budgets, frames, errors, in input order
    assert [record["error"] is None for record in records] == [True] * 4 + [False] * 2
    assert err == local_err  # one line per failed pair, nothing from Ray
    for first, second in zip(records[0::2], records[1::2]):
        if first["error"] is None:  # prepared once for both of its questions, as locally
            assert first["timings"]["vision_s"] > 0 and second["timings"]["vision_s"] == 0


def test_an_internvl_model_answers_on_ray_as_on_the_local_engine(local_ray, build_family, videos, capsys, monkeypatch):
    """Another family than the one above (its frames reach the actors' model as images)."""
    args = ask_args(build_family("internvl"), videos[:1], "--jsonl")
    local = dytok_in_this_process(*args)
    status, records, err = in_process([*args, "--engine", "ray", "--ray-address", local_ray["address"]], capsys, monkeypatch)
    assert local.returncode == status == 0, err
    assert untimed(records) == untimed([json.loads(line) for line in local.stdout.splitlines()])
    assert [record["tokens_per_frame"] for record in records] == [16, 16]
def test_a_smolvlm2_model_answers_on_ray_as_locally(local_ray, build_family, videos, capsys, monkeypatch):
    """A family that writes each frame's time into its prompt: the Ray workers' records are the local engine's."""
    model_dir = build_family("smolvlm")
    local = dytok_in_this_process(*ask_args(model_dir, videos[:1], "--jsonl"))
    status, records, err = in_process(ask_args(model_dir, videos[:1], "--jsonl", "--engine", "ray"), capsys, monkeypatch)
    assert local.returncode == status == 0, local.stderr + err
    assert untimed(records) == untimed([json.loads(line) for line in local.stdout.splitlines()])
    assert len(records) == 2 and records[0]["tokens_per_frame"] == 16


def test_gemma4_through_ray_gives_the_local_records(local_ray, build_family, videos):
    """Another family's adapter in the actors (Gemma 4, #34): record for record what the local engine gives."""
    if DYTOK is None:
        pytest.skip("the dytok script is not installed (pip install -e .)")
    arguments = ask_args(build_family("gemma4"), videos[:1], "--jsonl")
    local = dytok_in_this_process(*arguments)
    status, records, err = script([*arguments, "--engine", "ray", "--workers", "1", "--ray-address", local_ray["address"]])
    assert local.returncode == status == 0, err
    assert untimed(records) == untimed([json.loads(line) for line in local.stdout.splitlines()])
    assert len(records) == 2 and err == local.stderr == ""


def test_a_killed_worker_has_its_pairs_answered_again(local_ray, local_run, tiny_llava_dir, videos, capsys, monkeypatch):
    local_records = local_run[1]
    local_ray["hook"].touch()  # the first worker to start a video now exits, as if killed
    status, records, err = in_process(ask_args(tiny_llava_dir, videos[:1], "--jsonl", "--engine", "ray"), capsys, monkeypatch)
    assert not local_ray["hook"].exists()  # the hook fired
    assert status == 0, err
    assert untimed(records) == untimed(local_records[:2])  # answered by the restarted worker
    assert err.splitlines() == ["2 of 2 answers were retried after their Ray worker died"]


def test_output_shards_and_a_rerun_skips_written_pairs(local_ray, local_run, tiny_llava_dir, videos, tmp_path, capsys, monkeypatch):
    local_records = local_run[1]
    target = tmp_path / "run"
    status, printed, err = in_process(ask_args(tiny_llava_dir, [videos[0], videos[2]], "--engine", "ray", "--output", str(target)),
                                      capsys, monkeypatch)
    assert status == 1 and printed == []  # the unreadable video's pairs failed; records go to DIR only
    assert err.splitlines()[-1] == f"4 records written to {target}; 2 failed"
    first = ray_engine.read_records(target)
    assert untimed(sorted(first, key=lambda r: r["video"])) == untimed(local_records[:2] + local_records[4:])

    status, printed, err = in_process(ask_args(tiny_llava_dir, videos, "--engine", "ray", "--output", str(target)),
                                      capsys, monkeypatch)
    assert status == 0, err  # only the new video ran, and it is readable
    assert err.splitlines() == [f"2 records written to {target}, 4 already there; 0 failed"]
    records = ray_engine.read_records(target)
    assert len(records) == 6 and untimed(r for r in records if r["video"] == videos[1]) == untimed(local_records[2:4])


def test_output_refuses_a_foreign_or_different_directory(tiny_llava_dir, videos, tmp_path, capsys, monkeypatch):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    status, _, err = in_process(ask_args(tiny_llava_dir, videos[:1], "--engine", "ray", "--output", str(foreign)), capsys, monkeypatch)
    assert status == 2 and err == f"dytok: error: --output {foreign}: exists and is not empty (use --force to replace it)\n"
    assert [path.name for path in foreign.iterdir()] == ["notes.txt"]

    other = tmp_path / "other-settings"
    ray_engine.prepare_output(other, Settings(model=str(tiny_llava_dir), frames=8), OutputFormat.jsonl, force=False)
    status, _, err = in_process(ask_args(tiny_llava_dir, videos[:1], "--engine", "ray", "--output", str(other)), capsys, monkeypatch)
    assert status == 2 and "holds a dytok run with other settings or format (use --force" in err

    ray_engine.prepare_output(foreign, Settings(model=str(tiny_llava_dir)), OutputFormat.jsonl, force=True)
    assert [path.name for path in foreign.iterdir()] == [MANIFEST]


def test_parquet_shards_hold_the_records_as_they_are(local_run, tmp_path):
    records = local_run[1]
    ray_engine.write_shard(tmp_path, records[:3], OutputFormat.parquet)
    ray_engine.write_shard(tmp_path, records[3:], OutputFormat.parquet)
    assert sorted(ray_engine.read_records(tmp_path), key=records.index) == records  # nothing dropped or retyped
    assert not list(tmp_path.glob(".tmp-*"))


def test_ray_flags_need_the_ray_engine(tiny_llava_dir, videos, capsys, monkeypatch):
    status, _, err = in_process(ask_args(tiny_llava_dir, videos[:1], "--workers", "2", "--output", "x"), capsys, monkeypatch)
    assert status == 2 and err.strip().endswith("--workers, --output: only used with --engine ray")
    status, _, err = in_process(ask_args(tiny_llava_dir, videos[:1], "--engine", "ray", "--workers", "0"), capsys, monkeypatch)
    assert status == 2 and err.strip().endswith("--workers must be at least 1, not 0")


def test_a_gpu_the_local_ray_lacks_is_refused_before_any_work(local_ray):
    with pytest.raises(DytokError, match=r"^--gpus-per-worker 0.5: the Ray cluster has 0 GPUs$"):
        ray_engine._check_gpus(ray, RayOptions(gpus_per_worker=0.5), Device.cpu, pytest.fail, started_here=True)


def test_without_ray_the_error_says_what_to_install(tiny_llava_dir, videos, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    status, records, err = in_process(ask_args(tiny_llava_dir, videos[:1], "--engine", "ray"), capsys, monkeypatch)
    assert status == 2 and records == []
    assert err == "dytok: error: --engine ray needs Ray: python -m pip install 'dytok-cli[ray]'\n"


# --- dytok summarize --engine ray -------------------------------------------------------------------------

# A frame every 4 s, one-token texts, decoding in the worker's own process.
SUMMARY_FAST = ["--fps", "0.25", "--max-new-tokens", "1", "--decode-timeout", "0"]


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> list[str]:
    """A video with a cut at 12 s (two windows), a file that is not a video, and one shorter than a window."""
    folder = tmp_path_factory.mktemp("ray-summaries")
    return [str(write_shots(folder / "shots.mp4", [12.0], 24.0)), str(write_text_file(folder / "notes.mp4")),
            str(write_shots(folder / "short.mp4", [], 4.0))]


def summarize_args(model_dir: Path, videos: list[str], *extra: str) -> list[str]:
    return ["summarize", *videos, "--model", str(model_dir), *SUMMARY_FAST, *extra]


def untimed_summary(record: dict) -> dict:
    """A summary record without its timings, the whole video's and each window's. A summary record holds no
    frame weights: everything else in it (descriptions, chapters, summary, frames, token counts) is compared
    exactly."""
    windows = [{key: value for key, value in window.items() if key != "timings"} for window in record["windows"]]
    return {**{key: value for key, value in record.items() if key != "timings"}, "windows": windows}


@pytest.fixture(scope="module")
def local_summaries(tiny_llava_dir, long_videos):
    """The local engine's summaries, in this process: what a Ray run must give, video for video."""
    result = dytok_in_this_process(*summarize_args(tiny_llava_dir, long_videos, "--jsonl"))
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def errors_said(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dytok: error:")]


def progress_said(stderr: str) -> list[str]:
    """The progress lines of a stderr that is not a terminal (a line per window and step locally, per video on Ray)."""
    return [line for line in stderr.splitlines() if line.startswith("summarize: ")]


def said(stderr: str) -> list[str]:
    """Every other line of stderr."""
    return [line for line in stderr.splitlines() if not line.startswith("summarize: ")]


def test_summaries_on_ray_equal_the_local_ones_and_a_bad_video_fails_alone(local_ray, local_summaries, tiny_llava_dir,
                                                                           long_videos, capsys, monkeypatch):
    local_status, local_records, local_err = local_summaries
    status, records, err = in_process(summarize_args(tiny_llava_dir, long_videos, "--jsonl", "--engine", "ray",
                                                     "--workers", "2"), capsys, monkeypatch)
    assert local_status == status == 1
    # Each record as a video completes: the order is the workers', so they are matched by video.
    assert sorted(record["video"] for record in records) == sorted(long_videos)
    records.sort(key=lambda record: long_videos.index(record["video"]))
    assert [untimed_summary(r) for r in records] == [untimed_summary(r) for r in local_records]
    assert [record["error"] is None for record in records] == [True, False, True]
    assert len(records[0]["windows"]) == 2 and records[0]["segmentation"]["cuts"] == [12.0]  # cut found on the worker
    bad = f"dytok: error: {long_videos[1]}: is not a video file (no known container format)"
    assert errors_said(err) == errors_said(local_err) == [bad]
    assert said(err) == said(local_err)  # one line for the bad video, nothing from Ray
    # Without a terminal, a line as the run starts and as each summary arrives (the bad video's is its error).
    first, *arrived = progress_said(err)
    assert first == "summarize: 3 videos on Ray; a line as each is summarised"
    counted = [line.rsplit(" (", 1) for line in arrived]  # counted in the order they arrive, the bad one too
    assert sorted(line for line, _ in counted) == [f"summarize: {video}: summarised on Ray"
                                                   for video in sorted([long_videos[0], long_videos[2]])]
    assert [count for _, count in counted] == sorted(count for _, count in counted)
    assert {count for _, count in counted} <= {f"{k}/3 videos)" for k in (1, 2, 3)}
    assert any("window 2/2" in line for line in progress_said(local_err))


def test_summary_files_from_ray_and_a_rerun_resumes_from_the_cache_on_a_restarted_worker(
        local_ray, local_summaries, tiny_llava_dir, long_videos, tmp_path, capsys, monkeypatch):
    """The local engine writes the file and fills the cache (cheaper than a first Ray run: no actor starts);
    Ray then refuses to replace the file without --force, and with it, on a worker restarted after its first
    died, resumes every window from that cache and writes the file the local engine wrote."""
    local_record = local_summaries[1][0]
    folder, cache = tmp_path / "out", tmp_path / "cache"
    args = summarize_args(tiny_llava_dir, long_videos[:1], "--format", "json", "-o", f"{folder}/", "--cache-dir", str(cache))
    status, printed, err = in_process(args, capsys, monkeypatch)
    assert status == 0 and printed == [], err
    assert said(err) == [f"wrote {folder / 'shots.json'}"]
    first = json.loads((folder / "shots.json").read_text())
    assert untimed_summary(first) == untimed_summary(local_record)

    on_ray = [*args, "--engine", "ray"]
    status, _, err = in_process(on_ray, capsys, monkeypatch)  # refused before Ray is asked for anything
    assert status == 2 and err == f"dytok: error: {folder / 'shots.json'} exists; use --force to replace it\n"

    local_ray["hook"].touch()  # the first worker to start the video now exits, as if killed
    status, _, err = in_process([*on_ray, "--force"], capsys, monkeypatch)
    assert not local_ray["hook"].exists()  # the hook fired
    assert status == 0, err
    assert said(err) == [f"wrote {folder / 'shots.json'}", "1 of 1 videos were retried after their Ray worker died"]
    assert progress_said(err) == ["summarize: 1 video on Ray; a line as each is summarised",
                                  f"summarize: {long_videos[0]}: summarised on Ray (1/1 videos)"]
    again = json.loads((folder / "shots.json").read_text())
    assert [window["resumed"] for window in again["windows"]] == [True, True]  # read from the cache on the worker
    unresumed = [{**window, "resumed": False} for window in untimed_summary(again)["windows"]]
    assert {**untimed_summary(again), "windows": unresumed} == untimed_summary(first)
