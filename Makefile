# modelshare — what a user runs. `make demo` and `make test` install what they need themselves.
BUILD      ?= build
ASAN_BUILD ?= build-asan
VENV       ?= .venv
JOBS       ?= $(shell nproc)
PYTEST     := $(VENV)/bin/python -m pytest

.PHONY: all build deps venv python demo test lint test-unit test-integration test-python test-asan \
        test-gpu chaos fuzz bench format format-check clean

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
PY_SOURCES := CMakeLists.txt python/CMakeLists.txt python/setup.py python/pyproject.toml \
	$(shell find include src python/src python/modelshare -type f \( -name '*.[ch]' -o -name '*.py' \
	-o -name CMakeLists.txt \) 2>/dev/null)

$(VENV)/.python-ok: $(VENV)/.ok $(PY_SOURCES)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation \
		--no-deps ./python
	touch $@

python: $(VENV)/.python-ok

demo: build
	$(BUILD)/modelshare demo

# The code's shape (lint), unit tests and fuzz-corpus replays (ctest), integration tests and the
# short chaos scenarios (pytest),
# the Python package's tests, then the C tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer.
test: lint test-unit test-integration test-python test-asan

# No function in src/ over 60 lines (lizard), no circle of includes between the files of a
# program's folder (docs/ARCHITECTURE.md's layers).
lint: venv
	$(VENV)/bin/lizard --length 60 --CCN 1000 --warnings_only src
	$(VENV)/bin/python scripts/check-layers.py src/daemon src/lib src/worker src/common src/cli \
		src/backends

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-integration: build venv
	MODELSHARE_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests/integration tests/chaos

test-python: python
	$(PYTEST) -q tests/python

# The CUDA backend is built (and so checked to compile and link) by the normal build only.
test-asan: venv | deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMS_SANITIZE=ON -DMS_CUDA=OFF >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)
	MODELSHARE_BUILD=$(abspath $(ASAN_BUILD)) MODELSHARE_SANITIZED=1 $(PYTEST) -q tests/integration \
		tests/chaos

# The chaos and load suite at full counts (tests/chaos/chaos.py: kill -9 of 1000 clients, 100
# workers, 20 daemons; 32 processes x 20,000 checked requests; stalling clients beside the load);
# prints each scenario's seed and figures, writes bench/RESULTS-chaos.md, fails on any loss.
chaos: build venv
	MODELSHARE_BUILD=$(abspath $(BUILD)) $(VENV)/bin/python tests/chaos/chaos.py --full \
		--results bench/RESULTS-chaos.md

# Data-plane benchmarks against the in-process limit and a pickling proxy; writes bench/RESULTS.md.
bench: build venv
	$(VENV)/bin/python bench/run.py --build $(BUILD)

# GPU tests (tests/gpu) and the GPU benchmark (bench/gpu_bench.py); without a GPU it says so
# and exits 0.
test-gpu: build venv
	MODELSHARE_BUILD=$(abspath $(BUILD)) VENV=$(VENV) bash tests/gpu/run.sh

# libFuzzer builds of the fuzz targets (clang); run one with e.g.
#   build-fuzz/fuzz/fuzz_req -max_total_time=60 tests/fuzz/corpus/fuzz_req
fuzz: | deps
	CC=clang cmake -S . -B build-fuzz -DMS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-fuzz -j $(JOBS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz python/build
