"""Accuracy of the trained models for every method and ratio, and where their priors look, on the test
split; prints the tables of docs/evidence.md.

    python benchmarks/trained/measure.py runs/evidence            # both models, the whole grid
    python benchmarks/trained/measure.py runs/evidence --model qwen3.5 --count 200 --ratios 0.25,0.1

1. Writes the test split (`tasks.py`, regenerated from its seed) to DIR/test unless it is there.
2. Runs `dytok eval` on it for each model (the installed `dytok` command, float32 on the CPU, 32 frames):
   `none` at ratio 1, `visionzip`, `dytok` and `dytok-fastv` at each ratio (at most 4 new tokens: an
   answer is a letter and the end token). `eval` resumes, so a run that was stopped goes on where it was.
3. For the questions whose answer lies in the target's frames (colour, shape, when), ranks the frames
   by each DyToK method's prior weight, as `dytok inspect --json` ranks them (`record.frame_ranks`
   over the plan's weights, with the prompt `eval` asks), and counts how often a frame the target shows
   in ranks first and in the top 3. For Qwen3.5 a frame is a temporal patch of two sampled frames.
4. Prints, per model, accuracy with a 95 % Wilson interval per method and ratio, overall and per kind
   of question, the prior's ranks, and what it all cost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tasks  # noqa: E402

MODELS = {"llava-ov": HERE / "models" / "llava-ov", "qwen3.5": HERE / "models" / "qwen3.5"}
METHODS = ("none", "visionzip", "dytok", "dytok-fastv")
PRIOR_METHODS = ("dytok", "dytok-fastv")
RATIOS = "0.5,0.25,0.1,0.05"
Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval


def wilson(right: int, total: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion `right` of `total`."""
    if total == 0:
        return (math.nan, math.nan)
    p = right / total
    centre = (p + Z95**2 / (2 * total)) / (1 + Z95**2 / total)
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / (1 + Z95**2 / total)
    return (centre - half, centre + half)


def run_eval(data: Path, model: Path, output: Path, ratios: str, threads: int) -> float:
    """`dytok eval` over the grid; returns the seconds it took (0 when everything was already answered)."""
    dytok = shutil.which("dytok")
    if dytok is None:
        sys.exit("install dytok first: python -m pip install -e .")
    # The model as the plot's title and the run's manifest name it: relative to where the command runs.
    model = Path(os.path.relpath(model))
    command = [
        dytok, "eval", str(data), "--output", str(output), "--model", str(model), "--frames", str(tasks.FRAMES),
        "--device", "cpu", "--dtype", "float32", "--ratios", ratios, "--max-new-tokens", "4", "--decode-timeout", "0",
        *(part for method in METHODS for part in ("--method", method)),
    ]
    print("$ " + " ".join(command), file=sys.stderr)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=environment)
    return time.perf_counter() - started


def prior_ranks(data: Path, model: Path, output: Path, threads: int) -> dict:
    """Per DyToK method and kind of question: how many videos had a target frame ranked first and in the
    top 3 by the prior, of how many. Kept in `output` (computed once)."""
    done = output / "prior_ranks.json"
    if done.exists():
        return json.loads(done.read_text())
    import torch

    from dytok_cli import Pipeline, Settings
    from dytok_cli.apps.eval import load_items, prompt
    from dytok_cli.record import frame_ranks

    torch.set_num_threads(threads)
    items = [item for item in load_items(data) if item.category != "count"]
    targets = {json.loads(line)["id"]: json.loads(line)["target_frames"] for line in data.read_text().splitlines()}
    common = dict(model=str(model), frames=tasks.FRAMES, device="cpu", dtype="float32", ratio=0.1, decode_timeout=None)
    first = Pipeline(Settings(method="dytok", **common))
    pipelines = {method: Pipeline(Settings(method=method, **common), model=first.model) for method in PRIOR_METHODS}
    counts = {method: {} for method in PRIOR_METHODS}
    for item in items:
        visual = first.prepare(item.video)
        per_group = visual.encoded.frames_per_group
        wanted = {frame // per_group for frame in targets[item.id]}
        for method, pipeline in pipelines.items():
            plan = pipeline.plan(visual, prompt(item))
            ranks = frame_ranks(plan.weights.tolist())
            best = min(ranks[frame] for frame in wanted)
            tally = counts[method].setdefault(item.category, {"videos": 0, "first": 0, "top3": 0})
            tally["videos"] += 1
            tally["first"] += best == 1
            tally["top3"] += best <= 3
            pipeline.release()
    result = {"frames": visual.encoded.num_frames, "counts": counts,
              "layers": {method: list(pipeline.prior_layers) for method, pipeline in pipelines.items()}}
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def accuracy_table(summary: dict) -> str:
    """Markdown: one row per method and ratio, accuracy [95 % CI] overall and per kind of question."""
    kinds = tasks.KINDS
    lines = [
        "| method | ratio | tokens | all | " + " | ".join(kinds) + " |",
        "| --- | ---: | ---: | --- | " + " | ".join("---" for _ in kinds) + " |",
    ]

    def cell(right: int, total: int) -> str:
        low, high = wilson(right, total)
        return f"{100 * right / total:.1f} [{100 * low:.0f}-{100 * high:.0f}]"

    for result in summary["results"]:
        answered = result["answered"]
        overall = cell(round(result["accuracy"] * answered), answered)
        by_kind = result["by_category"]
        kinds_cells = [cell(round(by_kind[k]["accuracy"] * by_kind[k]["answered"]), by_kind[k]["answered"]) for k in kinds]
        lines.append(f"| {result['method']} | {result['ratio']:g} | {result['visual_tokens']:.0f} | {overall} | "
                     + " | ".join(kinds_cells) + " |")
    return "\n".join(lines)


def ranks_table(ranks: dict) -> str:
    kinds = [kind for kind in tasks.KINDS if kind != "count"]
    lines = [
        f"| prior (layers) | {' | '.join(f'{k}: first / top 3' for k in kinds)} | all: first / top 3 |",
        "| --- | " + " | ".join("---" for _ in kinds) + " | --- |",
    ]
    for method, by_kind in ranks["counts"].items():
        cells = []
        for kind in [*kinds, None]:
            groups = [by_kind[k] for k in kinds] if kind is None else [by_kind[kind]]
            videos = sum(g["videos"] for g in groups)
            first = sum(g["first"] for g in groups)
            top3 = sum(g["top3"] for g in groups)
            cells.append(f"{100 * first / videos:.1f} / {100 * top3 / videos:.1f}")
        layers = ",".join(str(layer) for layer in ranks["layers"][method])
        lines.append(f"| {method} ({layers}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where the test split and the runs go")
    parser.add_argument("--model", choices=MODELS, action="append", help="one model (repeatable; default both)")
    parser.add_argument("--count", type=int, default=1000, help="test questions (default 1000)")
    parser.add_argument("--ratios", default=RATIOS, help=f"ratios of the compressing methods (default {RATIOS})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as training)")
    args = parser.parse_args(argv)

    split = args.directory / "test"
    data = split / "test.jsonl"
    if not data.exists() or len(data.read_text().splitlines()) != args.count:
        tasks.write_split("test", args.count, split)
    for name in args.model or list(MODELS):
        output = args.directory / name
        seconds = run_eval(data, MODELS[name], output, args.ratios, args.threads)
        summary = json.loads((output / "summary.json").read_text())
        started = time.perf_counter()
        ranks = prior_ranks(data, MODELS[name], output, args.threads)
        print(f"\n## {name}: {summary['items']} questions\n")
        print(accuracy_table(summary))
        print(f"\nPrior ranks of a target frame, of {ranks['frames']} frames (%):\n")
        print(ranks_table(ranks))
        print(f"\n(eval {seconds / 60:.1f} min, prior ranks {(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
