#!/usr/bin/env bash
# Download the wheels the lent GPU machine lacks for bench/gpu_check.py, into .whl/ (git-ignored):
#   bash scripts/gpu-wheels.sh            # the diffusers version of .venv (or $PYTHON), else the newest
#   DIFFUSERS_VERSION=0.42.0 bash scripts/gpu-wheels.sh
# That machine (Python 3.12, no network) already has torch, transformers, accelerate, peft,
# safetensors, huggingface_hub, numpy, pillow, scipy, psutil, pyyaml, tqdm and rich: of what the
# engine and the checkpoint tools import, only diffusers is missing, and it is pure Python
# (importlib_metadata, its one other requirement, is in the standard library on 3.12). The device
# tool carries .whl/ with carry [".whl"]; the exact run command is in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
version=${DIFFUSERS_VERSION:-$("$py" -c 'import importlib.metadata as m; print(m.version("diffusers"))' 2>/dev/null || true)}
spec="diffusers${version:+==$version}"
rm -rf .whl  # one version of each package: two stop the install on the other side
mkdir -p .whl
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
for whl in .whl/*.whl; do
  case "$whl" in
    *-none-any.whl) ;;
    *) echo "gpu-wheels: $whl is not pure Python; it may not install there" >&2 ;;
  esac
done
kib=$(du -sk .whl | cut -f1)
if [ "$kib" -gt $((48 * 1024)) ]; then  # the tool carries 64 MiB with the working tree
  echo "gpu-wheels: .whl is ${kib} KiB, too much to carry with the working tree" >&2
  exit 1
fi
ls -l .whl
echo "gpu-wheels: ${kib} KiB in .whl/ ready to carry (docs/performance.md has the run command)"
