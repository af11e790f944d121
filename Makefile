# Quick start:  make run   (benchmark table, then a short C-MIB training on the synthetic data)
#               make test  (the whole test suite; what CI runs)
# Both create .venv and build the extension when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS := $(VENV)/.deps-installed
INSTALLED := $(VENV)/.mibcore-installed
BUILT := $(VENV)/.mibcore-built
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu') setup.py mibcore/_math_tables.py

.PHONY: run test build bench cuda-check cuda-torch-check aarch64-check cuda-emu cuda-emu-mutations gpu-check gpu-rehearsal gpu-prebuilt aot-sweep clean

$(DEPS): requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# The package, editable, without compiling the extension (that is $(BUILT)'s job, once).
$(INSTALLED): $(DEPS) setup.py pyproject.toml
	MIBCORE_SKIP_EXTENSION=1 $(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $@

# mibcore._C built in place (ninja in build/: a rebuild compiles only what changed).
$(BUILT): $(INSTALLED) $(SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(BUILT)

run: build
	$(BIN)/python -m mibcore info
	$(BIN)/python -m benchmarks --quick --out bench-results/quick
	$(BIN)/python -m mibcore train --model cmib --fusion tensor --data synthetic --epochs 8 --lr 0.001 \
		--out runs/quickstart --no-resume

bench: build
	$(BIN)/python -m benchmarks --out bench-results

# nvcc compile check of csrc/cuda for sm_80 and sm_90 (skipped where nvcc is missing, unless
# MIBCORE_REQUIRE_CUDA_CHECKS=1, as .ci/run sets: then a missing nvcc fails).
cuda-check:
	@if command -v nvcc >/dev/null 2>&1; then \
		cmake -S . -B build-cmake -DCMAKE_BUILD_TYPE=Release >/dev/null && \
		cmake --build build-cmake -j 2 --target mibcore_cuda_check && \
		echo "nvcc compile check of csrc/cuda: OK"; \
	elif [ "$${MIBCORE_REQUIRE_CUDA_CHECKS:-0}" = 1 ]; then \
		echo "nvcc not found but MIBCORE_REQUIRE_CUDA_CHECKS=1: the CUDA compile check FAILED"; exit 1; \
	else echo "nvcc not found: CUDA compile check skipped"; fi

# Every distinct Triton launch of the host code's table of calls, compiled ahead of time for sm_90
# and sm_80 and checked (compiles, shared memory fits, no spills); CI compiles a representative
# set (tests/test_build.py). No GPU needed.
aot-sweep: build
	env -u TRITON_INTERPRET $(BIN)/python -m mibcore.kernels.aot --full

# The extension with its CUDA sources, built against a CUDA build of torch (no GPU needed).
cuda-torch-check:
	bash .ci/cuda_torch_check.sh

# The C++ sources compiled for aarch64 with Debian's cross compiler (portable fallbacks; compile only).
aarch64-check: $(INSTALLED)
	PYTHON=$(BIN)/python bash .ci/aarch64_check.sh

# The real csrc/cuda kernels run on the CPU through a test-only emulation layer (csrc/cuda_emu:
# fibers for threads, barriers, warp shuffles, atomics) under ASan and UBSan, on the contract cases
# (every dtype, tails, misaligned/offset pointers, forced grid-stride loops), compared with a double
# reference; build-cuda-emu/. cuda-emu-mutations: each of four planted bugs must make it fail.
cuda-emu:
	$(MAKE) --no-print-directory -f csrc/cuda_emu/emu.mk -j 2 run

cuda-emu-mutations:
	bash csrc/cuda_emu/mutations.sh

# The one prepared check for a lent GPU machine: build with CUDA, GPU tests, contract suite on
# CUDA, benchmarks; logs in $$OUT (default gpu-check-out). Without a GPU: preflight, then "no GPU".
gpu-check:
	bash .ci/gpu_check.sh

# The device check rehearsed without a GPU on a replica of the device's software (Python 3.12,
# torch 2.11.0 CUDA build, triton 3.6.0; venv .venv-device, or MIBCORE_DEVICE_VENV, built once) and
# of the checkout the device tool sends (tracked files only): every step up to the first needing a GPU.
gpu-rehearsal:
	bash .ci/gpu_rehearsal.sh

# mibcore._C for the lent GPU machine, built here in the replica (sm_90, against its torch and
# Python 3.12): carried with the device call (`carry: ["mibcore/_C.cpython-312-x86_64-linux-gnu.so"]`),
# it spares the device check its build step (.ci/gpu_check.sh rebuilds one that does not load there).
DEVICE_VENV ?= $(or $(MIBCORE_DEVICE_VENV),.venv-device)
gpu-prebuilt:
	test -x $(DEVICE_VENV)/bin/python || $(MAKE) --no-print-directory gpu-rehearsal
	. .ci/cuda_home.sh && MIBCORE_BUILD_CUDA=1 MIBCORE_CPU_BASELINE_ONLY=1 TORCH_CUDA_ARCH_LIST=9.0 \
		$(DEVICE_VENV)/bin/python setup.py -q build_ext --inplace
	$(DEVICE_VENV)/bin/python -c "import sys, torch; from mibcore import _extension; i = _extension.load(); \
		sys.exit(0 if i and i.get('cuda') == '1' else 'the prebuilt mibcore._C has no CUDA kernels')"

# The build against a CUDA torch (one compile job) runs beside the test suite, which mostly keeps
# one core busy: on a 2-core CI machine that saves most of its duration. Its log: build/cuda-torch-check.log.
test: build cuda-check aarch64-check cuda-emu
	@MAX_JOBS=1 $(MAKE) --no-print-directory cuda-torch-check > build/cuda-torch-check.log 2>&1 & \
	checker=$$!; $(BIN)/pytest -q tests; status=$$?; \
	if wait $$checker; then tail -n 1 build/cuda-torch-check.log; else tail -n 60 build/cuda-torch-check.log; status=1; fi; \
	exit $$status

clean:
	rm -rf build build-cmake build-cuda build-cuda-emu bench-results gpu-check-out gpu-rehearsal-out mibcore/*.so
