"""`benchmarks/gpu_check.sh --cpu`: the GPU check's every step, on tiny models on the CPU, so the script
works the day a GPU runs it: the table, the timing check and `ask` with the real `dytok`, and a family
that cannot load listed under its name. (Its Ray step is `ask --engine ray`, which the Ray cases run in a
network of their own; Ray reaches for cloud addresses as it starts.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def check(models: Path, path: str | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "NO_COLOR": "1", **({"PATH": path} if path else {})}
    return subprocess.run([str(SCRIPT), "--cpu", str(models), "--no-ray"], capture_output=True, text=True,
                          timeout=900, env=environment, stdin=subprocess.DEVNULL)


def test_the_gpu_check_runs_every_step_on_the_cpu(build_family, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "llava_onevision").symlink_to(build_family("llava_onevision"))
    run = check(models)
    assert run.returncode == 0, run.stdout + run.stderr
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
    assert lines[-1] == "no failures"


def test_a_step_that_fails_is_listed_under_its_family_with_what_dytok_said(tmp_path):
    # A `dytok` that makes the clip and fails every other command as an unloadable model does: how the
    # script reports failures, without paying the real one's imports for each (the test above runs it).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dytok"
    fake.write_text('#!/bin/sh\nif [ "$1" = make-clip ]; then : > "$2"; exit 0; fi\n'
                    'echo "dytok: error: cannot load model (fake)" >&2\nexit 1\n')
    fake.chmod(0o755)
    models = tmp_path / "models"
    (models / "not_a_model").mkdir(parents=True)
    run = check(models, f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    failures = lines[lines.index("failures:") + 1 :]
    assert failures == [
        "  default:",
        "    default: ask: dytok: error: cannot load model (fake)",
        "  not_a_model:",
        *(f"    not_a_model: {step}: dytok: error: cannot load model (fake)" for step in ("async", "blocking", "float16")),
    ]
