"""What `dytok summarize` costs on this machine: seconds per stage, and peak memory, for one synthetic video.

A random-weight model with the real shape of a shipped preset (nothing is downloaded; compute does not depend
on the weights), a local model directory (`--model`), or (`--small`) a random LLaVA-OneVision of the real
classes with 384 px frames (196 tokens a frame, as the real model) and a small vision tower and LLM, whose
own memory does not hide what the video adds, summarises a video that `ffmpeg` generates in /tmp (its `testsrc2` pattern, which moves but has
no cuts, so shots longer than --max-window split into windows of that length). Run it once per video length, each
in a fresh process, so the peak resident memory (`ru_maxrss`) is that run's alone:

    python benchmarks/summarize_cost.py --small --minutes 5
    python benchmarks/summarize_cost.py --small --minutes 60
    python benchmarks/summarize_cost.py --minutes 2 --method none
    python benchmarks/summarize_cost.py --video clip.mp4 --preset qwen3.5-0.8b   # a video of your own, no ffmpeg

Prints one JSON object: the stage timings of the summary record, the windows and frames, and this process's
peak RSS (the decoding workers are processes of their own, each holding one window's frames). Times on a shared machine are noise: compare runs made together.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dytok_cli.apps import summarize as summarizing
from dytok_cli.config import SUMMARY_MAX_FRAMES, Settings
from dytok_cli.models import load_model, load_random_model
from dytok_cli.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
SMALL_MODEL = Path("/tmp/dytok-summarize-small-llava")


class EqualLengths(Pipeline):
    """Every text exactly --max-new-tokens long: random weights end their texts at random lengths, which would
    make two runs (two methods, two shapes) incomparable."""

    def ask(self, *args, **kwargs):
        return super().ask(*args, force_length=True, **kwargs)

    def complete(self, prompt: str, force_length: bool = True, max_new_tokens: int | None = None):
        return super().complete(prompt, force_length, max_new_tokens)


def synthetic_video(minutes: float, size: str, rate: int) -> Path:
    """A `minutes`-long H.264 video of ffmpeg's test pattern in /tmp, made once and reused."""
    path = Path(f"/tmp/dytok-summarize-{minutes:g}min-{size}-{rate}fps.mp4")
    if not path.exists():
        if shutil.which("ffmpeg") is None:
            sys.exit("needs ffmpeg (apt-get install ffmpeg)")
        partial = path.with_suffix(".partial.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                        "-t", str(minutes * 60), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(10 * rate),
                        str(partial)], check=True)
        partial.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llava-ov-0.5b", help="model shape (a shipped preset), random weights")
    parser.add_argument("--model", help="a local model directory to load instead")
    parser.add_argument("--small", action="store_true", help="a small random LLaVA-OneVision (built in /tmp once)")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--video", type=Path, help="summarise this video instead of generating one (--minutes, --size "
                        "and --rate then do not apply)")
    parser.add_argument("--fps", type=float, default=0.25)
    parser.add_argument("--method", default="dytok-fastv")
    parser.add_argument("--ratio", type=float, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-window", type=float, default=60)
    parser.add_argument("--size", default="320x180", help="video frame size, WxH")
    parser.add_argument("--rate", type=int, default=10, help="video frame rate")
    parser.add_argument("--equal-lengths", action="store_true",
                        help="every text exactly --max-new-tokens long (to compare methods or shapes)")
    args = parser.parse_args()

    video = args.video or synthetic_video(args.minutes, args.size, args.rate)
    if args.small:
        from tiny_models import build_llava_onevision

        if not SMALL_MODEL.exists():
            build_llava_onevision(SMALL_MODEL, image_size=384, patch_size=14, text_layers=8, hidden=256, heads=4)
        args.model = str(SMALL_MODEL)
    settings = Settings(model=args.model or args.preset, method=args.method, ratio=args.ratio, fps=args.fps,
                        max_frames=SUMMARY_MAX_FRAMES, max_new_tokens=args.max_new_tokens)
    started = time.perf_counter()
    if args.model:
        model = load_model(args.model, device=settings.device, dtype=settings.dtype, trust_remote_code=False)
    else:
        model = load_random_model(args.preset, device=settings.device, dtype=settings.dtype)
    loaded = time.perf_counter()
    pipeline = (EqualLengths if args.equal_lengths else Pipeline)(settings, model=model)
    segmentation = summarizing.Segmentation(max_window=args.max_window)
    summary = summarizing.summarize(pipeline, str(video), segmentation)
    record = summarizing.record(summary, settings, pipeline.prior_name)
    frames = sum(len(window["frames"]) for window in record["windows"])
    minutes = record["duration_s"] / 60
    print(json.dumps({
        "model": settings.model, "dtype": str(model.model.dtype).removeprefix("torch."), "method": settings.method.value,
        "ratio": settings.ratio, "equal_lengths": args.equal_lengths, "fps": args.fps, "minutes": round(minutes, 3),
        "video": str(args.video) if args.video else f"{args.size} at {args.rate} fps",
        "windows": len(record["windows"]), "frames": frames, "chapters": len(record["chapters"]),
        "visual_tokens": {key: sum(w["visual_tokens"][key] for w in record["windows"]) for key in ("full", "kept")},
        "load_s": round(loaded - started, 2), "timings": record["timings"],
        "seconds_per_video_minute": round(record["timings"]["total_s"] / minutes, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }, indent=2))


if __name__ == "__main__":
    main()
