#!/usr/bin/env bash
# Compiles the extension's CPU kernels (csrc/cpu/*.cpp; the rest, csrc/library.cpp and csrc/ops, is
# plain torch code with nothing per architecture) for aarch64 with Debian's
# cross compiler against torch's headers: the CPU kernels must keep portable fallbacks (only the
# baseline pass exists there, csrc/cpu/isa_foreach.h). Compile only, nothing runs or links.
# Installs g++-aarch64-linux-gnu with apt-get where it is missing and we are root; otherwise
# skipped with a message, or FAILED under MIBCORE_REQUIRE_CROSS_CHECK=1 (set by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=aarch64-linux-gnu-g++
fail_or_skip() {
  if [ "${MIBCORE_REQUIRE_CROSS_CHECK:-0}" = 1 ]; then echo "aarch64-check: FAILED ($1)"; exit 1; fi
  echo "aarch64-check: skipped ($1)"; exit 0
}
if ! command -v $CXX >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q g++-aarch64-linux-gnu >/dev/null 2>&1 || true
fi
command -v $CXX >/dev/null 2>&1 || fail_or_skip "no $CXX (apt-get install g++-aarch64-linux-gnu)"
PY=${PYTHON:-.venv/bin/python}
TI=$($PY -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
PYI=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# The generated header of the shared math's constants (setup.py and CMake make it the same way).
$PY mibcore/_math_tables.py "$OUT/generated" > /dev/null
pids=()
for src in csrc/cpu/*.cpp; do
  $CXX -std=c++20 -O0 -fopenmp -Wno-psabi -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C \
    -Icsrc/include -I"$OUT/generated" -I"$TI" -I"$TI/torch/csrc/api/include" -I"$PYI" -c "$src" -o "$OUT/$(basename "$src").o" \
    > "$OUT/$(basename "$src").log" 2>&1 &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}" || true; pids=("${pids[@]:1}"); fi
done
wait || true
status=0
for src in csrc/cpu/*.cpp; do
  if [ ! -s "$OUT/$(basename "$src").o" ]; then
    echo "aarch64-check: $src does not compile for aarch64:"; head -n 40 "$OUT/$(basename "$src").log"; status=1
  elif file "$OUT/$(basename "$src").o" | grep -qv "ARM aarch64"; then
    echo "aarch64-check: $src: not an aarch64 object"; status=1
  fi
done
[ $status = 0 ] && echo "aarch64-check: every C++ source of the extension compiles for aarch64 ($($CXX -dumpversion))"
exit $status
