"""Regenerate the measured figures the README and docs/summarize.md quote, in one sitting on this machine.

    python benchmarks/docs_figures.py              # every part, printed as Markdown
    python benchmarks/docs_figures.py --write      # and put into the pages, between their markers
    python benchmarks/docs_figures.py --only first-answer
    python benchmarks/docs_figures.py --frames 2 --max-new-tokens 2 --minutes 0.5   # does it run (no --write)

The parts, one after another, each figure in a fresh process as a user runs it:

- quick-start: every line of the README's Quick start, as written, in a scratch directory, timed (wall clock);
- first-answer: `dytok bench` at the default settings (32 frames of a 20-second 640x360 clip, `--dtype auto`,
  `dytok-fastv` at 0.25 against `none`) on the default model's shape and on LLaVA-OneVision-0.5B's;
- summarize: benchmarks/summarize_cost.py on a 2-minute 640x360 clip, both shapes, both methods, equal text
  lengths.

All of it takes about 40 minutes on a quiet 2-core CPU with AVX512-BF16 (estimated from the separate runs whose
figures it replaces: quick-start 3, first-answer 15, summarize 20), more without (float32). Each part prints a
block that opens with its conditions: the date, the CPU's model, cores and whether it has AVX512-BF16, the dtype
that ran, torch and transformers, and the commands. With --write each block replaces the text between
`<!-- docs_figures PART -->` and `<!-- /docs_figures PART -->` in the page that holds it. Run it with nothing
else on the machine: a shared machine's load moves these times by 2 to 3 times (bfloat16 decoding most).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"quick-start": ROOT / "README.md", "first-answer": ROOT / "README.md",
         "summarize": ROOT / "docs" / "summarize.md"}  # the part, and the page whose marked region it fills
FIRST_ANSWER_MODELS = ("qwen3.5-0.8b", "llava-ov-0.5b")  # the default model's shape, and the one it replaced
SUMMARIZE_METHODS = ("none", "dytok-fastv")


@dataclass(frozen=True)
class Machine:
    date: str
    cpu: str
    cores: int
    avx512_bf16: bool
    torch: str
    transformers: str

    def says(self, dtype: str, load: tuple[float, float]) -> str:
        """The conditions sentence every block opens with; `load` is the 1-minute load average's lowest and
        highest while the part ran."""
        bf16 = "with AVX512-BF16" if self.avx512_bf16 else "without AVX512-BF16"
        return (f"Measured {self.date} on an {self.cpu} ({self.cores} cores, {bf16}), {dtype} as `--dtype auto` "
                f"chose, torch {self.torch}, transformers {self.transformers}, a load average of {load[0]:.1f} to "
                f"{load[1]:.1f} while it ran (its own threads make about {self.cores})")


def read_machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> Machine:
    import torch
    import transformers

    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return Machine(date=datetime.date.today().isoformat(), cpu=model.group(1).strip() if model else "unknown CPU",
                   cores=os.cpu_count() or 0, avx512_bf16=bool(flags and "avx512_bf16" in flags.group(1).split()),
                   torch=torch.__version__.split("+")[0], transformers=transformers.__version__)


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def paragraph(text: str) -> str:
    """Prose wrapped as the pages wrap it, at 100 columns, never inside a word nor between a number and its unit."""
    held = re.sub(r"(\d) (s|x)\b", "\\1\0\\2", text)
    return textwrap.fill(held, width=100, break_long_words=False, break_on_hyphens=False).replace("\0", " ")


# --- running -----------------------------------------------------------------------------------------------


class Runner:
    """Runs command lines with this checkout's code and the `dytok` beside this Python, and samples the
    machine's load while they run: a shared machine's load moves these times more than anything measured."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), self.env.get("PATH", "")])
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), self.env.get("PYTHONPATH")]))
        if shutil.which("dytok", path=self.env["PATH"]) is None:
            sys.exit("docs_figures: no `dytok` beside this Python: install this checkout (python -m pip install -e .)")
        self.loads: list[float] = []

    def run(self, command: str, cwd: Path) -> tuple[float, str]:
        """Wall-clock seconds of a shell command line, and its stdout; a failure ends the script with its stderr."""
        print(f"docs_figures: {command}", file=sys.stderr, flush=True)
        done_event = threading.Event()

        def sample() -> None:
            while not done_event.wait(5.0):
                self.loads.append(os.getloadavg()[0])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], cwd=cwd, env=self.env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        done_event.set()
        sampler.join()
        self.loads.append(os.getloadavg()[0])
        if done.returncode != 0:
            sys.exit(f"docs_figures: `{command}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return elapsed, done.stdout

    def load(self) -> tuple[float, float]:
        """The lowest and highest load sampled since the last call."""
        loads, self.loads = self.loads, []
        return min(loads), max(loads)


def last_json(stdout: str) -> dict:
    """The JSON object a benchmark prints last (anything before it is its progress)."""
    return json.loads(stdout[stdout.index("{"):])


# --- quick start -------------------------------------------------------------------------------------------


def quick_start_lines(readme: str) -> list[str]:
    """The command lines of the README's Quick start: its first code block, as pasted."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```\w*\n(.*?)^```", section, re.M | re.S)
    if block is None:
        sys.exit("docs_figures: the README's Quick start has no code block")
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def quick_start_block(machine: Machine, dtype: str, load: tuple[float, float], timed: list[tuple[str, float]]) -> str:
    names = [shlex.split(line)[1] for line, _ in timed]
    labels = [f"`{name}`" if names.count(name) == 1 else f"`{name}` ({names[:i + 1].count(name)})"
              for i, name in enumerate(names)]
    times = ", ".join(f"{label} {seconds(elapsed)}" for label, (_, elapsed) in zip(labels, timed))
    return paragraph(f"How long each line takes, in a fresh process as pasted: {times}. {machine.says(dtype, load)}; "
                     f"`python benchmarks/docs_figures.py --only quick-start` times them again.")


def quick_start(machine: Machine, dtype: str, runner: Runner) -> str:
    with tempfile.TemporaryDirectory(prefix="dytok-quick-start-") as scratch:
        lines = quick_start_lines(PAGES["quick-start"].read_text())
        timed = [(line, runner.run(line, Path(scratch))[0]) for line in lines]
    return quick_start_block(machine, dtype, runner.load(), timed)


# --- a first answer --------------------------------------------------------------------------------------


def bench_command(model: str, frames: int, max_new_tokens: int) -> str:
    return (f"dytok bench clip360.mp4 --model {model} --random-weights --frames {frames} --ratios 1,0.25 "
            f"--repeat 1 --warmup 1 --max-new-tokens {max_new_tokens}")


def first_answer_block(machine: Machine, load: tuple[float, float], reports: dict[str, dict], frames: int,
                       max_new_tokens: int) -> str:
    dtypes = {report["dtype"] for report in reports.values()}
    rows = []
    for model, report in reports.items():
        for result in report["results"]:
            compressed = result["ratio"] != 1
            method = f"`{result['method']}`, {result['ratio']:g}" if compressed else "`none`"

            def against(key: str, speedup: str) -> str:
                return seconds(result[key]) + (f" ({result[speedup]:.2f}x)" if compressed else "")

            rows.append(f"| `{model}` | {method} | {result['visual_tokens']:,} | {against('total_s', 'speedup_total')} "
                        f"| {against('prefill_s', 'speedup_prefill')} "
                        f"| {against('next_question_s', 'speedup_next_question')} |")
    default = next(result for result in reports[FIRST_ANSWER_MODELS[0]]["results"] if result["ratio"] != 1)
    others = "".join(f", `{model}` in {seconds(next(r for r in report['results'] if r['ratio'] != 1)['total_s'])}"
                     for model, report in reports.items() if model != FIRST_ANSWER_MODELS[0])
    settings = "the default settings" if frames == 32 else "these settings"
    commands = "\n".join(["dytok make-clip clip360.mp4 --seconds 20 --size 640x360",
                          *(bench_command(model, frames, max_new_tokens) for model in reports)])
    return "\n".join([
        paragraph(f"{machine.says(' and '.join(sorted(dtypes)), load)}; random weights of the real shapes, {frames} "
                  f"frames of a 20-second 640x360 clip, {max_new_tokens} answer tokens, one untimed run and then one "
                  "timed run in one process, speed-ups against `none` in the same run, model loading not counted:"),
        "",
        "| model | method | visual tokens | first question | its prefill | a later question |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "```bash",
        commands,
        "```",
        "",
        paragraph(f"At {settings} (the `dytok-fastv` rows) the default model's shape answered a first question in "
                  f"{seconds(default['total_s'])}{others}."),
    ])


def first_answer(machine: Machine, runner: Runner, frames: int, max_new_tokens: int) -> str:
    reports = {}
    with tempfile.TemporaryDirectory(prefix="dytok-first-answer-") as scratch:
        runner.run("dytok make-clip clip360.mp4 --seconds 20 --size 640x360", Path(scratch))
        for model in FIRST_ANSWER_MODELS:
            command = bench_command(model, frames, max_new_tokens) + " --json"
            reports[model] = last_json(runner.run(command, Path(scratch))[1])
    return first_answer_block(machine, runner.load(), reports, frames, max_new_tokens)


# --- summarising -------------------------------------------------------------------------------------------


def summarize_command(model: str, method: str, max_new_tokens: int) -> str:
    return (f"python benchmarks/summarize_cost.py --preset {model} --video clip120.mp4 --method {method} "
            f"--max-new-tokens {max_new_tokens} --equal-lengths")


def summarize_block(machine: Machine, load: tuple[float, float], records: list[dict], minutes: float,
                    max_new_tokens: int) -> str:
    first = records[0]
    uncompressed = {record["model"]: record["timings"]["prefill_s"] for record in records if record["method"] == "none"}
    rows = []
    for record in records:
        timings = record["timings"]
        # "Texts": the windows' descriptions after their prefill, the chapter choice and the write-up.
        texts = timings["generate_s"] - timings["prefill_s"] + timings["chapters_s"] + timings["write_up_s"]
        prefill = f"{timings['prefill_s']:.1f}"
        method = "`none`"
        if record["method"] != "none":
            method = f"`{record['method']}` {record['ratio']:g}"
            prefill += f" ({uncompressed[record['model']] / timings['prefill_s']:.1f}x)"  # the method's own effect
        rows.append(f"| `{record['model']}` | {method} | {record['visual_tokens']['kept']:,} "
                    f"| {timings['vision_s']:.0f} | {prefill} | {texts:.0f} | {record['seconds_per_video_minute']:.0f} |")
    dtypes = " and ".join(sorted({record["dtype"] for record in records}))
    commands = "\n".join([  # every row's command: a shell loop over the shapes and the methods
        f"dytok make-clip clip120.mp4 --seconds {minutes * 60:g} --size 640x360",
        f"for preset in {' '.join(FIRST_ANSWER_MODELS)}; do for method in {' '.join(SUMMARIZE_METHODS)}; do",
        "  " + summarize_command("$preset", "$method", max_new_tokens),
        "done; done"])
    return "\n".join([
        paragraph(f"{machine.says(dtypes, load)}; random weights of the real shapes, a {minutes:g}-minute 640x360 "
                  f"clip from `dytok make-clip` ({first['windows']} window{'s' * (first['windows'] != 1)}, "
                  f"{first['frames']} frames at the default "
                  f"`--fps`), every text exactly {max_new_tokens} tokens long (`--equal-lengths`: random weights end "
                  "their texts at random lengths), each shape and method in a fresh process, one after another:"),
        "",
        "```bash",
        commands,
        "```",
        "",
        "| shape | method | visual tokens kept | vision s | windows' prefill s | texts s | s per minute |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ])


def summarize(machine: Machine, runner: Runner, minutes: float, max_new_tokens: int) -> str:
    records = []
    with tempfile.TemporaryDirectory(prefix="dytok-summarize-") as scratch:
        runner.run(f"dytok make-clip clip120.mp4 --seconds {minutes * 60:g} --size 640x360", Path(scratch))
        for model in FIRST_ANSWER_MODELS:
            for method in SUMMARIZE_METHODS:
                command = summarize_command(model, method, max_new_tokens).replace("benchmarks/", f"{ROOT}/benchmarks/")
                records.append(last_json(runner.run(command, Path(scratch))[1]))
    return summarize_block(machine, runner.load(), records, minutes, max_new_tokens)


# --- the pages ---------------------------------------------------------------------------------------------


def replace_region(text: str, part: str, block: str) -> str:
    """`text` with what stands between the part's markers replaced by `block`; exactly one region a part."""
    name = re.escape(part)
    pattern = re.compile(rf"(<!-- docs_figures {name} -->\n).*?(\n<!-- /docs_figures {name} -->)", re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"expected one region marked `docs_figures {part}`")
    return pattern.sub(lambda match: match.group(1) + block + match.group(2), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PAGES), help=f"comma-separated parts: {', '.join(PAGES)}")
    parser.add_argument("--frames", type=int, default=32, help="first-answer: frames sampled (the default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="answer tokens: first-answer 16, summarize 32 unless given")
    parser.add_argument("--minutes", type=float, default=2, help="summarize: the clip's length")
    parser.add_argument("--write", action="store_true", help="put each block into its page, between its markers")
    args = parser.parse_args()
    parts = args.only.split(",")
    if unknown := sorted(set(parts) - set(PAGES)):
        parser.error(f"no part {', '.join(unknown)} (parts: {', '.join(PAGES)})")
    if args.write and (args.frames != 32 or args.max_new_tokens is not None or args.minutes != 2):
        parser.error("--write puts the documented settings' figures into the pages: leave --frames, "
                     "--max-new-tokens and --minutes at their defaults")

    from dytok_cli.models import cpu_has_native_bf16

    runner = Runner()
    machine = read_machine()
    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"  # what --dtype auto runs on a CPU
    started = time.perf_counter()
    blocks = {}
    if "quick-start" in parts:
        blocks["quick-start"] = quick_start(machine, dtype, runner)
    if "first-answer" in parts:
        blocks["first-answer"] = first_answer(machine, runner, args.frames, args.max_new_tokens or 16)
    if "summarize" in parts:
        blocks["summarize"] = summarize(machine, runner, args.minutes, args.max_new_tokens or 32)
    for part, block in blocks.items():
        print(f"<!-- docs_figures {part} ({PAGES[part].relative_to(ROOT)}) -->\n{block}\n")
        if args.write:
            page = PAGES[part]
            written = page.with_name(f".{page.name}.docs_figures")
            written.write_text(replace_region(page.read_text(), part, block))
            written.replace(page)  # whole or not at all
    print(f"docs_figures: {', '.join(blocks)} in {(time.perf_counter() - started) / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
