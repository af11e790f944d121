#!/usr/bin/env bash
# The one prepared device check (`make gpu-check`), for a lent GPU machine as it is (an H200 with
# 16 cores, python3 = Python 3.12 with torch 2.11.0+cu130 and triton 3.6.0 preinstalled, no
# network: nothing is installed or downloaded). The checkout arrives as the device tool sends it:
# tracked files, no editable install (mibcore is imported from here: PYTHONPATH=$ROOT).
#
#   step         cap (s)  what
#   preflight        25   files, tools, python packages; mibcore and mibcore.kernels import from
#                         this checkout; the step caps fit the budget
#   build           130   mibcore._C with its CUDA sources, in place (MIBCORE_BUILD_CUDA=1,
#                         TORCH_CUDA_ARCH_LIST=9.0, the CPU kernels for the baseline only,
#                         MAX_JOBS=16; CUDA_HOME from .ci/cuda_home.sh), unless a mibcore._C carried
#                         with the checkout loads with cuda=1; if the build fails, a CPU-only
#                         build in what is left of the cap, so that the Triton backend is still tested
#   imports          20   every module of mibcore (mibcore.kernels included) and of benchmarks;
#                         the build reports cuda=1
#   smoke            80   pytest -m "gpu and smoke" -x: one case per operator, backend and dtype
#   gpu-tests        75   pytest -m "gpu and not smoke": the device-parametrized contract and the
#                         GPU-only tests (compiled Triton: TRITON_INTERPRET=0), on 8 pytest-xdist
#                         workers where xdist is installed (the Triton compiles run in parallel);
#                         plus what a carried build left unused of the build's cap
#   memcheck         25   compute-sanitizer --tool memcheck over the CUDA kernels' smoke cases
#   racecheck        20   compute-sanitizer --tool racecheck over the same cases
#   bench            45   python -m benchmarks --device cuda --quick --no-train --skip-provider
#                         compile: every operator case, eager reference against the fused backends
#                         (and cuBLAS); each row is written to results.csv as it is measured, a
#                         failing provider is a row with its error (torch.compile and the training
#                         steps are left to a run with more time: inductor's compiles alone take minutes)
#   graph-step       30   python -m benchmarks.graph_step: the C-MIB training step (tensor fusion, paper
#                         shapes) per backend, eager and in one CUDA graph, against the paper's formulation
# The caps add up to the budget (GPU_CHECK_BUDGET_S, default 450 s: 8 minutes of a device call less
# its start); each step also stops when the budget is spent, so a hang costs one step. Logs go to
# $OUT (the device tool's output folder; ./gpu-check-out when unset), 8 files at most (the tool
# returns no more): summary.txt, preflight.log, build.log (build and imports), smoke.log,
# gpu-tests.log, sanitizer.log, bench.log (bench and graph-step), results.csv. The benchmark
# table, the training-step table and the step table (status and seconds of each step) are printed
# last. Exit 0 when every step passed.
#
# Modes:
#   (GPU present)  the device check above.
#   (no GPU)       the preflight, then "no GPU here" and exit code 0.
#   --rehearsal    (MIBCORE_GPU_CHECK=rehearsal) every step up to the first that needs a GPU, on a
#                  machine without one: preflight, build (it must report cuda=1), imports, collect
#                  (the whole GPU tier with TRITON_INTERPRET=0, no collection error allowed; counts
#                  the gpu and smoke tests), providers (the benchmark's providers as a GPU machine
#                  resolves them), budget (the caps add up to at most the budget); the GPU steps are
#                  listed as not run. Exit non-zero when a
#                  step fails for a reason other than the missing GPU. MIBCORE_GPU_CHECK_STEPS
#                  names the steps to run (CI's cheap rehearsal, tests/test_gpu_check.py: "preflight
#                  collect", no build). `make gpu-rehearsal` runs it on a replica of the device's
#                  software and checkout (.ci/gpu_rehearsal.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${MIBCORE_GPU_CHECK:-device}
[ "${1:-}" = --rehearsal ] && MODE=rehearsal
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUDGET=${GPU_CHECK_BUDGET_S:-450}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS=()
FAILED=0

# The steps and their caps (seconds on the device): they must add up to at most the budget.
STEPS=(preflight:25 build:130 imports:20 smoke:80 gpu-tests:75 memcheck:25 racecheck:20 bench:45 graph-step:30)
cap() { local s; for s in "${STEPS[@]}"; do [ "${s%%:*}" = "$1" ] && echo "${s#*:}"; done; }

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python
else PY=python3; fi
# No install: mibcore (and mibcore.kernels, benchmarks) are imported from this checkout.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PY ROOT
export TRITON_INTERPRET=0  # compiled Triton on the GPU; the Triton backend declared for cuda devices

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LOG CMD...: runs CMD under NAME's cap (on the device, less where the budget is nearly
# spent; in a rehearsal, the machine differs: REHEARSAL_CAP_S, default 1800 s), its output appended
# to $OUT/LOG; records and prints the status. A command may write a status of its own (e.g.
# "unsupported here") to $WORK/NAME.status: then a zero exit is reported with it.
step() {
  local name=$1 log=$2 limit; shift 2
  if ! selected "$name"; then not_run "$name" "not run (MIBCORE_GPU_CHECK_STEPS)"; return 0; fi
  limit=${STEP_CAP_OVERRIDE:-$(cap "$name")}
  if [ "$MODE" = rehearsal ]; then
    limit=${REHEARSAL_CAP_S:-1800}
  else
    local left=$((BUDGET - ($(date +%s) - START)))
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  if [ "$limit" -le 0 ]; then
    STATUS+=("$name|SKIPPED (the ${BUDGET} s budget is spent)|0"); FAILED=1
    say "[$name] SKIPPED: the ${BUDGET} s budget is spent"; return 1
  fi
  say "[$name] running (timeout ${limit} s, log $log)"
  local t0 rc dt status
  t0=$(date +%s)
  { echo "\$ $*"; timeout --kill-after=10 "$limit" "$@"; } >> "$OUT/$log" 2>&1
  rc=$?
  dt=$(($(date +%s) - t0))
  case $rc in
    0) status=ok; [ -s "$WORK/$name.status" ] && status=$(cat "$WORK/$name.status") ;;
    124|137) status="TIMEOUT after ${limit} s"; FAILED=1 ;;
    *) status="FAILED (exit $rc)"; FAILED=1 ;;
  esac
  STATUS+=("$name|$status|$dt")
  say "[$name] $status in ${dt} s"
  [ "$rc" = 0 ]
}

not_run() { STATUS+=("$1|$2|0"); }
selected() { [ -z "${MIBCORE_GPU_CHECK_STEPS:-}" ] || [[ " ${MIBCORE_GPU_CHECK_STEPS//,/ } " == *" $1 "* ]]; }

table() {
  echo
  echo "| step | cap s | status | seconds |"
  echo "| --- | ---: | --- | ---: |"
  local s n st dt total=0
  for s in "${STATUS[@]}"; do
    IFS='|' read -r n st dt <<< "$s"
    echo "| $n | $(cap "$n" || true) | $st | $dt |"
    total=$((total + dt))
  done
  echo "| total | $BUDGET | mode $MODE | $total |"
}

finish() {
  table | tee -a "$SUMMARY"
  exit "$FAILED"
}

# ---------------------------------------------------------------- preflight
budget_check() {  # the step caps add up to at most the budget
  local sum=0 s
  for s in $STEPS_LIST; do sum=$((sum + ${s#*:})); done
  echo "step caps: $STEPS_LIST (sum ${sum} s, budget ${BUDGET} s)"
  [ "$sum" -le "$BUDGET" ] || { echo "the step caps (${sum} s) exceed the budget (${BUDGET} s)"; return 1; }
}
preflight() {
  local missing=0 f
  for f in setup.py tests/conftest.py benchmarks/__main__.py mibcore/kernels/__init__.py; do
    [ -f "$f" ] || { echo "missing: $f"; missing=1; }
  done
  ls csrc/cuda/*.cu > /dev/null || missing=1
  for f in timeout git; do command -v $f > /dev/null || { echo "missing: $f"; missing=1; }; done
  if selected build; then
    source .ci/cuda_home.sh
    command -v nvcc > /dev/null && echo "nvcc: $(command -v nvcc), CUDA_HOME=${CUDA_HOME:-}" \
      || echo "no nvcc: the CUDA build will fail (the CPU-only build then serves the Triton tests)"
  fi
  command -v compute-sanitizer > /dev/null || echo "no compute-sanitizer: memcheck and racecheck will not run"
  budget_check || missing=1
  "$PY" - <<'PY' || missing=1
import importlib.util, os, sys
import torch
root = os.path.realpath(os.environ["ROOT"])
need = [m for m in ("pytest", "numpy", "triton", "setuptools") if importlib.util.find_spec(m) is None]
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__} (cuda {torch.version.cuda}), "
      f"triton {'present' if importlib.util.find_spec('triton') else 'absent'}, "
      f"xdist {'present' if importlib.util.find_spec('xdist') else 'absent'}")
if need:
    sys.exit(f"missing python packages: {', '.join(need)}")
import mibcore.kernels  # the package itself, never an install elsewhere
for module in (mibcore, mibcore.kernels):
    where = os.path.realpath(module.__file__)
    if not where.startswith(root + os.sep):
        sys.exit(f"{module.__name__} is imported from {where}, not from this checkout ({root})")
print(f"mibcore and mibcore.kernels import from {root}")
import contextlib, io
from benchmarks import __main__ as bench  # python -m benchmarks starts
try:
    with contextlib.redirect_stdout(io.StringIO()):
        bench.main(["--help"])
except SystemExit as end:
    if end.code:
        sys.exit("python -m benchmarks does not start")
PY
  return $missing
}
export -f preflight selected budget_check
export MODE STEPS_LIST="${STEPS[*]}" BUDGET
step preflight preflight.log bash -c preflight || { cat "$OUT/preflight.log"; finish; }
grep -E "^(python|mibcore and|nvcc|no nvcc|no compute|step caps)" "$OUT/preflight.log" | tee -a "$SUMMARY"

HAS_GPU=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null && HAS_GPU=1
if [ "$HAS_GPU" = 0 ] && [ "$MODE" != rehearsal ]; then
  table | tee -a "$SUMMARY"
  say "gpu-check: no GPU here (torch.cuda.is_available() is false): the preflight passed, nothing to run on a device" \
    "(a rehearsal: bash .ci/gpu_check.sh --rehearsal, or make gpu-rehearsal)."
  exit 0
fi
if [ "$HAS_GPU" = 1 ] && command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$SUMMARY"
fi

# The bench step's options (the rehearsal resolves its providers with the same).
export BENCH_ARGS="--device cuda --quick --no-train --skip-provider compile"

# ---------------------------------------------------------------- build, imports
source .ci/cuda_home.sh
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
CUDA_BUILT=0
SPARE=0
prebuilt_loads() {
  ls mibcore/_C.cpython-*.so > /dev/null 2>&1 || return 1
  "$PY" -c "import sys, torch; from mibcore import _extension; i = _extension.load(); sys.exit(0 if i and i.get('cuda') == '1' else 1)" \
    >> "$OUT/build.log" 2>&1
}
if ! selected build; then
  not_run build "not run (MIBCORE_GPU_CHECK_STEPS)"
else
  build_start=$(date +%s)
  if [ "$MODE" != rehearsal ] && prebuilt_loads; then
    # A mibcore._C for this Python, built with nvcc for sm_90 against this torch elsewhere and carried
    # with the checkout (the device tool's `carry`): the build step's minutes are the device's
    # scarcest; a carried build that does not load here is rebuilt below.
    STATUS+=("build|prebuilt (carried), loads with cuda=1|0"); CUDA_BUILT=1
    SPARE=$(( $(cap build) - ($(date +%s) - build_start) ))  # the build's cap, unused: to the GPU tests
    say "[build] a carried mibcore._C loads with cuda=1: not rebuilt"
  elif step build build.log env MIBCORE_BUILD_CUDA=1 MIBCORE_CPU_BASELINE_ONLY=1 "$PY" setup.py -q build_ext --inplace; then
    CUDA_BUILT=1
  else
    tail -n 40 "$OUT/build.log"
    rest=$(( $(cap build) - ($(date +%s) - build_start) ))
    [ "$MODE" = rehearsal ] && rest=${REHEARSAL_CAP_S:-1800}
    if [ "$rest" -gt 0 ]; then
      STEP_CAP_OVERRIDE=$rest step build-cpu-only build.log \
        env MIBCORE_BUILD_CUDA=0 MIBCORE_CPU_BASELINE_ONLY=1 "$PY" setup.py -q build_ext --inplace
    fi
  fi
fi
import_all() {
  "$PY" - <<'PY'
import importlib, os, pkgutil, sys
import torch
import mibcore, mibcore.backends
from mibcore import _extension
modules = ["mibcore", "benchmarks"]
for package in ("mibcore", "benchmarks"):
    path = [os.path.join(os.environ["ROOT"], *package.split("."))]
    modules += [m.name for m in pkgutil.walk_packages(path, package + ".")
                if not m.name.rsplit(".", 1)[-1].startswith("test_") and not m.name.endswith("__main__")]
failed = []
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
print(f"imported {len(modules) - len(failed)} of {len(modules)} modules "
      f"({sum(m.startswith('mibcore.kernels') for m in modules)} of mibcore.kernels)")
info = _extension.load()
built = "mibcore._C not built" if info is None else ";".join(f"{k}={v}" for k, v in info.items())
ready = [name for name, b in mibcore.backends.BACKENDS.items() if b.ready()]
print(f"build: {built}; backends ready: {', '.join(ready)}; serving cuda now: {mibcore.backends.available('cuda')}")
if failed:
    sys.exit("import failures:\n  " + "\n  ".join(failed))
if os.environ.get("CUDA_BUILT") == "1" and (info or {}).get("cuda") != "1":
    sys.exit("the CUDA build passed but mibcore._C does not report cuda=1")
PY
}
export -f import_all
export CUDA_BUILT
step imports build.log bash -c import_all
tail -n 2 "$OUT/build.log" | tee -a "$SUMMARY"
[ "$CUDA_BUILT" = 1 ] && REQUIRE=triton,cuda || REQUIRE=triton
export MIBCORE_REQUIRE_BACKENDS=$REQUIRE

# ---------------------------------------------------------------- rehearsal: what needs no GPU
if [ "$HAS_GPU" = 0 ]; then
  collect() {  # the GPU tier as the device collects it (TRITON_INTERPRET=0), once, with its counts
    # Without a GPU no backend serves cuda tensors: the required backends are checked among the
    # collected cases instead (MIBCORE_REQUIRE_BACKENDS would fail every collection here).
    REQUIRE=$MIBCORE_REQUIRE_BACKENDS MIBCORE_REQUIRE_BACKENDS= "$PY" - <<'PY'
import os, sys
import pytest

class Count:
    gpu = smoke = 0
    backends = {}

    def pytest_collection_finish(self, session):
        self.gpu = len(session.items)
        self.smoke = sum(item.get_closest_marker("smoke") is not None for item in session.items)
        for item in session.items:  # the backend parameter of the contract cases (tests/utils.Backend)
            for value in getattr(getattr(item, "callspec", None), "params", {}).values():
                if type(value).__name__ == "Backend":  # a str subclass: the backend's name
                    self.backends[str(value)] = self.backends.get(str(value), 0) + 1

count = Count()
rc = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"], plugins=[count])
per_backend = ", ".join(f"{name} {n}" for name, n in sorted(count.backends.items()))
print(f"collected GPU tests: {count.gpu} (smoke tier: {count.smoke}; cases per backend: {per_backend}); "
      f"pytest exit code {int(rc)}")
missing = [b for b in os.environ["REQUIRE"].split(",") if b not in count.backends]
if rc != 0 or not count.smoke or missing:
    sys.exit("collection errors, or no GPU or smoke test collected, or no case of the backends "
             f"the device must test: {', '.join(missing)}")
PY
  }
  export -f collect
  step collect preflight.log bash -c collect
  grep "^collected GPU tests" "$OUT/preflight.log" | tail -n 1 | tee -a "$SUMMARY"
  providers() {
    "$PY" - <<'PY'
import sys
import torch
torch.cuda.is_available = lambda: True  # resolve the providers as a GPU machine would (nothing runs)
import argparse, os
import mibcore
from benchmarks import add_arguments, cases
from benchmarks import __main__ as bench
parser = argparse.ArgumentParser()
add_arguments(parser)
args = parser.parse_args(os.environ["BENCH_ARGS"].split())  # the bench step's own options
wanted = {name for name, b in mibcore.backends.BACKENDS.items()
          if name != "reference" and b.ready() and "cuda" in b.devices()}
seen = set()
for case in filter(lambda c: bench._selected(c, args), cases.all_cases(quick=args.quick)):
    names = bench._providers(case, args.device, args)
    seen.update(names)
    print(f"{case.op:18s} {case.shape:26s} {' '.join(names)}")
print(f"fused backends timed on cuda: {', '.join(sorted(wanted & seen)) or 'none'}")
if wanted - seen:
    sys.exit(f"backends ready for cuda but in no benchmark case: {', '.join(sorted(wanted - seen))}")
PY
  }
  export -f providers
  step providers bench.log bash -c providers
  tail -n 1 "$OUT/bench.log" | tee -a "$SUMMARY"
  step budget preflight.log bash -c budget_check
  for s in smoke gpu-tests memcheck racecheck bench graph-step; do not_run "$s" "not run (needs a GPU)"; done
  say "gpu-check rehearsal: every step up to the first that needs a GPU $([ $FAILED = 0 ] && echo passed || echo FAILED)."
  finish
fi

# ---------------------------------------------------------------- tests
XDIST=()
"$PY" -c "import xdist" 2> /dev/null && XDIST=(-n "${GPU_CHECK_WORKERS:-8}")
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -rfEs --tb=short)
# A hung test fails alone (pytest-timeout, preinstalled there) instead of eating the step's cap,
# and each failure is printed as it happens (tests/conftest.py), so a step cut off by its cap
# still says why its tests failed.
"$PY" -c "import pytest_timeout" 2> /dev/null && PYTEST+=(--timeout "${GPU_TEST_TIMEOUT_S:-60}")
export MIBCORE_FAILURES_NOW=1
step smoke smoke.log "${PYTEST[@]}" "${XDIST[@]}" -x -m "gpu and smoke" tests
STEP_CAP_OVERRIDE=$(( $(cap gpu-tests) + SPARE )) step gpu-tests gpu-tests.log \
  "${PYTEST[@]}" "${XDIST[@]}" -m "gpu and not smoke" tests
for log in smoke.log gpu-tests.log; do tail -n 1 "$OUT/$log" | sed "s/^/$log: /" | tee -a "$SUMMARY"; done
export WORK

# ---------------------------------------------------------------- compute-sanitizer
sanitize() {  # TOOL: the CUDA backend's smoke cases under compute-sanitizer (the Triton ones excluded)
  local tool=$1 rc=0
  if ! command -v compute-sanitizer > /dev/null; then
    echo "not run (no compute-sanitizer)" > "$WORK/$tool.status"; return 0
  fi
  compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
    "$PY" -m pytest -q -p no:cacheprovider -m "gpu and smoke" -k "not triton" tests || rc=$?
  if [ "$rc" != 0 ] && grep -qE "Device not supported|Error 999" "$OUT/sanitizer.log"; then
    echo "unsupported on this machine (see sanitizer.log)" > "$WORK/$tool.status"; return 0
  fi
  return $rc
}
export -f sanitize
if [ "$CUDA_BUILT" = 1 ]; then
  step memcheck sanitizer.log bash -c "sanitize memcheck"
  step racecheck sanitizer.log bash -c "sanitize racecheck"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log" | tee -a "$SUMMARY"
else
  not_run memcheck "not run (no CUDA build)"; not_run racecheck "not run (no CUDA build)"
fi

# ---------------------------------------------------------------- benchmarks
# results.csv is rewritten after each row: a bench cut short by its cap keeps what it measured.
step bench bench.log "$PY" -m benchmarks $BENCH_ARGS --out "$WORK/bench"
cp "$WORK/bench/results.csv" "$OUT/" 2> /dev/null
# The whole C-MIB training step, eager and in one CUDA graph (--cuda-graphs), per backend.
step graph-step bench.log "$PY" -m benchmarks.graph_step
sed -n '/^C-MIB .* training step/,$p' "$OUT/bench.log" | tee -a "$SUMMARY"
if [ -f "$OUT/results.csv" ]; then
  "$PY" - "$OUT/results.csv" <<'PY' | tee -a "$SUMMARY"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
num = lambda v, f: "-" if v in ("", None) else f.format(float(v))
print(f"\n{len(rows)} benchmark rows")
print("| op | shape | provider | fwd+bwd ms | x eager | note |")
print("| --- | --- | --- | ---: | ---: | --- |")
for r in rows:
    print(f"| {r['op']} | {r['shape']} | {r['provider']} | {num(r['full_ms'] or r['train_ms'], '{:.3f}')} "
          f"| {num(r['speedup_full'] or r['speedup_train'], '{:.2f}')} | {r['note'][:80]} |")
PY
fi
finish
