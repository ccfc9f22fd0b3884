"""`dytok ask --whole`: a question answered from the whole video. The frames chosen (`whole_video_frames`): best
windows first, the budget kept, a window that does not fit gives evenly spaced frames with its peak, no merged
frame across two windows. With tiny models of the real classes on clips made here: the windows used are the
best of an independent `scan`, the answer is the model's own on exactly those frames at ratio 1, with their
true times; a later run reads every window back from the vision cache; a long video without --whole says once
that --whole exists; what --whole does not take is refused."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from clips import write_shots, write_text_file, write_vfr_clip

from dytok_cli import windowed
from dytok_cli.config import Device, DType, Method, Settings
from dytok_cli.math.layers import parse_prior_layers
from dytok_cli.math.windows import spread, whole_video_frames
from dytok_cli.media.video import read_frames, video_timeline
from dytok_cli.pipeline import Pipeline
from dytok_cli.timecode import short_hms

QUESTION = "when does the dog run ?"
# Four 15-second shots: at the default --fps on a CPU (a frame every 4 s), 4, 4, 4 and 3 frames a window.
CUTS, LENGTH = [15.0, 30.0, 45.0], 60.0
# Fewer than two windows hold, and more than any one: the best is taken whole, the next in part.
BUDGET = 5
FAST = ["--decode-timeout", "0", "--dtype", "float32", "--max-new-tokens", "12"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("whole")
    return {
        "shots": str(write_shots(folder / "shots.mp4", CUTS, LENGTH, fps=2)),
        # 15 minutes in a frame every 30 s (the decoder's duration ends at the last frame's start): long, and
        # cheap to decode.
        "long": str(write_vfr_clip(folder / "long.mp4", [30.0 * i for i in range(31)])),
    }


# --- the frames chosen ------------------------------------------------------------------------------------


def test_spread_takes_one_position_in_each_equal_run_and_keeps_the_one_asked():
    for count in range(1, 14):
        for take in range(1, count + 1):
            for keep in range(count):
                picks = spread(count, take, keep)
                assert picks == sorted(set(picks)) and len(picks) == take and keep in picks
                # Evenly spaced: the i-th pick lies in the i-th of `take` equal runs of the positions.
                assert [pick * take // count for pick in picks] == list(range(take)), (count, take, keep)
    assert spread(9, 3, 0) == [0, 4, 7] and spread(9, 3, 4) == [1, 4, 7]
    with pytest.raises(ValueError):
        spread(3, 4, 0)


def test_whole_windows_best_first_then_part_of_one_with_its_peak():
    samples = [[0, 1, 2, 3], [10, 11, 12], [20, 21, 22, 23, 24], [30, 31]]
    chosen = whole_video_frames(samples, peaks=[2, 12, 24, 30], scores=[0.1, 0.3, 0.2, 0.2], budget=6)
    assert chosen == [(1, (10, 11, 12)), (2, (20, 22, 24))]  # 0.2 twice: the earlier window first
    assert whole_video_frames(samples, [2, 12, 21, 30], [0.1, 0.3, 0.2, 0.2], 6)[1] == (2, (21, 22, 24))  # runs 0-1, 2-3, 4
    everything = whole_video_frames(samples, [0, 10, 20, 30], [0.4, 0.3, 0.2, 0.1], 100)
    assert everything == [(w, tuple(frames)) for w, frames in enumerate(samples)]
    with pytest.raises(ValueError):
        whole_video_frames(samples, [0, 10, 20, 30], [0.4, 0.3, 0.2, 0.1], 0)


def test_the_budget_is_kept_and_the_windows_are_the_best_over_random_cases():
    rng = random.Random(7)
    for _ in range(300):
        windows = rng.randint(1, 8)
        starts = np.cumsum([rng.randint(1, 9) for _ in range(windows)]) * 10
        samples = [list(range(start, start + rng.randint(1, 7))) for start in starts]
        peaks = [rng.choice(frames) for frames in samples]
        scores = [rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in samples]
        budget = rng.randint(1, 30)
        chosen = whole_video_frames(samples, peaks, scores, budget)
        taken = [frame for _, frames in chosen for frame in frames]
        assert len(taken) == min(budget, sum(map(len, samples))) and len(set(taken)) == len(taken)
        used = [window for window, _ in chosen]
        assert used == sorted(used, key=lambda w: (-scores[w], w))
        unused = set(range(windows)) - set(used)
        assert all(scores[w] <= scores[used[-1]] for w in unused)
        for position, (window, frames) in enumerate(chosen):
            assert list(frames) == sorted(frames) and set(frames) <= set(samples[window])
            if position < len(chosen) - 1:
                assert list(frames) == samples[window]  # only the last window used may be cut
            assert peaks[window] in frames


def test_a_model_that_merges_two_frames_gets_pairs_from_one_window():
    samples = [[0, 1, 2], [10, 11, 12, 13], [20]]
    chosen = whole_video_frames(samples, [2, 10, 20], [0.3, 0.2, 0.1], budget=7, group=2)
    # 3 frames give 2 (with the peak); 4 fit whole; 1 left: the one-frame window gives its one.
    assert chosen == [(0, (0, 2)), (1, (10, 11, 12, 13)), (2, (20,))]
    assert whole_video_frames(samples, [1, 10, 20], [0.3, 0.2, 0.1], budget=1, group=2) == [(0, (1,))]


# --- a whole-video answer -------------------------------------------------------------------------------


def own_generate(adapter, frames, question: str, max_new_tokens: int = 12) -> list[int]:
    """The model's own processor and generate on these frames (nothing of ours builds the prompt)."""
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = adapter.processor.apply_chat_template(conversation, add_generation_prompt=True)
    metadata = {"total_num_frames": frames.total_frames, "fps": frames.video_fps, "frames_indices": list(frames.indices),
                "duration": frames.duration_s}
    inputs = adapter.processor(text=prompt, videos=[frames.images], video_metadata=[metadata], do_sample_frames=False,
                               return_tensors="pt")
    output = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1]:].tolist()


def settings_for(model_dir, **fields) -> Settings:
    return Settings(model=str(model_dir), device=Device.cpu, dtype=DType.float32, decode_timeout=None,
                    max_new_tokens=12, **fields)


@pytest.fixture(scope="module")
def answered(tiny_llava_dir, tiny_llava, videos):
    """`--method none` (ratio 1) asked with `BUDGET` frames, and an independent scan of the same video as `find`
    runs it, over DyToK's default layers."""
    video = videos["shots"]
    layers = parse_prior_layers(None, tiny_llava.num_layers, tiny_llava.attention_layers())
    finder = Pipeline(settings_for(tiny_llava_dir, method=Method.dytok, fps=0.25, max_frames=32), model=tiny_llava)
    oracle = windowed.scan(finder, video, QUESTION, windowed.Segmentation(), layers)
    pipeline = Pipeline(settings_for(tiny_llava_dir, method=Method.none, frames=BUDGET), model=tiny_llava)
    whole = windowed.whole_video(pipeline, video, QUESTION, windowed.Segmentation(), windowed.scan_layers(pipeline), BUDGET)
    return oracle, whole, windowed.ask_whole(pipeline, whole, QUESTION)


def test_the_windows_used_are_the_best_of_an_independent_scan(answered, videos):
    oracle, whole, _ = answered
    assert whole.layers == (2, 3)  # --method none reads no prior: DyToK's deepest third of the 4 layers
    assert [(w.window, w.sampled, w.score) for w in whole.scan.windows] == [(w.window, w.sampled, w.score) for w in oracle.windows]
    assert [len(w.sampled) for w in oracle.windows] == [4, 4, 4, 3]
    best, second = sorted(oracle.windows, key=lambda w: -w.score)[:2]
    assert [used.window.index for used in whole.used] == [best.index, second.index]
    assert whole.used[0].frames == best.sampled  # whole
    cut = whole.used[1].frames
    assert len(cut) == BUDGET - len(best.sampled) and set(cut) < set(second.sampled) and second.peak_frame in cut
    times = video_timeline(videos["shots"]).times
    assert all(used.timestamps == tuple(float(times[f]) for f in used.frames) for used in whole.used)


def test_the_answer_is_the_models_own_on_those_frames_with_their_true_times(answered, tiny_llava, videos):
    _, whole, answer = answered
    first, later = sorted((used.window.window for used in whole.used), key=lambda window: window.start)
    if first.end == later.start:
        spans = f"{short_hms(first.start)}-{short_hms(later.end)}"
    else:
        spans = f"{short_hms(first.start)}-{short_hms(first.end)} and {short_hms(later.start)}-{short_hms(later.end)}"
    context = f"These frames are from {spans} of a 1:00 video."
    assert whole.context == context and answer.plan.question.context == context
    frames = read_frames(videos["shots"], sorted(f for used in whole.used for f in used.frames))
    assert answer.plan.frames.indices == frames.indices == whole.frames
    assert answer.plan.frames.timestamps == frames.timestamps == tuple(2.0 * f / 4 for f in frames.indices)  # 2 fps
    assert answer.token_ids == own_generate(tiny_llava, frames, f"{context}\n{QUESTION}")
    assert answer.plan.kept_tokens == answer.plan.encoded.num_frames * answer.plan.encoded.tokens_per_frame  # ratio 1


def test_ask_whole_records_the_windows_and_a_later_run_reads_each_back(answered, tiny_llava_dir, videos, dytok_here,
                                                                       tmp_path, monkeypatch):
    oracle, whole, answer = answered
    args = ["ask", videos["shots"], QUESTION, "-m", str(tiny_llava_dir), "--whole", "--method", "none",
            "--frames", str(BUDGET), "--json", "--cache-dir", str(tmp_path / "cache"), *FAST]
    first = dytok_here(*args)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["answer"] == answer.text and [f["frame"] for f in record["frames"]] == list(whole.frames)
    found = record["whole"]
    assert [(w["index"], w["score"], w["cached"]) for w in found["windows"]] == [(w.index, w.score, False) for w in oracle.windows]
    assert [(u["index"], u["frames"]) for u in found["used"]] == [(u.window.index, list(u.frames)) for u in whole.used]
    assert found["budget"] == BUDGET and found["fps"] == 0.25 and found["prior_layers"] == [2, 3]
    assert found["context"] == whole.context and found["segmentation"]["cuts"] == CUTS
    assert found["cached_windows"] == 0 and found["timings"]["vision_s"] > 0

    monkeypatch.setattr(Pipeline, "encode", lambda *args, **kwargs: pytest.fail("encoded again"))
    monkeypatch.setattr(windowed, "detect_cuts", lambda *args, **kwargs: pytest.fail("shots detected again"))
    again = dytok_here(*args)
    assert again.returncode == 0, again.stderr
    later = json.loads(again.stdout)
    assert later["answer"] == record["answer"] and later["whole"]["used"] == found["used"]
    assert all(w["cached"] for w in later["whole"]["windows"]) and later["whole"]["cached_windows"] == 4
    assert later["whole"]["timings"]["decode_s"] == later["whole"]["timings"]["vision_s"] == 0
    assert later["timings"]["decode_s"] == later["timings"]["vision_s"] == 0  # the same selection, read back


def test_in_a_batch_a_bad_file_fails_alone_and_a_videos_shots_are_found_once(tiny_llava_dir, videos, dytok_here,
                                                                            tmp_path, monkeypatch):
    broken, copy = write_text_file(tmp_path / "broken.mp4"), tmp_path / "again.mp4"
    shutil.copy(videos["shots"], copy)
    detected: list[str] = []
    detect = windowed.detect_cuts
    monkeypatch.setattr(windowed, "detect_cuts", lambda video, **kwargs: detected.append(video) or detect(video, **kwargs))
    result = dytok_here("ask", videos["shots"], str(broken), str(copy), "-q", QUESTION, "-q", "is there a cat ?",
                        "-m", str(tiny_llava_dir), "--whole", "--frames", "2", "--jsonl", *FAST)
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["video"], r["error"] is None) for r in records] == [
        (video, ok) for video, ok in ((videos["shots"], True), (str(broken), False), (str(copy), True)) for _ in range(2)]
    assert all(len(r["whole"]["windows"]) == 4 for r in records if r["error"] is None)
    assert detected == [videos["shots"], str(copy)]  # once a video: its second question finds the cuts kept
    assert f"dytok: error: {broken}: is not a video file" in result.stderr and "Traceback" not in result.stderr


def test_a_model_that_merges_frames_sees_pairs_of_one_window_at_their_true_times(load_family, build_family, videos):
    """Qwen3-VL writes each temporal patch's time into the prompt: the mean of its two frames' true times."""
    adapter = load_family("qwen3_vl")
    pipeline = Pipeline(settings_for(build_family("qwen3_vl"), method=Method.dytok_fastv, frames=BUDGET), model=adapter)
    whole = windowed.whole_video(pipeline, videos["shots"], QUESTION, windowed.Segmentation(), windowed.scan_layers(pipeline),
                                 BUDGET)
    assert all(len(used.frames) % 2 == 0 for used in whole.used) and len(whole.frames) == 4
    answer = windowed.ask_whole(pipeline, whole, QUESTION)
    times = video_timeline(videos["shots"]).times[list(whole.frames)]
    assert answer.plan.encoded.timestamps == tuple(float(np.mean(times[i:i + 2])) for i in range(0, len(times), 2))


# --- the hint, and what --whole does not take -------------------------------------------------------------


def hints(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "--whole" in line]


def test_a_long_video_without_whole_says_once_that_whole_exists(tiny_llava_dir, videos, dytok_here, tmp_path):
    copy = tmp_path / "long-again.mp4"
    shutil.copy(videos["long"], copy)
    common = ["-q", QUESTION, "-m", str(tiny_llava_dir), "--max-new-tokens", "2", "--decode-timeout", "0", "--jsonl"]
    result = dytok_here("ask", videos["long"], str(copy), *common, "--frames", "4")
    assert result.returncode == 0, result.stderr
    assert hints(result.stderr) == [f"{videos['long']}: 4 frames over 15:00, one every 225 s; --whole answers from the "
                                    "parts of the video that matter (it scores every window first, so it costs more)"]
    assert [json.loads(line)["whole"] for line in result.stdout.splitlines()] == [None, None]
    # A frame every 15 s is close enough; every 20 s is not (the line is drawn at 18.75 s: 10 minutes in 32 frames).
    assert hints(dytok_here("ask", videos["shots"], *common, "--frames", "4").stderr) == []
    assert len(hints(dytok_here("ask", videos["shots"], *common, "--frames", "3").stderr)) == 1


@pytest.mark.parametrize(("flags", "message"), [
    (["--engine", "ray"], "--whole answers in this process: not with --engine ray"),
    (["--fps", "1"], "--fps: not with --whole"),
    (["--subtitles", "auto"], "--subtitles and --speech are not yet part of a --whole answer"),
])
def test_what_whole_does_not_take_is_a_usage_error(videos, dytok_here, flags, message):
    result = dytok_here("ask", videos["shots"], QUESTION, "--whole", *flags)
    assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("dytok: error: ") and message in result.stderr
