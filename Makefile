# modelshare — what a user runs. `make demo` and `make test` install what they need themselves.
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
PYASAN_BUILD ?= build-pyasan
VENV       ?= .venv
JOBS       ?= $(shell nproc)
PYTEST     := $(VENV)/bin/python -m pytest

.PHONY: all build deps venv python wheel demo test lint test-packaging gpu-kit test-unit test-integration test-python test-asan \
        test-tsan test-python-asan test-gpu chaos fuzz fuzz-run bench bench-waiting bench-peers bench-real format format-check clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(VENV)/.ok: tests/requirements.txt | deps
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.ok

# The Python package, built from this checkout (CMake, in python/build/) into .venv; again only
# when a source changed.
PY_SOURCES := CMakeLists.txt cmake/Prerequisites.cmake python/CMakeLists.txt python/pyproject.toml \
	$(shell find include src python/src python/modelshare -type f \( -name '*.[ch]' -o -name '*.py' \
	-o -name CMakeLists.txt \) 2>/dev/null)

$(VENV)/.python-ok: $(VENV)/.ok $(PY_SOURCES)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation \
		--no-deps ./python
	touch $@

python: $(VENV)/.python-ok

# A self-contained manylinux wheel in dist/: the package built by scikit-build-core (the same
# build as `make python`), then auditwheel copies the libraries the extension, modelshared,
# modelshare-worker and the CLI need (jansson, OpenBLAS, libmicrohttpd and theirs) into it. The
# CUDA backend's own libraries (cudart, cuBLAS) stay out: they come from the machine's CUDA or
# PyTorch install. Prints the wheel and its policy tag.
WHEEL_CUDA_LIBS := libcuda.so.1 'libcudart.so.*' 'libcublas.so.*' 'libcublasLt.so.*'
wheel: venv | deps
	rm -rf $(BUILD)/wheel-raw dist && mkdir -p dist
	$(VENV)/bin/python -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps \
		-w $(BUILD)/wheel-raw ./python
	PATH="$(abspath $(VENV))/bin:$$PATH" auditwheel repair -w dist \
		$(addprefix --exclude ,$(WHEEL_CUDA_LIBS)) $(BUILD)/wheel-raw/modelshare-*.whl
	@for w in dist/modelshare-*.whl; do tag=$$(basename $$w .whl | sed "s/.*-//"); \
		echo "make wheel: $$w, $$(du -m $$w | cut -f1) MiB, policy $$tag"; done

# The wheel installed into a fresh virtualenv in a mount namespace without compiler, headers,
# -dev packages or this checkout (tests/packaging/hide.py), serving 4 processes; a source build
# without the libraries failing at once with the list; clients in other containers
# (namespaces); the Dockerfile and the Kubernetes manifests checked. Needs root for unshare
# (skipped with the reason otherwise).
test-packaging: wheel build python
	@if [ -e $(BUILD)/libmodelshare-cuda.so ]; then $(MAKE) --no-print-directory gpu-kit; \
	else rm -rf $(BUILD)/gpu-kit; echo "no CUDA toolkit at build time: no GPU kit to test"; fi
	$(PYTEST) -q tests/packaging

demo: build
	$(BUILD)/modelshare demo

# The code's shape (lint), unit tests and fuzz-corpus replays (ctest), integration tests and the
# short chaos scenarios (pytest),
# the Python package's tests, then the C tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer, the multi-threaded ones under ThreadSanitizer, and the Python
# extension's C paths under AddressSanitizer.
test: lint test-unit test-integration test-python test-packaging test-asan test-tsan test-python-asan

# The C files as .clang-format writes them (format-check); no function in src/ over 60 lines,
# none over a cyclomatic complexity of 15 but those in scripts/lizard-ccn-exceptions.txt (each
# with its reason; one that no longer needs its line fails too) (lizard); the Python of python/,
# tests/, bench/ and scripts/ through ruff (ruff.toml); no circle of includes between the files
# of a program's folder, and none of calls between the files of src/daemon, src/lib and
# src/worker, as the object files in $(BUILD) say (docs/ARCHITECTURE.md's layers).
LIZARD_CCN := 15
lint: venv build format-check
	$(VENV)/bin/lizard --length 60 --CCN 1000 --warnings_only src
	$(VENV)/bin/lizard --CCN $(LIZARD_CCN) --length 100000 --warnings_only \
		-W scripts/lizard-ccn-exceptions.txt src
	$(VENV)/bin/python scripts/lizard-check-exceptions.py scripts/lizard-ccn-exceptions.txt \
		$(LIZARD_CCN) src
	$(VENV)/bin/ruff check python tests bench scripts
	$(VENV)/bin/python scripts/check-layers.py --calls $(BUILD) src/daemon src/lib src/worker \
		src/common src/cli src/backends

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-integration: build python
	MODELSHARE_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests/integration tests/chaos

test-python: python
	$(PYTEST) -q tests/python

# The CUDA backend is built (and so checked to compile and link) by the normal build only.
test-asan: python | deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMS_SANITIZE=ON -DMS_CUDA=OFF >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)
	MODELSHARE_BUILD=$(abspath $(ASAN_BUILD)) MODELSHARE_SANITIZED=1 $(PYTEST) -q tests/integration \
		tests/chaos

# The chaos and load suite at full counts (tests/chaos/chaos.py: kill -9 of 1000 clients, 100
# workers, 20 daemons; 20 SIGSTOPs of workers past their call_timeout; 32 processes x 20,000
# checked requests; stalling clients beside the load);
# prints each scenario's seed and figures, writes bench/RESULTS-chaos.md, fails on any loss.
chaos: build venv
	MODELSHARE_BUILD=$(abspath $(BUILD)) $(VENV)/bin/python tests/chaos/chaos.py --full \
		--results bench/RESULTS-chaos.md

# ThreadSanitizer: the library, daemon and worker built with -fsanitize=thread, running the tests
# that drive one handle (or one worker) from several threads. Every process writes its reports to
# $(TSAN_LOGS)/tsan.PID; any report fails the target.
TSAN_TESTS := tests/integration/test_sharing.py::test_one_client_used_from_many_threads \
	tests/integration/test_client_abuse.py::test_acquire_and_release_from_many_threads_of_one_client \
	tests/integration/test_dataplane.py::test_eight_clients_get_their_own_answers_identity \
	tests/integration/test_dataplane.py::test_eight_clients_get_their_own_answers_dense \
	tests/integration/test_dataplane.py::test_instances_share_the_requests \
	tests/integration/test_dataplane.py::test_deadline_expires_and_the_handle_goes_on \
	tests/integration/test_dataplane.py::test_flooding_client_does_not_starve_another \
	tests/integration/test_dataplane.py::test_worker_killed_while_a_request_runs \
	tests/integration/test_threads.py::test_eight_clients_get_their_own_answers_from_four_runners \
	tests/integration/test_threads.py::test_client_killed_while_runners_hold_its_requests \
	tests/integration/test_threads.py::test_swap_drains_every_runner_and_loses_nothing \
	tests/integration/test_concurrent_calls.py
TSAN_LOGS := $(abspath $(TSAN_BUILD))/reports
test-tsan: python | deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMS_TSAN=ON -DMS_CUDA=OFF >/dev/null
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target modelshared modelshare-worker modelshare-cli \
		ms-testclient ms-abuseclient ms-planeclient ms-concurclient
	rm -rf $(TSAN_LOGS) && mkdir -p $(TSAN_LOGS)
	TSAN_OPTIONS="log_path=$(TSAN_LOGS)/tsan second_deadlock_stack=1" \
		MODELSHARE_BUILD=$(abspath $(TSAN_BUILD)) $(PYTEST) -q $(TSAN_TESTS)
	@if ls $(TSAN_LOGS)/tsan.* >/dev/null 2>&1; then cat $(TSAN_LOGS)/tsan.*; \
		echo "ThreadSanitizer reports above (in $(TSAN_LOGS))"; exit 1; fi
	@echo "ThreadSanitizer: no reports"

# The Python extension (modelshare._core, with the library and the worker loop) and the programs
# it starts, built with AddressSanitizer and UBSan into $(PYASAN_BUILD)/pkg/modelshare (never into
# .venv), imported from there (PYTHONPATH) by an interpreter that preloads libasan: a few of the
# package's tests, the python backend's worker and constructors in memfds included. Python itself
# is not instrumented and keeps memory until exit by design, so leak detection is off
# (detect_leaks=0); every other report from any process goes to $(PYASAN_LOGS) and fails the
# target. About 2 minutes with the build.
# (The scikit-learn and ONNX Runtime models are left out: they test those libraries' imports, not
# modelshare's C.)
PYASAN_TESTS := tests/python/test_bad_pickles.py tests/python/test_python_backend.py \
	tests/python/test_api.py::test_threads_share_one_handle \
	tests/python/test_api.py::test_inputs_with_array_or_dlpack_and_strided_inputs \
	tests/python/test_api.py::test_every_dtype_reaches_the_model_as_itself \
	tests/python/test_api.py::test_wrong_dtype_and_shape_raise_and_the_model_keeps_serving \
	tests/python/test_threads.py \
	tests/python/test_correctness.py::test_obj_of_x_returns_whatever_the_object_returns \
	tests/python/test_correctness.py::test_the_object_may_modify_its_input_never_the_callers \
	tests/python/test_big_constructors.py
PYASAN_LOGS := $(abspath $(PYASAN_BUILD))/reports
PYASAN_PKG := $(abspath $(PYASAN_BUILD))/pkg
PYASAN_ENV = LD_PRELOAD=$$(gcc -print-file-name=libasan.so) PYTHONPATH=$(PYASAN_PKG) \
	ASAN_OPTIONS=detect_leaks=0:log_path=$(PYASAN_LOGS)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:log_path=$(PYASAN_LOGS)/ubsan
test-python-asan: venv | deps
	cmake -S . -B $(PYASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMS_PYTHON=ON -DMS_SANITIZE=ON \
		-DMS_TESTS=OFF -DMS_CUDA=OFF -DPython3_EXECUTABLE=$(abspath $(VENV))/bin/python >/dev/null
	cmake --build $(PYASAN_BUILD) -j $(JOBS) --target ms_python modelshared modelshare-worker
	rm -rf $(PYASAN_PKG) $(PYASAN_LOGS) && mkdir -p $(PYASAN_PKG) $(PYASAN_LOGS)
	cp -r python/modelshare $(PYASAN_PKG)/
	cp $(PYASAN_BUILD)/python/_core*.so $(PYASAN_BUILD)/modelshared $(PYASAN_BUILD)/modelshare-worker \
		$(PYASAN_PKG)/modelshare/
	$(PYASAN_ENV) $(VENV)/bin/python -c "import modelshare._core as c, sys; \
		sys.exit(0 if c.__file__.startswith('$(PYASAN_PKG)/') else 'imported ' + c.__file__)"
	$(PYASAN_ENV) $(PYTEST) -q -p no:cacheprovider --durations=3 $(PYASAN_TESTS) \
		-k "not sklearn and not onnxruntime"
	@if ls $(PYASAN_LOGS)/* >/dev/null 2>&1; then cat $(PYASAN_LOGS)/*; \
		echo "sanitizer reports above (in $(PYASAN_LOGS))"; exit 1; fi
	@echo "AddressSanitizer (python extension): no reports"

# Data-plane benchmarks against the in-process limit and a pickling proxy; writes bench/RESULTS.md.
bench: build venv
	$(VENV)/bin/python bench/run.py --build $(BUILD)

# What waiting costs (bench/waiting.py): clients 1, 2, 8, 32 x models of about 10 us, 1 ms and
# 20 ms, with the clients' spin and without; writes bench/RESULTS-waiting.md.
bench-waiting: build
	python3 bench/waiting.py --build $(BUILD)

# The peers the benchmarks below compare with, installed into .venv the first time.
PEERS_INSTALL = $(VENV)/bin/python -c "import ray.serve, apache_beam" 2>/dev/null || \
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check "ray[serve]" apache-beam

# modelshare beside plain loads, Beam's MultiProcessShared and Ray Serve (bench/vs_peers.py);
# installs ray[serve] into .venv the first time; writes bench/PEERS.md (shown in RESULTS.md).
# About 10 minutes on the 2-core VM. Not part of make test.
bench-peers: python
	@$(PEERS_INSTALL)
	$(VENV)/bin/python bench/vs_peers.py

# modelshare on real models (bench/real_models.py): a PyTorch transformer encoder called with
# input_ids and attention_mask, and a text embedder called with sentences, by 8 processes,
# beside Beam's MultiProcessShared, Ray Serve with @serve.batch and a copy per process: rows/s,
# p50/p99, memory (PSS of every process), answers checked. Installs ray[serve] and apache-beam
# into .venv the first time; writes bench/RESULTS-real-models.md (shown in RESULTS.md). Not part
# of make test.
bench-real: python
	@$(PEERS_INSTALL)
	$(VENV)/bin/python bench/real_models.py

# The GPU tests and bench for a GPU machine without registry or build tools: $(BUILD)/gpu-kit,
# at most 64 MiB (the C programs built here with their libraries, the test files, safetensors,
# the benches and modelshare's Python package for .venv's CPython version); there, `./run.sh`
# runs them with that machine's python3 (scripts/gpu-kit.sh says what is in it).
gpu-kit: build python
	bash scripts/gpu-kit.sh $(BUILD) $(BUILD)/gpu-kit

# GPU tests (tests/gpu) and the GPU benchmarks (bench/gpu_bench.py, then a short
# bench/real_models.py --device cuda:0 into bench/GPU-real-models.md); without a GPU it says so
# and exits 0.
test-gpu: build python
	MODELSHARE_BUILD=$(abspath $(BUILD)) VENV=$(VENV) bash tests/gpu/run.sh

# libFuzzer builds of the fuzz targets (clang) in build-fuzz/fuzz/; `make fuzz-run` runs each for
# RUNS executions (default 10 million) and merges what grew into tests/fuzz/corpus/ (see
# tests/fuzz/README.md).
fuzz: | deps
	CC=clang cmake -S . -B build-fuzz -DMS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug -DMS_CUDA=OFF >/dev/null
	cmake --build build-fuzz -j $(JOBS) --target $(notdir $(basename $(wildcard tests/fuzz/fuzz_*.c)))

fuzz-run: fuzz
	bash tests/fuzz/run.sh

# The C files of src/, include/, python/src/, tests/ and examples/ (git's list).
FORMAT_FILES = $$(git ls-files 'src/*.[ch]' 'include/*.h' 'python/src/*.[ch]' 'tests/*.[ch]' \
	'examples/*.[ch]')
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf dist $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(PYASAN_BUILD) build-fuzz python/build
