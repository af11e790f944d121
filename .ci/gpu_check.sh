#!/usr/bin/env bash
# The one prepared device check (`make gpu-check`), for a lent GPU machine as it is (an H200 with
# torch 2.11.0+cu130 and triton 3.6.0 preinstalled, no network: nothing is downloaded):
#   1. preflight   the files and tools it needs are here (on every machine)
#   2. build       mibcore._C with its CUDA sources, in place (MIBCORE_BUILD_CUDA=1,
#                  TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16); if that fails, a CPU-only build, so
#                  that the Triton backend is still tested
#   3. gpu-tests   pytest -m gpu tests (compiled Triton: TRITON_INTERPRET=0)
#   4. contract    the operator contract suite with the CUDA device (MIBCORE_TEST_DEVICE=cuda,
#                  MIBCORE_REQUIRE_BACKENDS=cuda,triton: a missing GPU backend fails the run)
#   5. bench       python -m benchmarks --device cuda --quick: eager reference, torch.compile of
#                  it, every fused backend; tensor fusion also against cuBLAS on the materialized product
# Each step runs under its own timeout, cut to what is left of the whole budget
# (GPU_CHECK_BUDGET_S, default 450 s, inside the 8 minutes of a device call), so a hang costs
# one step. Full logs go to $OUT (the device tool's output folder; ./gpu-check-out when unset),
# at most 8 files; a short table is printed last. Exit 0 when every step passed.
# Without a GPU it stops after the preflight with a "no GPU" message and exit code 0
# (MIBCORE_GPU_CHECK_NVCC=1 adds the nvcc resource check of csrc/cuda there).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET_S:-450}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
STATUS=()

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LIMIT_S LOG CMD...: runs CMD with at most LIMIT_S seconds (less if the budget is
# nearly spent), its output in $OUT/LOG; records and prints the status.
step() {
  local name=$1 limit=$2 log=$3; shift 3
  local left=$((BUDGET - ($(date +%s) - START) - 5))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 0 ]; then
    STATUS+=("$name|SKIPPED (budget spent)|0"); say "[$name] SKIPPED: the ${BUDGET} s budget is spent"; return 1
  fi
  say "[$name] running (timeout ${limit} s, log $log)"
  local t0=$(date +%s) rc
  { echo "\$ $*"; timeout --kill-after=10 "$limit" "$@"; } >> "$OUT/$log" 2>&1
  rc=$?
  local dt=$(($(date +%s) - t0)) status
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit} s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  STATUS+=("$name|$status|$dt")
  say "[$name] $status in ${dt} s"
  [ "$rc" = 0 ]
}

table() {
  echo
  echo "| step | status | seconds |"
  echo "| --- | --- | --- |"
  for s in "${STATUS[@]}"; do IFS='|' read -r n st dt <<< "$s"; echo "| $n | $st | $dt |"; done
}

# ---------------------------------------------------------------- 1. preflight
preflight() {
  local missing=0 f
  for f in setup.py csrc/ops.cpp csrc/autograd.cpp tests/conftest.py tests/test_gpu.py tests/test_cuda_build.py \
    benchmarks/__main__.py benchmarks/cases.py mibcore/backends.py; do
    [ -f "$f" ] || { echo "missing: $f"; missing=1; }
  done
  ls csrc/cuda/*.cu csrc/cuda/*_cuda.cpp > /dev/null || missing=1
  command -v timeout > /dev/null || { echo "missing: timeout (coreutils)"; missing=1; }
  "$PY" - <<'PY' || missing=1
import importlib.util, sys
import torch
need = [m for m in ("pytest", "numpy") if importlib.util.find_spec(m) is None]
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (cuda {torch.version.cuda}), "
      f"triton {'present' if importlib.util.find_spec('triton') else 'absent'}")
if need:
    sys.exit(f"missing python packages: {', '.join(need)}")
PY
  "$PY" -m benchmarks --help > /dev/null || { echo "python -m benchmarks does not start"; missing=1; }
  return $missing
}
export -f preflight
export PY
step preflight 60 preflight.log bash -c preflight || { cat "$OUT/preflight.log"; table; exit 1; }
tail -n 1 "$OUT/preflight.log" | tee -a "$SUMMARY"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null; then
  if [ "${MIBCORE_GPU_CHECK_NVCC:-0}" = 1 ]; then
    step nvcc-resources 300 preflight.log "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_build.py
  fi
  table
  say "gpu-check: no GPU here (torch.cuda.is_available() is false): the preflight passed, nothing to run on a device."
  exit 0
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$SUMMARY"
fi

# ---------------------------------------------------------------- 2. build
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
if ! step build-cuda 240 build.log env MIBCORE_BUILD_CUDA=1 "$PY" setup.py -q build_ext --inplace; then
  tail -n 40 "$OUT/build.log"
  step build-cpu-only 150 build.log env MIBCORE_BUILD_CUDA=0 "$PY" setup.py -q build_ext --inplace
fi
step import 60 build.log "$PY" -c "import torch, mibcore; print(torch.ops.mibcore.build_info(), \
'cuda backends:', mibcore.backends.available('cuda'))"
tail -n 1 "$OUT/build.log" | tee -a "$SUMMARY"

# ---------------------------------------------------------------- 3, 4. tests
export TRITON_INTERPRET=0
step gpu-tests 120 tests-gpu.log "$PY" -m pytest -q -p no:cacheprovider -m gpu -rfEs tests
step contract 120 tests-contract.log env MIBCORE_TEST_DEVICE=cuda MIBCORE_REQUIRE_BACKENDS=cuda,triton \
  "$PY" -m pytest -q -p no:cacheprovider -rfE tests/test_reparameterize_kl.py tests/test_tensor_fusion.py \
  tests/test_low_rank_fusion.py tests/test_dropout.py tests/test_dropout_kernels.py tests/test_backends.py
for log in tests-gpu.log tests-contract.log; do tail -n 1 "$OUT/$log" | sed "s/^/$log: /" | tee -a "$SUMMARY"; done

# ---------------------------------------------------------------- 5. benchmarks
BENCH=$(mktemp -d)
step bench 150 bench.log "$PY" -m benchmarks --device cuda --quick --out "$BENCH"
cp "$BENCH"/results.csv "$BENCH"/results.md "$OUT"/ 2> /dev/null
if [ -f "$OUT/results.csv" ]; then
  "$PY" - "$OUT/results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("\n| op | shape | provider | fwd+bwd ms | x eager |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    if r["op"] != "train_step" or r["provider"] in ("reference", "cuda", "triton"):
        print(f"| {r['op']} | {r['shape']} | {r['provider']} | {float(r['full_ms']):.3f} "
              f"| {float(r['speedup_full']):.2f} |")
PY
fi

table | tee -a "$SUMMARY"
for s in "${STATUS[@]}"; do case $s in *"|ok|"*) ;; *) exit 1 ;; esac; done
exit 0
