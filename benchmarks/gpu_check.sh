#!/usr/bin/env bash
# What only a GPU shows, in one run of under ten minutes on one GPU: every family's smallest shape with
# random weights through `dytok bench --device cuda`, every method, twice: as CUDA runs (asynchronously)
# and with CUDA_LAUNCH_BLOCKING=1, where every kernel ends before the host goes on, so a stage time that
# only the blocking run gives is one the stage boundaries did not wait for; float16 on one family (the
# dtype of a GPU without native bfloat16); `ask` on the default model; the Ray engine with its defaults.
# Prints one table, the timing check, and every failure by family; exits 1 if anything failed.
#
#   benchmarks/gpu_check.sh              on a GPU: the shipped presets, --device cuda
#   benchmarks/gpu_check.sh --cpu DIR    the same steps on the CPU, on the tiny models in DIR/<family>
#                                        (what the test suite runs, so the script cannot rot)
#   --no-ray                             leave out the Ray engine's step
set -u

mode=gpu
tiny=""
ray=1
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) mode=cpu; tiny="${2:?--cpu needs the directory of tiny models}"; shift 2 ;;
        --no-ray) ray=0; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
question="What happens in this video?"

if [ "$mode" = gpu ]; then
    device=cuda
    # family=model: the smallest shipped shape of each family.
    models="llava_onevision=llava-ov-0.5b qwen2_5_vl=qwen2.5-vl-3b qwen3_vl=qwen3-vl-2b qwen3_5=qwen3.5-0.8b
            smolvlm=smolvlm2-256m gemma4=gemma4-e2b"
    half="llava_onevision=llava-ov-0.5b"
    default_model=()  # `ask`'s own default
    bench_flags=(--frames 16 --ratios 1,0.25 --repeat 2 --warmup 1 --max-new-tokens 16)
    ask_flags=()
    seconds=4
else
    device=cpu
    models=""
    for directory in "$tiny"/*/; do
        directory=${directory%/}
        models="$models ${directory##*/}=$directory"
    done
    [ -n "$models" ] || { echo "gpu_check.sh: no models in $tiny" >&2; exit 2; }
    half=${models# }
    half=${half%% *}
    default_model=(--model "${half#*=}")
    bench_flags=(--frames 4 --ratios 1,0.5 --repeat 1 --warmup 0 --max-new-tokens 2)
    ask_flags=(--frames 4 --max-new-tokens 2)
    seconds=2
fi

clip="$work/clip.mp4"
dytok make-clip "$clip" --seconds "$seconds" --size 320x240 2>"$work/clip.err" || { cat "$work/clip.err" >&2; exit 1; }

# step FAMILY NAME [ENV=VALUE ...] -- dytok ARGS: runs one step, its JSON to $work/FAMILY.NAME.json and
# its stderr to .err; a failure is listed at the end with the last line it said.
step() {
    local family=$1 name=$2
    shift 2
    local environment=()
    while [ "$1" != "--" ]; do environment+=("$1"); shift; done
    shift
    echo "gpu_check.sh: $family: $name" >&2
    if ! env "${environment[@]}" dytok "$@" >"$work/$family.$name.json" 2>"$work/$family.$name.err"; then
        echo "$family: $name: $(grep -v '^\s*$' "$work/$family.$name.err" | tail -n 1)" >>"$work/failures"
    fi
}

methods=(--method dytok-fastv --method dytok --method visionzip)
for pair in $models; do
    family=${pair%%=*}
    model=${pair#*=}
    common=(bench "$clip" --model "$model" --random-weights --device "$device" "${bench_flags[@]}" --json)
    step "$family" async -- "${common[@]}" "${methods[@]}"
    step "$family" blocking CUDA_LAUNCH_BLOCKING=1 -- "${common[@]}" "${methods[@]}"
done
family=${half%%=*}
step "$family" float16 -- bench "$clip" --model "${half#*=}" --random-weights --device "$device" --dtype float16 \
    "${bench_flags[@]}" --method dytok-fastv --method dytok --json
step default ask -- ask "$clip" -q "$question" "${default_model[@]}" "${ask_flags[@]}" --random-weights --device "$device" \
    --json
if [ "$ray" = 1 ]; then
    step default ray -- ask "$clip" -q "$question" "${default_model[@]}" "${ask_flags[@]}" --random-weights \
        --device "$device" --engine ray --json
fi

python3 - "$work" "$mode" <<'EOF'
"""The table of every bench step, the timing check (each stage as CUDA runs it against the blocking
run), the ask steps' answers, and the failures by family."""
import json
import sys
from pathlib import Path

work, mode = Path(sys.argv[1]), sys.argv[2]


def read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def seconds(value):
    return "-" if value is None else f"{value:.3f}"


header = ("family", "run", "dtype", "method", "ratio", "tokens", "vision s", "prior s", "prefill s", "decode tok/s",
          "total s", "peak GPU MiB")
rows, timings = [], {}
for path in sorted(work.glob("*.json")):
    family, run = path.stem.split(".", 1)
    report = read(path)
    if not isinstance(report, dict) or "results" not in report:
        continue
    for result in report["results"]:
        peak = result.get("peak_gpu_bytes")
        rows.append((family, run, report["dtype"], result["method"], f"{result['ratio']:g}", str(result["visual_tokens"]),
                     seconds(result["vision_s"]), seconds(result["prior_s"]), seconds(result["prefill_s"]),
                     f"{result['decode_tok_s']:.1f}", seconds(result["total_s"]),
                     "-" if peak is None else f"{peak / 2**20:.0f}"))
        timings[family, run, result["method"], result["ratio"]] = result
widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
for row in [header, ["-" * width for width in widths], *rows]:
    print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))

# A stage the boundaries waited for takes as long as CUDA runs it as with every kernel waited for; one they
# did not is much shorter, its work counted by a later stage.
print("\ntiming check: each stage as CUDA runs it / with CUDA_LAUNCH_BLOCKING=1 (far below 1: not waited for)")
suspect = []
for (family, run, method, ratio), result in sorted(timings.items()):
    blocking = timings.get((family, "blocking", method, ratio))
    if run != "async" or blocking is None:
        continue
    shares = []
    for stage in ("vision_s", "prior_s", "prefill_s", "total_s"):
        if result[stage] and blocking[stage]:
            share = result[stage] / blocking[stage]
            shares.append(f"{stage.removesuffix('_s')} {share:.2f}")
            # Tiny CPU models take milliseconds, which noise moves by more than this; a GPU's stages do not.
            # The whole question holds decoding's steps, which blocking slows most (each launch then waits):
            # its share may be low without anything wrong.
            if mode == "gpu" and stage != "total_s" and share < 0.5:
                suspect.append(f"{family}: {method} ratio {ratio:g}: {stage} {share:.2f} of the blocking run's")
    print(f"  {family} {method} {ratio:g}: {', '.join(shares) or '-'}")

for name in ("ask", "ray"):
    record = read(work / f"default.{name}.json")
    if isinstance(record, dict):
        print(f"\n{name}: {record.get('model')} {record.get('dtype')}: {record.get('visual_tokens')}, "
              f"total {seconds((record.get('timings') or {}).get('total_s'))} s, error {record.get('error')}")

failures = (work / "failures").read_text().splitlines() if (work / "failures").exists() else []
failures += [f"timing: {line}" for line in suspect]
print("\nfailures:" if failures else "\nno failures")
by_family = {}
for line in failures:
    by_family.setdefault(line.split(":", 1)[0], []).append(line)
for family, lines in sorted(by_family.items()):
    print(f"  {family}:")
    for line in lines:
        print(f"    {line}")
sys.exit(1 if failures else 0)
EOF
