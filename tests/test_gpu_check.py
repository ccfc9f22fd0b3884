"""`benchmarks/gpu_check.sh --cpu`: the GPU check's every step, on tiny models on the CPU, so the script
works the day a GPU runs it. One family that works and one that cannot load: the table, the timing check,
`ask`, and the failure listed under its family. (Its Ray step is `ask --engine ray`, which the Ray cases
run in a network of their own; Ray reaches for cloud addresses as it starts.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def test_the_gpu_check_runs_every_step_on_the_cpu(build_family, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "llava_onevision").symlink_to(build_family("llava_onevision"))
    (models / "not_a_model").mkdir()  # no config.json: every step on it fails
    environment = {**os.environ, "NO_COLOR": "1"}
    run = subprocess.run([str(SCRIPT), "--cpu", str(models), "--no-ray"], capture_output=True, text=True, timeout=900,
                         env=environment, stdin=subprocess.DEVNULL)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    table = [line.split() for line in lines[: lines.index("")]]
    assert table[0][:4] == ["family", "run", "dtype", "method"]
    rows = {(row[0], row[1], row[3]) for row in table[2:]}
    for method in ("none", "dytok-fastv", "dytok", "visionzip"):
        assert {("llava_onevision", "async", method), ("llava_onevision", "blocking", method)} <= rows
    assert {row[2] for row in table[2:] if row[1] == "float16"} == {"float16"}
    assert {row[3] for row in table[2:] if row[1] == "float16"} == {"none", "dytok-fastv", "dytok"}
    assert any(line.startswith("  llava_onevision dytok-fastv 0.5: vision ") for line in lines)
    ask = next(line for line in lines if line.startswith("ask: "))
    assert ask.startswith(f"ask: {models / 'llava_onevision'} ") and ask.endswith(", error None")
    failures = lines[lines.index("failures:") + 1 :]
    assert failures[0] == "  not_a_model:" and len(failures) == 3
    assert all(line.startswith(f"    not_a_model: {step}: dytok: error: cannot load model")
               for line, step in zip(failures[1:], ("async", "blocking")))
