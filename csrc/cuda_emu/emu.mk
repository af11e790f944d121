# The cuda-emu build (test-only): csrc/cuda/*.cu compiled for the host through cuda_emu.h, with
# their launch statements rewritten by translate_launches.py, linked with run_cases.cpp, under
# ASan and UBSan. `make cuda-emu` runs it; csrc/cuda_emu/mutations.sh runs it on mutated copies
# (SRC=the copy's csrc, BUILD=its own folder).
#   make -f csrc/cuda_emu/emu.mk [SRC=csrc] [BUILD=build-cuda-emu] [PYTHON=python3] run
SRC ?= csrc
BUILD ?= build-cuda-emu
PYTHON ?= python3
EMU := $(dir $(lastword $(MAKEFILE_LIST)))
CXX := g++
# -O0: under the sanitizers the compile is the cost (3x longer at -O1: 20 s against 6 s for one file)
# and the run takes about a second either way (measured); unknown pragmas are nvcc's unroll.
OPT ?= -O0
CXXFLAGS := -std=c++20 $(OPT) -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
	-Wall -Wextra -Wno-unknown-pragmas -Wno-unused-parameter
CPPFLAGS := -include $(EMU)cuda_emu.h -I$(EMU)shim -I$(SRC)/cuda -I$(SRC)/include -I$(BUILD)/generated
KERNELS := $(patsubst $(SRC)/cuda/%.cu,$(BUILD)/%.o,$(wildcard $(SRC)/cuda/*.cu))
TABLES := $(BUILD)/generated/mibcore/math_tables.h

.PHONY: run
.SECONDARY:
run: $(BUILD)/run_cases
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/run_cases

# The generated constants of the shared math, as setup.py and CMake make them.
$(TABLES): $(SRC)/../mibcore/_math_tables.py
	$(PYTHON) $< $(BUILD)/generated > /dev/null

$(BUILD)/%.cu.cpp: $(SRC)/cuda/%.cu $(EMU)translate_launches.py
	@mkdir -p $(BUILD)
	$(PYTHON) $(EMU)translate_launches.py $< $@

$(BUILD)/%.o: $(BUILD)/%.cu.cpp $(TABLES)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/run_cases.o: $(EMU)run_cases.cpp $(TABLES)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/run_cases: $(BUILD)/run_cases.o $(KERNELS)
	$(CXX) $(CXXFLAGS) $^ -o $@

-include $(wildcard $(BUILD)/*.d)
