#!/usr/bin/env bash
# PyTorch baseline for `oxrl bench decode|learner --torch`: runs bench/torch_baseline.py in
# its own virtual environment, creating it on first use (python3 -m venv, then pip installs
# torch (the PyTorch index's CPU wheel, else PyPI's), transformers and safetensors).
#
#   bench/torch_baseline.sh --setup              create the environment only
#   bench/torch_baseline.sh decode|learner ARGS  run one suite (see torch_baseline.py --help)
#
# Environment: OXRL_TORCH_VENV (default: target/torch-venv in the repository),
# OXRL_TORCH_NO_SETUP=1 (exit 3 with "skipped: ..." instead of creating a missing
# environment; `oxrl bench` with no suite sets it), PYTHON (default python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${OXRL_TORCH_VENV:-$here/../target/torch-venv}"
python="${PYTHON:-python3}"
ready="$venv/.oxrl-ready"

if [[ ! -f "$ready" ]]; then
  if [[ "${OXRL_TORCH_NO_SETUP:-0}" == 1 && "${1:-}" != --setup ]]; then
    echo "skipped: no PyTorch environment at $venv (create it with bench/torch_baseline.sh --setup)" >&2
    exit 3
  fi
  command -v "$python" >/dev/null || { echo "skipped: $python not found" >&2; exit 3; }
  echo "creating $venv (torch CPU wheel, transformers, safetensors) ..." >&2
  "$python" -m venv "$venv" >&2 || { echo "skipped: python3 -m venv failed" >&2; exit 3; }
  pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  # The CPU wheel from the PyTorch index where it can be reached, else PyPI's default wheel
  # (it brings CUDA libraries it will not use here: a few GB).
  "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu torch >&2 2>/dev/null \
    || "${pip[@]}" torch >&2 \
    || { echo "skipped: pip could not install torch" >&2; exit 3; }
  "${pip[@]}" transformers safetensors >&2 \
    || { echo "skipped: pip could not install transformers/safetensors" >&2; exit 3; }
  "$venv/bin/python" -c "import torch, transformers" >&2 \
    || { echo "skipped: torch/transformers do not import" >&2; exit 3; }
  touch "$ready"
fi
[[ "${1:-}" == --setup ]] && exit 0
exec "$venv/bin/python" "$here/torch_baseline.py" "$@"
