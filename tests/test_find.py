"""`dytok find` with tiny models of the real classes on clips made here: each window's score is what the
model's own eager attention gives by hand, scores are comparable across windows (not normalised per window),
the ranges come ranked from the windows' own boundaries, a later run reads every window back from the vision
cache, no two windows are in memory at once, a folder's bad file fails alone, and --clip cuts files that
ffprobe reads with the ranges' durations."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import weakref
from pathlib import Path

import pytest
import torch
from clips import write_clip_pyav, write_shots, write_text_file
from transformers import AutoModelForImageTextToText

from dytok_cli import windowed
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.media.video import video_timeline
from dytok_cli.pipeline import Pipeline
from dytok_cli.prefill.prior_pass import keyframe_prior

QUERY = "when does the dog run ?"
FPS = 8  # of the keyed clip: a frame is 1/8 s
# In-process decoding and a frame every 2 s: quick, and 2 frames a 4-second window.
FAST = ["--fps", "0.5", "--decode-timeout", "0"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("find")
    return {
        # 12 s, every frame different, a keyframe every 2 s: 4-second windows start and end on keyframes.
        "keyed": write_clip_pyav(folder / "keyed.mp4", n_frames=12 * FPS, fps=FPS, keyframe_every=2 * FPS),
        "shots": write_shots(folder / "shots.mp4", [6.0], 12.0, fps=4),
    }


def own_inputs(adapter, frames, question: str):
    """The model's own processor on the window's frames (nothing of ours builds the prompt)."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True)
    metadata = {"total_num_frames": frames.total_frames, "fps": frames.video_fps, "frames_indices": list(frames.indices)}
    return adapter.processor(text=prompt, videos=[frames.images], video_metadata=[metadata], do_sample_frames=False,
                             return_tensors="pt")


@pytest.fixture(scope="module")
def scanned(tiny_llava_dir, tiny_llava, videos):
    """The keyed clip in three 4-second windows of 4 frames each, scored over every layer of the tiny LLaVA."""
    settings = Settings(model=str(tiny_llava_dir), method=Method.dytok, prior_layers="all", fps=1.0, max_frames=32,
                        device=Device.cpu, dtype=DType.float32, decode_timeout=None)
    pipeline = Pipeline(settings, model=tiny_llava)
    found = windowed.scan(pipeline, str(videos["keyed"]), QUERY, windowed.Segmentation(window=4.0), pipeline.prior_layers)
    return pipeline, found


# How far our scores may lie from the eager oracle's, relative: float32 attention computed two ways (SDPA's
# walk and the q/k softmax here, against eager's weights); measured at most 1.6e-6 over these windows.
SCORE_TOLERANCE = 1e-5


def test_each_window_scores_what_eager_output_attentions_give_by_hand(tiny_llava_dir, tiny_llava, videos, scanned):
    """By hand, in float64, from the eager model's `output_attentions`: the last prompt token's attention over
    the whole prompt averaged over heads and the prior's layers; a frame's tokens' mean over the text's total;
    the window's frames' mean. The window's weights are the keyframe prior's, to the bit."""
    pipeline, found = scanned
    layers = pipeline.prior_layers
    assert layers == (0, 1, 2, 3) and len(found.windows) == 3
    eager = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir, attn_implementation="eager",
                                                        dtype=torch.float32).eval()
    video = str(videos["keyed"])
    line = video_timeline(video)
    for scored in found.windows:
        frames = windowed.read_window(video, line, scored.window, scored.frames, pipeline.settings)
        encoded = tiny_llava.encode(frames)
        inputs = own_inputs(tiny_llava, frames, QUERY)
        with torch.no_grad():
            attentions = eager(**inputs, output_attentions=True).attentions
        ids = inputs["input_ids"][0]
        visual = ids == tiny_llava.video_token_id()
        count, per_frame = encoded.num_frames, encoded.tokens_per_frame
        frame_tokens = visual.nonzero()[:, 0][: count * per_frame]
        last = torch.stack([attentions[layer][0, :, -1, :].double() for layer in layers]).mean(dim=(0, 1))  # (S,)
        by_hand = last[frame_tokens].view(count, per_frame).mean(dim=1) / last[~visual].sum()
        assert count == 4 and scored.frames == frames.indices
        torch.testing.assert_close(torch.tensor(scored.frame_scores, dtype=torch.float64), by_hand,
                                   rtol=SCORE_TOLERANCE, atol=0)
        assert scored.score == pytest.approx(float(by_hand.mean()), rel=SCORE_TOLERANCE)
        assert scored.weights == tuple(keyframe_prior(tiny_llava, encoded, QUERY, layers).tolist())
        assert all(scored.window.start <= time < scored.window.end for time in scored.timestamps)
        assert scored.peak == scored.timestamps[max(range(count), key=scored.frame_scores.__getitem__)]


def test_scores_are_not_normalised_per_window(scanned):
    """Every window's weights sum to 1, as the keyframe prior's must; its score does not: windows of as many
    frames score apart by far more than float noise, which a score normalised per window (its frames' mean
    weight, 1/4 in each) could not."""
    _, found = scanned
    assert all(sum(scored.weights) == pytest.approx(1.0, abs=1e-6) for scored in found.windows)
    scores = [scored.score for scored in found.windows]
    assert max(scores) / min(scores) - 1 > 1000 * SCORE_TOLERANCE
    assert all(abs(scored.score - 1 / 4) > 0.01 for scored in found.windows)


def test_ranges_ranked_by_score_and_a_later_run_reads_every_window_from_the_cache(tiny_llava_dir, videos, dytok_here,
                                                                                 tmp_path, monkeypatch):
    """The best --top windows, best first, each a window's own boundaries and score; no earlier window's
    frames or tokens alive when the next is encoded; the same search again encodes nothing and scores the
    same; progress on stderr, a line per window."""
    video, cache = str(videos["keyed"]), tmp_path / "cache"
    alive: list[weakref.ref] = []
    encoded: list[int] = []
    encode = Pipeline.encode

    def watching(self, video, frames, on_stage=None):
        assert [ref for ref in alive if ref() is not None] == [], "an earlier window is still in memory"
        visual = encode(self, video, frames, on_stage)
        alive.extend([weakref.ref(frames.images), weakref.ref(visual.encoded.features)])
        encoded.append(len(frames.indices))
        return visual

    from dytok_cli.media import cache as vision_cache

    hashed: list[str] = []
    digest = vision_cache.file_digest
    monkeypatch.setattr(vision_cache, "file_digest", lambda path: hashed.append(str(path)) or digest(path))
    monkeypatch.setattr(Pipeline, "encode", watching)
    args = ["find", video, QUERY, "-m", str(tiny_llava_dir), "--window", "4", "--top", "2", "--json",
            "--cache-dir", str(cache), *FAST]
    first = dytok_here(*args)
    assert first.returncode == 0, first.stderr
    assert hashed == [video]  # the file's bytes hashed once for its three windows' entries
    record = json.loads(first.stdout)
    (searched,) = record["videos"]
    windows = searched["windows"]
    assert [(w["start"], w["end"]) for w in windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    assert encoded == [2, 2, 2] and not any(w["cached"] for w in windows)
    best = sorted(windows, key=lambda w: -w["score"])[:2]
    assert [(r["rank"], r["start"], r["end"], r["score"], r["window"]) for r in record["results"]] == [
        (rank, w["start"], w["end"], w["score"], w["index"]) for rank, w in enumerate(best, start=1)]
    assert all(r["start"] <= r["peak"] < r["end"] and r["video"] == video for r in record["results"])
    assert record["question"] == QUERY and record["settings"]["prior_layers"] == [2, 3]  # DyToK's deepest third
    progress = [re.sub(r"in \d+\.\d s$", "in S s", line) for line in first.stderr.splitlines() if line.startswith("find: ")]
    assert progress == [f"find: {video}: window {k}/3 (0:0{4 * k - 4}-0:{4 * k:02d}) scored in S s" for k in (1, 2, 3)]

    encoded.clear()
    again = dytok_here(*args)
    assert again.returncode == 0, again.stderr
    later = json.loads(again.stdout)
    assert encoded == [] and all(w["cached"] for w in later["videos"][0]["windows"])
    assert [w["score"] for w in later["videos"][0]["windows"]] == [w["score"] for w in windows]
    assert later["results"] == record["results"]


def test_a_folder_is_searched_whole_and_a_bad_file_fails_alone(tiny_llava_dir, videos, dytok_here, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("keyed", "shots"):
        shutil.copy(videos[name], folder / f"{name}.mp4")
    write_text_file(folder / "broken.mp4")
    result = dytok_here("find", str(folder), QUERY, "-m", str(tiny_llava_dir), "--window", "6", "--top", "3",
                        "--jsonl", *FAST)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    broken = str(folder / "broken.mp4")
    assert lines[0]["video"] == broken and "is not a video file" in lines[0]["error"] and lines[0]["rank"] is None
    results = lines[1:]
    assert [r["rank"] for r in results] == [1, 2, 3] and all(r["error"] is None for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert {r["video"] for r in results} <= {str(folder / "keyed.mp4"), str(folder / "shots.mp4")}
    assert all((r["start"], r["end"]) in {(0.0, 6.0), (6.0, 12.0)} for r in results)
    errors = [line for line in result.stderr.splitlines() if line.startswith("dytok: error:")]
    assert errors == [f"dytok: error: {broken}: is not a video file (no known container format)"]
    assert f"{folder}: searching 3 videos" in result.stderr and "Traceback" not in result.stderr


def probe(path: Path) -> tuple[float, int]:
    """(duration in seconds, frames) of the video stream, as ffprobe reads them."""
    shown = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                            "stream=duration,nb_read_frames", "-of", "json", str(path)], capture_output=True, text=True,
                           check=True)
    stream = json.loads(shown.stdout)["streams"][0]
    return float(stream["duration"]), int(stream["nb_read_frames"])


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg and ffprobe")
def test_clips_are_cut_whole_with_the_ranges_durations(tiny_llava_dir, videos, dytok_here, tmp_path):
    """Windows on keyframes are stream-copied, others re-encoded; either way ffprobe reads each clip with its
    range's frames and duration. A clip of the video already in DIR is refused without --force, before any
    work; with it the run goes on. Nothing half-written is left, and the clips get the umask's mode."""
    video, clips = str(videos["keyed"]), tmp_path / "clips"
    common = ["find", video, QUERY, "-m", str(tiny_llava_dir), "--clip", str(clips), *FAST]
    copied = dytok_here(*common, "--window", "4", "--top", "3", "--json")
    assert copied.returncode == 0, copied.stderr
    results = json.loads(copied.stdout)["results"]
    assert len(results) == 3 and all(r["clip_copied"] for r in results)
    assert "wrote 3 clips to" in copied.stderr and "(3 by stream copy, 0 re-encoded)" in copied.stderr

    refused = dytok_here(*common, "--window", "3", "--top", "2")
    assert refused.returncode == 2 and refused.stdout == "" and refused.stderr.count("\n") == 1
    assert "exists (a clip of" in refused.stderr and "use --force to replace clips" in refused.stderr

    encoded = dytok_here(*common, "--window", "3", "--top", "2", "--force")
    assert encoded.returncode == 0, encoded.stderr
    lines = encoded.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(" 1  ") and "(0 by stream copy, 2 re-encoded)" in encoded.stderr
    made = [Path(line.split()[-1]) for line in lines]
    umask = os.umask(0)
    os.umask(umask)
    for path, length in [*((Path(r["clip"]), 4.0) for r in results), *((path, 3.0) for path in made)]:
        duration, frames = probe(path)
        assert frames == round(length * FPS) and duration == pytest.approx(length, abs=1 / FPS / 2), path
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(path.name for path in clips.iterdir()) == sorted({Path(r["clip"]).name for r in results} | {p.name for p in made})


@pytest.mark.parametrize(("args", "message"), [
    (["missing.mp4", QUERY], "missing.mp4: no such file or folder"),
    (["{text}", QUERY], "is not a video file (no known container format)"),
    (["{empty}", QUERY], "no video files in"),
    (["{video}", QUERY, "--top", "0"], "--top: Input should be greater than or equal to 1"),
    (["{video}", QUERY, "--json", "--jsonl"], "--json and --jsonl cannot be used together"),
    (["{video}", QUERY, "--force"], "--force: only used with --clip DIR"),
    (["{video}", " "], "QUERY is empty"),
    (["{video}", QUERY, "--window", "0"], "--window must be a positive number of seconds"),
    (["{video}", QUERY, "--method", "none"], "No such option: --method"),
])
def test_bad_input_is_one_line_and_exit_2(videos, dytok_here, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    places = {"text": write_text_file(tmp_path / "notes.mp4"), "empty": tmp_path / "empty", "video": videos["keyed"]}
    result = dytok_here("find", *(arg.format(**places) for arg in args))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("dytok: error: ") and message in result.stderr


def test_windows_at_shot_cuts_and_the_cuts_kept_for_a_later_run(tiny_llava_dir, videos, dytok_here, tmp_path, monkeypatch):
    """Without --window: the cut found, a window either side of it; with --cache-dir a later run reads the cuts
    back instead of detecting them again."""
    args = ["find", str(videos["shots"]), QUERY, "-m", str(tiny_llava_dir), "--min-window", "4", "--max-window", "8",
            "--json", "--cache-dir", str(tmp_path / "cache"), *FAST]
    for _ in range(2):
        result = dytok_here(*args)
        assert result.returncode == 0, result.stderr
        (searched,) = json.loads(result.stdout)["videos"]
        assert searched["segmentation"]["cuts"] == [6.0]
        assert [(w["start"], w["end"], w["opens"]) for w in searched["windows"]] == [(0.0, 6.0, "start"), (6.0, 12.0, "cut")]
        monkeypatch.setattr(windowed, "detect_cuts", lambda *args, **kwargs: pytest.fail("shots detected again"))
