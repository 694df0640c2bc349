#!/usr/bin/env bash
# Create (or reuse) ./.venv with a torch build that runs on this machine and this package installed.
# Sourced by scripts/test.sh and scripts/demo.sh. Override the torch pin with TORCH_SPEC, e.g. on a GPU
# machine that already has torch: TORCH_SPEC=skip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
# torch 2.14.1 + torchvision 0.29.1 import together on CPU-only machines (nnU-Net's trainer lookup imports
# timm -> torchvision); nnunetv2 2.8.1 needs torch >= 2.1.2 and != 2.9.*.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=${EXTRAS:-test}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if [ "$TORCH_SPEC" != "skip" ] && ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC (first run only)"
  "$PY" -m pip install -q $TORCH_SPEC
fi
echo "[setup] installing nnunetv2-mambahome[$EXTRAS] and nnU-Net"
"$PY" -m pip install -q -e ".[$EXTRAS]"
# The brain demo/test data comes from Debian's mricron-data: make sure apt knows the package.
if command -v apt-get >/dev/null && ! apt-cache show mricron-data >/dev/null 2>&1 \
   && [ ! -f /usr/share/mricron/templates/ch2.nii.gz ]; then
  echo "[setup] apt-get update (for mricron-data)"
  apt-get update -qq || echo "[setup] apt-get update failed: the brain dataset needs mricron-data (see README)"
fi
export PATH="$PWD/$VENV/bin:$PATH"
eval "$(nnunetv2-mambahome trainer-path --export)"
echo "[setup] ready: $("$PY" -c 'import torch, nnunetv2_mambahome as m; print("torch", torch.__version__, "| nnunetv2-mambahome", m.__version__)')"
