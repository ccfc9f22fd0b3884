"""`dytok bench`'s table reads at 80 and 120 columns; `--wide` shows every measure; the report says the dtype."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from dytok_cli import render

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# The longest cells a real run gives: seconds in the thousands, the longest method name.
RESULT = {
    "visual_tokens": 12544, "vision_s": 1137.21, "prior_s": 112.34, "prefill_s": 1234.56, "ttft_s": 2523.45,
    "decode_tok_s": 18.5, "total_s": 2800.12, "next_question_s": 1234.56,
    "next_question_recomputed_s": 2468.02, "speedup_prefix_reuse": 2.87, "kv_cache_bytes": 37.7 * 2**20,
    "peak_rss_bytes": 18.9 * 2**30, "speedup_prefill": 12.34, "speedup_total": 1.17, "speedup_next_question": 1.72,
    "prior_share": 0.16, "levers": [], "reused_frames": 32, "lever_speedup_vision": None, "lever_speedup_total": None,
}
REPORT = {
    "machine": "x86_64, 2 cores, torch 2.14.1, cpu", "model": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    "prior_model": None, "method": "dytok-fastv,dytok", "dtype": "bfloat16", "frames": 32, "prefix_cache": True,
    "random_weights": True, "levers": [],
    "results": [
        {**RESULT, "ratio": 1.0, "method": "none", "speedup_prefill": 1.0},
        {**RESULT, "ratio": 0.125, "method": "dytok-fastv"},
        {**RESULT, "ratio": 0.25, "method": "visionzip", "speedup_next_question": None},
    ],
}
DEFAULT_CELLS = ["0.125", "dytok-fastv", "12544", "1234.56", "2800.12", "12.34", "1.17", "1.72", "-"]
WIDE_ONLY_CELLS = ["1137.21", "112.34", "2523.45", "18.5", "2468.02", "2.87", "37.7 MiB", "18.9 GiB", "16%"]


def table(monkeypatch, capsys, columns: int, wide: bool = False) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))  # the width Rich gives stdout, as a terminal of that size
    render.bench_table(REPORT, wide=wide)
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("columns", [80, 120])
def test_default_table_fits_without_cutting_a_cell(monkeypatch, capsys, columns):
    lines = table(monkeypatch, capsys, columns)
    text = "\n".join(lines)
    assert "…" not in text and max(len(line) for line in lines) <= columns
    for cell in DEFAULT_CELLS:
        assert cell in text
    for cell in WIDE_ONLY_CELLS:
        assert cell not in text
    assert "bfloat16" in text and "--wide" in text


@pytest.mark.parametrize("columns", [80, 120])
def test_wide_table_shows_every_measure_uncut(monkeypatch, capsys, columns):
    text = "\n".join(table(monkeypatch, capsys, columns, wide=True))
    assert "…" not in text
    for cell in DEFAULT_CELLS + WIDE_ONLY_CELLS:
        assert cell in text


@pytest.mark.parametrize("columns", [80, 120])
def test_a_lever_table_fits_and_says_what_each_lever_gave(monkeypatch, capsys, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    lever = {**RESULT, "levers": ["reuse-repeats"], "lever_speedup_vision": 3.21, "lever_speedup_total": 1.43}
    off = {**RESULT, "lever_speedup_vision": 1.0, "lever_speedup_total": 1.0}
    render.bench_table({**REPORT, "levers": ["reuse-repeats"], "results": [
        {**off, "ratio": 1.0, "method": "none"}, {**lever, "ratio": 1.0, "method": "none"},
        {**lever, "ratio": 0.125, "method": "dytok-fastv"}]})
    lines = capsys.readouterr().out.splitlines()
    text = "\n".join(lines)
    assert "…" not in text and max(len(line) for line in lines) <= columns
    for cell in ["reuse-repeats", "off", "32", "1137.21", "2800.12", "3.21", "1.43", "dytok-fastv", "levers off in this run"]:
        assert cell in text


def test_wide_with_json_is_refused(dytok_here, clip):
    result = dytok_here("bench", str(clip), "--wide", "--json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--wide" in result.stderr


@pytest.mark.parametrize("dtype, prefix_cache", [("float32", "--prefix-cache"), ("bfloat16", "--no-prefix-cache")])
def test_bench_report_says_the_dtype_and_whether_the_prefix_was_reused(dytok_here, tiny_llava_dir, clip, dtype, prefix_cache):
    result = dytok_here("bench", str(clip), "--model", str(tiny_llava_dir), "--random-weights", "--ratios", "1,0.5",
                        "--frames", "2", "--repeat", "1", "--warmup", "0", "--max-new-tokens", "2", "--dtype", dtype,
                        prefix_cache, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dtype"] == dtype and report["prefix_cache"] is (prefix_cache == "--prefix-cache")
    for row in report["results"]:  # the gain of reuse is measured only when it is on
        measured = row["next_question_recomputed_s"] is not None and row["speedup_prefix_reuse"] > 0
        assert measured is report["prefix_cache"]
    # stderr is not a terminal: after the note on random weights, a line per finished run.
    note, *runs = result.stderr.splitlines()
    assert note.startswith("--random-weights: ") and len(runs) == 2
    assert re.fullmatch(r"ratio 1 none: run 1/1: \d+\.\d\d s; 1/2 runs done, about \d+s left", runs[0])
    assert re.fullmatch(r"ratio 0\.5 dytok-fastv: run 1/1: \d+\.\d\d s; 2/2 runs done, about 0s left", runs[1])


def test_bench_on_a_terminal_shows_runs_done_and_time_left(dytok_here, tiny_llava_dir, clip, monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=screen, width=80, force_terminal=True, color_system=None))
    result = dytok_here("bench", str(clip), "--model", str(tiny_llava_dir), "--random-weights", "--ratios", "1,0.5",
                        "--frames", "2", "--repeat", "1", "--warmup", "1", "--max-new-tokens", "2", "--json")
    assert result.returncode == 0, result.stderr
    shown = [ANSI.sub("", part) for part in re.split(r"[\r\n]", screen.getvalue())]
    # Runs done of all (two warm-ups, two timed), and the time left (unknown at first).
    assert any(re.search(r" [0-4]/4 +(\d:\d\d:\d\d|-:--:--) ", line) for line in shown)
    assert not any("runs done" in line for line in shown)  # the live line says it; no line per run


def with_runs(runs: int, spreads: dict[str, float]) -> dict:
    """REPORT as `runs` runs gave it, each row's prefill and total times spread by the given fractions."""
    rows = []
    for row, spread in zip(REPORT["results"], spreads.values()):
        measured = {m: [row[m] * (1 - spread / 2), row[m] * (1 + spread / 2)] for m in ("prefill_s", "total_s")}
        rows.append({**row, "runs": runs, "spread": measured})
    return {**REPORT, "results": rows}


def test_single_runs_say_so(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    render.bench_table(with_runs(1, {"a": 0.0, "b": 0.0, "c": 0.0}))
    text = " ".join(capsys.readouterr().out.split())
    assert "single runs (--repeat 1): one slow run shows as a speed-up" in text and "medians" not in text


def test_several_runs_give_the_largest_spread_and_wide_shows_each(monkeypatch, capsys):
    report = with_runs(3, {"a": 0.04, "b": 0.31, "c": 0.1})
    monkeypatch.setenv("COLUMNS", "80")
    render.bench_table(report)
    text = " ".join(capsys.readouterr().out.split())
    assert "medians of 3 runs, which differed by up to 31% (prefill, ratio 0.125 dytok-fastv)" in text
    render.bench_table(report, wide=True)
    lines = capsys.readouterr().out.splitlines()
    header = next(index for index, line in enumerate(lines) if "spread" in line)
    assert lines[header].split().count("spread") == 2  # beside prefill and beside total
    rows = [line.split() for line in lines if line.split()[:1] in (["1"], ["0.125"], ["0.25"])]
    assert [row[6] for row in rows] == ["4%", "31%", "10%"]  # ratio, method, tokens, vision, prior, prefill, spread
