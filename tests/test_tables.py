"""The tables on stdout (`inspect`'s budgets, `bench`, `eval`, `models`) print through one helper: the width is
the terminal's, or COLUMNS, or 100 on a pipe; no cell is cut ("…"), a table wider than that keeps its own width;
the legend under it is wrapped to the console; no line ends in blanks (a copied or diffed table has none)."""

from __future__ import annotations

import pytest
from test_bench_table import REPORT

from dytok_cli import render

BUDGETS = {
    "video": "clips/a-rather-long-name-for-a-video-file.mp4", "question": "what happens?", "tokens_per_frame": 196,
    "visual_tokens": {"full": 784, "kept": 196}, "ratio": 0.25, "method": "dytok-fastv", "prior_model": "m",
    "frames": [{"index": i, "frame": 30 * i, "timestamp": 1.25 * i, "weight": w, "rank": r, "budget": b,
                "dominant": b - b // 4, "contextual": b // 4}
               for i, (w, r, b) in enumerate([(0.5, 1, 98), (0.3, 2, 59), (0.2, 3, 39), (0.0, 4, 0)])],
}
EVAL = {"settings": {"model": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "frames": 8}, "items": 12, "results": [
    {"method": "none", "ratio": 1, "visual_tokens": 1568, "accuracy": 0.5, "answered": 12, "items": 12, "total_s": 31.5,
     "speedup_total": None, "prefill_s": 20.25, "speedup_prefill": None},
    {"method": "dytok-fastv", "ratio": 0.25, "visual_tokens": 392, "accuracy": 0.4166, "answered": 12, "items": 12,
     "total_s": 12.75, "speedup_total": 2.47, "prefill_s": 6.5, "speedup_prefill": 3.12},
]}
MODELS = [{"preset": "qwen3.5-0.8b", "model": "Qwen/Qwen3.5-0.8B", "family": "qwen3_5", "parameters": 853_000_000,
           "video_mme": {"score": 57.7, "thinking": True}, "cached": False, "default": True,
           "first_question": {"seconds": {"360p": 50.3, "1080p": 199.9}, "run": "a", "default_model_360p": 50.3}},
          {"preset": "smolvlm2-500m", "model": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "family": "smolvlm",
           "parameters": 507_000_000, "video_mme": {"score": 42.2, "thinking": False}, "cached": False, "default": False,
           "first_question": {"seconds": {"360p": 30.9}, "run": "b", "default_model_360p": 20.3}}]
# (print it, cells that must be shown whole, how its legend begins)
TABLES = {
    "budgets": (lambda: render.budgets_table(BUDGETS, [2, 3]), ["0.5000", "98", "0.0000", "prior m layers 2-3"],
                "visual tokens 784 → 196"),
    "bench": (lambda: render.bench_table(REPORT), ["dytok-fastv", "1234.56", "--wide or --json for all measures"],
              "x86_64, 2 cores"),
    "eval": (lambda: render.eval_table(EVAL), ["dytok-fastv", "41.7%", "31.50", "× against none in this run"],
             "accuracy over answered pairs"),
    "models": (lambda: render.models_table(MODELS), ["qwen3.5-0.8b", "Qwen/Qwen3.5-0.8B", "none published", "31†",
                                                        "where the default model took 20 s"], "model: "),
}


def printed(monkeypatch, capsys, name: str, columns: int | None) -> list[str]:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    TABLES[name][0]()
    return capsys.readouterr().out.splitlines()


def legend(lines: list[str], name: str) -> list[str]:
    start = next(index for index, line in enumerate(lines) if line.startswith(TABLES[name][2]))
    return lines[start:]


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("columns", [None, 80, 120])
def test_no_line_ends_in_blanks_and_nothing_is_cut(monkeypatch, capsys, name, columns):
    lines = printed(monkeypatch, capsys, name, columns)
    assert not [line for line in lines if line != line.rstrip()]
    text = " ".join(" ".join(lines).split())
    assert "…" not in text and all(cell in text for cell in TABLES[name][1])
    assert max(len(line) for line in lines) <= (columns or render.PIPE_WIDTH)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_the_legend_is_wrapped_to_the_console(monkeypatch, capsys, name):
    """At 50 columns a table keeps its width, but the legend under it fits."""
    lines = printed(monkeypatch, capsys, name, 50)
    under = legend(lines, name)
    assert len(under) > 1 and max(len(line) for line in under) <= 50


def test_piped_output_is_100_columns_unless_columns_says_otherwise(monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert render.stdout_console().width == render.PIPE_WIDTH  # capsys: stdout is not a terminal
    monkeypatch.setenv("COLUMNS", "63")
    assert render.stdout_console().width == 63
