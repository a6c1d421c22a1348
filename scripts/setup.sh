#!/usr/bin/env bash
# Creates .venv and installs nemo-codert with its test extras. On a machine without a GPU (no nvidia-smi) torch is
# pinned to 2.13.0; pip takes its CPU build where an index offers one (here a local +cpu wheel; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, or PyPI's Linux default, the CUDA build, comes). With a
# GPU, NeMo's own torch requirement decides. Inside an NGC container use the Dockerfile: it keeps the container's torch.
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
