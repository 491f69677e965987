#!/usr/bin/env bash
# The GPU kit's one command (made by `make gpu-kit`): the GPU tests (tests/gpu) and the GPU
# benchmark (bench/gpu_bench.py) from this folder alone, with this machine's python3 (numpy and
# pytest needed; nothing is installed, no network used). Without a GPU it says so and exits 0.
# Then the real models on cuda:0 (bench/real_models.py, written to bench/GPU-real-models.md here)
# where this python has torch with CUDA and can import the kit's modelshare package (built for
# one CPython version: the one `make gpu-kit` ran with); else it says why it is left out.
#   ./run.sh [pytest args...]          PYTHON=/path/to/python3 to pick another interpreter
set -euo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
cd "$KIT"
PY=${PYTHON:-python3}
export MODELSHARE_BUILD="$KIT/build"
export PYTHONPATH="$KIT/pylib${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

# The kit's programs find their libraries in build/lib: anything missing but CUDA's is a broken kit.
missing=$(for f in build/modelshared build/modelshare build/modelshare-worker build/tests/*; do
              ldd "$f" | grep "not found" || true; done | sort -u)
if [ -n "$missing" ]; then
    echo "gpu-kit: libraries missing for the kit's programs:" >&2; echo "$missing" >&2; exit 1
fi

why=$("$PY" -c 'import sys; sys.path.insert(0, "tests/gpu"); from nvml import probe; print(probe()[1] or "")')
if [ -n "$why" ]; then
    echo "gpu-kit: no GPU here ($why): nothing to run"
    exit 0
fi
"$PY" -c 'import numpy, pytest' 2>/dev/null || {
    echo "gpu-kit: $PY lacks numpy or pytest, which the tests need" >&2; exit 1; }

# cuBLAS of the CUDA major version the backend was built with: the system's, else the one of
# PyTorch's nvidia-* packages in this python's site-packages.
need=$(ldd build/libmodelshare-cuda.so | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
if [ -n "$need" ]; then
    dirs=$("$PY" - $need <<'PY'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
found = {}
for lib in sys.argv[1:]:
    for root in roots:
        for hit in glob.glob(os.path.join(root, "nvidia", "**", lib), recursive=True):
            found.setdefault(lib, os.path.dirname(hit))
print(":".join(sorted(set(found.values()))))
missing = [lib for lib in sys.argv[1:] if lib not in found]
if missing:
    sys.stderr.write("gpu-kit: not on this machine: " + " ".join(missing) + "\n")
PY
)
    export LD_LIBRARY_PATH="${dirs:+$dirs:}${LD_LIBRARY_PATH:-}"
    still=$(ldd build/libmodelshare-cuda.so | awk '/not found/ {print $1}' | tr '\n' ' ')
    if [ -n "$still" ]; then
        echo "gpu-kit: the CUDA backend was built against $(echo "$need" | tr ' ' '\n' | grep -m1 cublas) and this machine has none ($still not found): install that CUDA major version's cuBLAS, or rebuild the kit with this machine's CUDA version (make gpu-kit on a machine with that toolkit)" >&2
        exit 1
    fi
fi
export MODELSHARE_CUDA_BACKEND="$KIT/build/libmodelshare-cuda.so"
"$PY" -m pytest -q -p no:cacheprovider tests/gpu "$@"
"$PY" bench/gpu_bench.py

if why=$("$PY" - 2>&1 <<'PY'
import sys
try:
    import torch
except ImportError as e:
    sys.exit(f"no torch in {sys.executable} ({e})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} in {sys.executable} sees no GPU")
try:
    import modelshare  # noqa: F401
except ImportError as e:
    sys.exit(f"the kit's modelshare package is not for this python {sys.version.split()[0]} "
             f"({e}): PYTHON=<that version's python3> ./run.sh")
PY
); then
    MODELSHARE_DAEMON="$KIT/build/modelshared" "$PY" bench/real_models.py --device cuda:0 \
        --skip-missing --calls 30 --warmup 3 --repeat 1
else
    echo "gpu-kit: the real models' bench (bench/real_models.py --device cuda:0) left out: $why"
fi
