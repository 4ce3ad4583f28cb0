#!/usr/bin/env bash
# Builds oxrl's CUDA binaries on a machine with no GPU and no CUDA toolkit, from PyPI wheels
# alone (NVIDIA ships nvcc, cicc, the headers and the libraries as wheels), for a GPU machine
# that has no Rust toolchain:
#
#   scripts/build-cuda.sh                # CUDA 13.0, compute capability 90 (H100/H200)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh
#
# Why CUDA 13.0: the GPU machine's driver is 580 and its nvcc 13.0; code from a newer nvcc may
# not load on an older driver, and the machine's PyTorch carries the CUDA 13 libraries
# (libcublas.so.13, libnccl.so.2, ...) that the binaries link against at run time.
#
# Writes target/cuda-dist/: `oxrl` (features cuda,nccl), the test binaries of the GPU checks
# (the log-prob invariant, gradients, the learner's update and data-parallel tests), stripped
# and xz-compressed, and `gpu-checks.sh`, which unpacks and runs them all on the GPU, each
# step under a time limit. Copy that folder over and run `gpu-checks.sh OUT_DIR` there. CI
# builds and tests the CPU binary only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
toolkit="${OXRL_CUDA_TOOLKIT:-$root/target/cuda-toolkit}"
dist="${OXRL_CUDA_DIST:-$root/target/cuda-dist}"
# Its own target directory: the CPU build (CI's) and this one never invalidate each other.
export CARGO_TARGET_DIR="${OXRL_CUDA_TARGET:-$root/target/cuda}"

echo "== CUDA 13.0 toolkit from PyPI wheels into $toolkit/venv"
python3 -m venv "$toolkit/venv"
"$toolkit/venv/bin/pip" install -q --disable-pip-version-check \
  "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
  "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
  "nvidia-cublas==13.*" "nvidia-curand==10.*" "nvidia-nccl-cu13==2.*"
site=$("$toolkit/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cuda="$site/nvidia/cu13"
nccl="$site/nvidia/nccl"
test -x "$cuda/bin/nvcc" && test -x "$cuda/nvvm/bin/cicc" \
  || { echo "the wheels did not bring nvcc and cicc" >&2; exit 1; }

# The linker wants unversioned names (-lcublas) and a libcuda.so, which is the driver's and
# comes with no wheel: a stub that defines the driver API's names, as the toolkit's own
# lib64/stubs/libcuda.so does. At run time the real libcuda.so.1 is loaded by its soname.
link="$toolkit/link"
mkdir -p "$link"
for lib in "$cuda/lib/libcublas.so.13" "$cuda/lib/libcublasLt.so.13" "$cuda/lib/libcurand.so.10" \
           "$cuda/lib/libnvrtc.so.13" "$cuda/lib/libcudart.so.13" "$nccl/lib/libnccl.so.2"; do
  name=$(basename "$lib")
  ln -sf "$lib" "$link/${name%%.so.*}.so"
done
cudarc_dir=$(cargo metadata --format-version 1 --all-features 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "cudarc"))')
grep -ohE 'pub unsafe fn cu[A-Z][A-Za-z0-9_]*' "$cudarc_dir/src/driver/sys/mod.rs" | sort -u \
  | sed -E 's/pub unsafe fn (.*)/void \1(void) {}/' > "$link/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda_stub.c"

export CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda"
export PATH="$cuda/bin:$PATH"
export LIBRARY_PATH="$link${LIBRARY_PATH:+:$LIBRARY_PATH}"
export NVCC_CCBIN="${NVCC_CCBIN:-gcc}"
nvcc --version | tail -2

echo "== cargo build --release --features cuda,nccl (compute capability $CUDA_COMPUTE_CAP)"
cargo build --release --locked --features cuda,nccl --bin oxrl
echo "== the GPU checks' test binaries"
tests_json="$toolkit/tests.json"
# One invocation for both crates: the features are resolved over the workspace (nccl is
# the learner's), so the dependencies built above are reused.
cargo test --release --locked --features cuda,nccl --no-run --message-format json \
  -p policy -p learner --test logprob_invariant --test gradients \
  --test update --test gradient --test data_parallel >"$tests_json"

rm -rf "$dist"
mkdir -p "$dist/tests"
install -m 0755 "$CARGO_TARGET_DIR/release/oxrl" "$dist/oxrl"
# Each test executable as <crate>-<test>, e.g. policy-logprob_invariant.
python3 - "$tests_json" "$dist/tests" <<'EOF'
import json, os, shutil, sys
for line in open(sys.argv[1]):
    msg = json.loads(line)
    exe = msg.get("executable")
    if msg.get("reason") == "compiler-artifact" and exe and msg["profile"]["test"]:
        crate = os.path.basename(os.path.dirname(msg["manifest_path"]))
        shutil.copy(exe, os.path.join(sys.argv[2], f'{crate}-{msg["target"]["name"]}'))
EOF
strip "$dist/oxrl" "$dist"/tests/*
# Every binary that links candle carries its CUDA kernels (PTX, and quantised-matmul objects
# oxrl never calls): xz takes each to about a fifth. gpu-checks.sh unpacks them.
xz -T0 -6 "$dist/oxrl" "$dist"/tests/*
cp scripts/gpu-checks.sh "$dist/gpu-checks.sh"
chmod +x "$dist/gpu-checks.sh"
ls -la "$dist" "$dist/tests"
size=$(du -sb "$dist" | cut -f1)
echo "target/cuda-dist: $((size / 1048576)) MiB (a GPU session carries at most 64 MiB)"
