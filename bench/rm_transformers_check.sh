#!/usr/bin/env bash
# oxrl's reward-model scores against transformers' *ForSequenceClassification on the same
# checkpoints (bench/rm_transformers_check.py; docs/reward-model.md, "Checking against
# transformers"). Reuses bench/torch_baseline.sh's virtual environment, creating it on first
# use (a few GB: torch, transformers, safetensors).
#
#   bench/rm_transformers_check.sh --oxrl target/release/oxrl --rm DIR --work /tmp/rmcheck
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${OXRL_TORCH_VENV:-$here/../target/torch-venv}"
OXRL_TORCH_VENV="$venv" "$here/torch_baseline.sh" --setup
exec "$venv/bin/python" "$here/rm_transformers_check.py" "$@"
