#!/usr/bin/env bash
# The accelerator benchmark (benchmarks/gpu.py): jssl's SimCLR ResNet-50 and MAE ViT-B/16 train
# steps in bfloat16 against PyTorch AMP, images/s and model FLOPs utilization, in one call.
#
#   bash benchmarks/gpu.sh [--out DIR] [--steps 20] [--warmup 3] [--tiny]
#
# It needs JAX, flax, optax, orbax, chex, absl, matplotlib (and torch for the references); not
# TensorFlow. ml-collections, often missing on accelerator images, is installed from a wheel in
# .whl/ when it cannot be imported; make the wheel beforehand on a machine with pip access:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml-collections==1.1.0
# Run from the repository root. --tiny runs small models in float32 (seconds, any CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import ml_collections' 2>/dev/null; then
  shopt -s nullglob
  wheels=(.whl/ml_collections-*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "error: ml_collections cannot be imported and .whl/ holds no ml_collections wheel" \
         "(see the header of benchmarks/gpu.sh)" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/jssl-site "${wheels[@]}"
  export PYTHONPATH=/tmp/jssl-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
  echo "error: matplotlib cannot be imported (the plot of benchmarks/gpu.py needs it)" >&2
  exit 2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PYTHON" benchmarks/gpu.py "$@"
