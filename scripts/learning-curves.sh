#!/usr/bin/env bash
# The learning figures of BENCHMARKS.md: the default run (`oxrl run`, k = 8) and `oxrl run
# --sync` on the same config for seeds 0, 1, 2, then the pipeline without the curriculum's
# finite pool (`--train-size 0`) on seed 0. One run at a time (each uses both cores).
# Prints one markdown row per run: start and end of held-out pass@1 (sampled, greedy), time to
# sampled 0.8, wall time of the whole command, zero-variance share of the groups.
# Usage: scripts/learning-curves.sh [OUT_DIR] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/learning-curves}
shift || true
seeds=${*:-0 1 2}
cargo build --release --quiet
bin=target/release/oxrl
mkdir -p "$out"
row() { # name dir wall
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
name, d, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
ev = [json.loads(l) for l in open(f"{d}/eval.jsonl")]
m = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
t08 = next((e["wall_s"] for e in ev if e["eval_sampled_pass_rate"] >= 0.8), None)
zv = sum(l["zero_variance_groups"] for l in m) / max(1, sum(l["prompts"] for l in m))
print(f"| {name} | {ev[0]['eval_sampled_pass_rate']:.3f} -> {ev[-1]['eval_sampled_pass_rate']:.3f} "
      f"| {ev[0]['eval_pass_rate']:.3f} -> {ev[-1]['eval_pass_rate']:.3f} "
      f"| {'-' if t08 is None else f'{t08:.0f} s (step ' + str(next(e['step'] for e in ev if e['wall_s'] == t08)) + ')'} "
      f"| {wall:.0f} s | {len(m)} | {zv:.1%} |")
PY
}
echo "| run | sampled pass@1 | greedy pass@1 | sampled >= 0.8 at | wall (command) | steps | zero-variance groups |"
echo "|---|---|---|---|---|---|---|"
for seed in $seeds; do
  for mode in async sync; do
    dir="$out/$mode-seed$seed"
    rm -rf "$dir"
    flag=(); [ "$mode" = sync ] && flag=(--sync)
    start=$(date +%s%N)
    "$bin" run "${flag[@]}" --seed "$seed" --out "$dir" > "$dir.log" 2>&1
    row "$mode seed $seed" "$dir" "$(( ($(date +%s%N) - start) / 1000000 ))e-3"
  done
done
dir="$out/async-seed0-no-pool"
rm -rf "$dir"
start=$(date +%s%N)
"$bin" run --seed 0 --train-size 0 --out "$dir" > "$dir.log" 2>&1
row "async seed 0, train_size 0 (no finite pool)" "$dir" "$(( ($(date +%s%N) - start) / 1000000 ))e-3"
