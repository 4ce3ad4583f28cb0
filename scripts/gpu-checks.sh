#!/usr/bin/env bash
# The GPU checks, run on the GPU machine from the folder scripts/build-cuda.sh prepared
# (target/cuda-dist/: `oxrl` with --features cuda,nccl, the checks' test binaries, this
# script). Needs no Rust toolchain: only the NVIDIA driver and the CUDA 13 libraries, which
# the machine's PyTorch carries (pip's nvidia-* packages).
#
#   ./gpu-checks.sh OUT_DIR        # writes OUT_DIR/gpu-checks.log and OUT_DIR/figures.jsonl
#
# Each step has its own time limit (STEP_LIMIT seconds, default 150) and a failed step does
# not stop the others; the exit status says whether all passed.
#   - the test binaries with OXRL_TEST_DEVICE=cuda: sampled = teacher-forced log-probs (fp32,
#     and the bf16 body with the fp32 head), every parameter gets a gradient, the learner's
#     update, data parallelism through the replica driver and NCCL with one rank;
#   - the decode benchmark at batch 1, 32 and 256 and the learner benchmark, both with the
#     ~0.5 B config (bf16 body), MFU against the H200's dense bf16 peak (PEAK_TFLOPS).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="${1:-$here/out}"
mkdir -p "$out"
log="$out/gpu-checks.log"
figures="$out/figures.jsonl"
: >"$log"
: >"$figures"
limit="${STEP_LIMIT:-150}"
peak="${PEAK_TFLOPS:-989}"

site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
export LD_LIBRARY_PATH="$site/nvidia/cu13/lib:$site/nvidia/nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OXRL_TEST_DEVICE="${OXRL_TEST_DEVICE:-cuda}"

# build-cuda.sh ships the binaries xz-compressed (they must fit what a session may carry).
for packed in "$here"/oxrl.xz "$here"/tests/*.xz; do
  [ -e "$packed" ] && xz -d -k -f "$packed" && chmod +x "${packed%.xz}"
done

failed=0
# step NAME COMMAND...: runs COMMAND under the time limit, its output into the log; a JSON
# line it prints last (the benchmarks') goes to figures.jsonl.
step() {
  local name=$1
  shift
  echo "== $name" | tee -a "$log"
  local started=$SECONDS
  if timeout "$limit" "$@" >"$out/step.txt" 2>&1; then
    echo "ok $name ($((SECONDS - started)) s)" | tee -a "$log"
  else
    echo "FAILED $name (exit $?, $((SECONDS - started)) s)" | tee -a "$log"
    failed=1
  fi
  cat "$out/step.txt" >>"$log"
  grep -E '^\{"suite"' "$out/step.txt" >>"$figures" || true
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$log"
ldd "$here/oxrl" | grep -E "cuda|cublas|curand|nvrtc|nccl" >>"$log" 2>&1 || true
for t in "$here"/tests/*; do
  case "$t" in *.xz) continue ;; esac
  step "test $(basename "$t")" "$t" --test-threads 1
done
for batch in 1 32 256; do
  step "bench decode batch $batch" "$here/oxrl" bench decode --device cuda --half-billion \
    --quick --batch "$batch"
done
step "bench learner" "$here/oxrl" bench learner --device cuda --half-billion --quick \
  --peak-tflops "$peak"
echo "figures: $figures" | tee -a "$log"
if [ "$failed" = 0 ]; then echo "== all GPU checks passed" | tee -a "$log"; else echo "== some GPU checks FAILED" | tee -a "$log"; fi
exit "$failed"
