#!/usr/bin/env bash
# The GPU checks of the `cuda` / `nccl` features, as one script for a machine with an NVIDIA
# GPU, the CUDA toolkit (nvcc) and NCCL: builds the GPU binary, then runs the device-agnostic
# tests on the GPU (OXRL_TEST_DEVICE picks it: the log-prob invariant, the every-parameter-
# gets-a-gradient check, the learner's update and data-parallel tests), then the decode and
# learner benchmarks on the GPU with the ~0.5 B config (tokens/s, model FLOPs utilisation).
#
#   scripts/gpu-check.sh                 # GPU 0, compute capability 90 (H100/H200)
#   CUDA_COMPUTE_CAP=80 scripts/gpu-check.sh
#
# Not yet run on a GPU: see docs/gpus.md for what it checks and what is still to measure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export OXRL_TEST_DEVICE="${OXRL_TEST_DEVICE:-cuda}"
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

echo "== build: --features cuda,nccl"
cargo build --release --features cuda,nccl --bin oxrl
echo "== policy on $OXRL_TEST_DEVICE: log-prob invariant, gradients"
cargo test --release --features cuda -p policy --test logprob_invariant --test gradients
echo "== learner on $OXRL_TEST_DEVICE: update, gradient, data parallel"
cargo test --release --features cuda,nccl -p learner
echo "== benchmarks on $OXRL_TEST_DEVICE (figures for BENCHMARKS.md)"
PEAK_TFLOPS="${PEAK_TFLOPS:-989}"   # dense bf16 of an H100/H200; set for other GPUs
./target/release/oxrl bench decode --device "$OXRL_TEST_DEVICE" --half-billion
./target/release/oxrl bench learner --device "$OXRL_TEST_DEVICE" --half-billion --peak-tflops "$PEAK_TFLOPS"
echo "== all GPU checks passed"
