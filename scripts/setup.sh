#!/usr/bin/env bash
# Set up sdcloud from nothing on a Debian/Ubuntu machine (or a fresh CI box):
#   bash scripts/setup.sh [--dev]
# Creates .venv, installs the CPU torch wheel first when no torch is present (so no
# multi-GB CUDA build is pulled), then sdcloud itself. On Colab or a CUDA image that
# already has torch, use `pip install -e .` directly: the torch range reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  pip install -q "torch==2.13.0"
fi
pip install -q -e ".${extras}"
