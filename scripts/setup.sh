#!/usr/bin/env bash
# Creates .venv and installs nemo-codert with its test extras. On a machine without a GPU (no nvidia-smi) torch is
# pinned to the CPU build 2.13.0 first, so pip never pulls the multi-GB CUDA wheels; elsewhere NeMo's own torch
# requirement decides. Inside an NGC container use the Dockerfile instead: it keeps the container's torch.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
torch_pin=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
    torch_pin=("torch==2.13.0")
fi
.venv/bin/python -m pip install -q "${torch_pin[@]}" -e '.[test]'
.venv/bin/python -c "import nemo, torch, nemo_codert.models; print('nemo', nemo.__version__, 'torch', torch.__version__)"
