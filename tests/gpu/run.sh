#!/usr/bin/env bash
# make test-gpu: the GPU tests and the GPU benchmarks (bench/gpu_bench.py; the real models on
# cuda:0, bench/real_models.py: a short run written to bench/GPU-real-models.md), or a message and
# exit 0 without a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${MODELSHARE_BUILD:-$PWD/build}
VENV=${VENV:-.venv}
why=$("$VENV/bin/python" -c 'import sys; sys.path.insert(0, "tests/gpu"); from nvml import probe; print(probe()[1] or "")')
if [ -n "$why" ]; then
    echo "make test-gpu: no GPU here ($why): nothing to run"
    exit 0
fi
if [ ! -e "$BUILD/libmodelshare-cuda.so" ]; then
    echo "make test-gpu: $BUILD/libmodelshare-cuda.so is missing (CUDA toolkit not found at build time)" >&2
    exit 1
fi
MODELSHARE_BUILD="$BUILD" "$VENV/bin/python" -m pytest -q tests/gpu
MODELSHARE_BUILD="$BUILD" "$VENV/bin/python" bench/gpu_bench.py
# The real models on cuda:0: modelshare and a copy per process (Beam and Ray where installed:
# make bench-real installs them), a short count so that it takes a few minutes. Left out, saying
# why, where .venv's torch cannot use the card (a CPU build, a driver older than its CUDA).
if why=$("$VENV/bin/python" -c 'import sys, torch; torch.cuda.is_available() or sys.exit(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")' 2>&1); then
    "$VENV/bin/python" bench/real_models.py --device cuda:0 --skip-missing --calls 30 \
        --warmup 3 --repeat 1
else
    echo "make test-gpu: the real models' bench (bench/real_models.py --device cuda:0) left out: $why"
fi
