#!/usr/bin/env bash
# Planted-bug check of cuda-emu (`make cuda-emu-mutations`): each mutation below is applied to a
# copy of csrc/cuda in a temporary folder, the copy is built the cuda-emu way (reusing the
# unmutated objects of build-cuda-emu: only the mutated file recompiles) and run; cuda-emu must
# FAIL on every mutation (a mismatch or a sanitizer report) and pass on the unmutated sources.
# Exit status 0 when all of that holds.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
EMU_MK=csrc/cuda_emu/emu.mk
BASE=${BUILD:-build-cuda-emu}
JOBS=${JOBS:-2}
echo "cuda-emu-mutations: the unmutated build"
make --no-print-directory -s -f $EMU_MK BUILD="$BASE" PYTHON="$PYTHON" -j"$JOBS" "$BASE/run_cases" >/dev/null
"$BASE/run_cases" --jobs "$JOBS" | tail -n 1

# name | file | exact text | replacement (the text occurs once in its file; \n is a line break)
MUTATIONS=(
  "removed __syncthreads (tensor_fusion forward_fma_kernel, the one after the shared slabs are written)|tensor_fusion_kernels.cu|ws[col][o / 4].v[o % 4] = inside ? w : acc_t(0);\\n        }\\n        __syncthreads();|ws[col][o / 4].v[o % 4] = inside ? w : acc_t(0);\\n        }"
  "bound off by one, < to <= (reparameterize_kl RowBlocks::in, the row's end)|reparameterize_kl_kernels.cu|return i >= e0 && i < e1;|return i >= e0 && i <= e1;"
  "shortened warp reduction (reparameterize_kl warp_sum from delta 8, not 16)|reparameterize_kl_kernels.cu|for (int delta = 16; delta > 0; delta /= 2)|for (int delta = 8; delta > 0; delta /= 2)"
  "wrong block index term (dropout: blockIdx.y * blockDim.x, not blockIdx.x)|dropout_kernels.cu|static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x|static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x"
)

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mutate() {  # index -> builds and runs mutation $1 in $TMP/m$1, writes its verdict to $TMP/m$1/verdict
  local i=$1 name file from to dir
  IFS='|' read -r name file from to <<<"${MUTATIONS[$i]}"
  dir=$TMP/m$i
  mkdir -p "$dir/mibcore"
  cp -a csrc "$dir/csrc"
  cp -a mibcore/_math_tables.py "$dir/mibcore/"
  cp -a "$BASE" "$dir/build"
  case $file in *.cu) ;; *) rm -f "$dir"/build/*_kernels.o ;; esac  # the .d files name the original headers
  "$PYTHON" - "$dir/csrc/cuda/$file" "$from" "$to" <<'PY'
import sys
path, old, new = (a.replace("\\n", "\n") for a in sys.argv[1:])
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"mutation site not found exactly once in {path}: {old!r}")
open(path, "w").write(text.replace(old, new))
PY
  if ! make --no-print-directory -s -f $EMU_MK SRC="$dir/csrc" BUILD="$dir/build" PYTHON="$PYTHON" \
      "$dir/build/run_cases" >"$dir/build.log" 2>&1; then
    echo "ERROR: does not compile: $name" >"$dir/verdict"; cat "$dir/build.log" >&2; return
  fi
  local status=0
  "$dir/build/run_cases" --jobs 1 >"$dir/run.log" 2>&1 || status=$?
  if [ $status = 0 ]; then
    echo "SURVIVED (cuda-emu passed): $name" >"$dir/verdict"
  else
    local why
    why=$(grep -m1 -oE "ERROR: AddressSanitizer: [a-z-]+|runtime error: [^(]*|cuda-emu: divergent barrier|[0-9]+ mismatches" \
      "$dir/run.log" | head -n 1)
    [ -n "$why" ] || why="exit status $status"
    echo "caught ($(grep -c '^MISMATCH' "$dir/run.log" || true) mismatch lines; $why): $name" >"$dir/verdict"
  fi
}
pids=()
for i in "${!MUTATIONS[@]}"; do
  mutate "$i" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait
status=0
for i in "${!MUTATIONS[@]}"; do
  verdict=$(cat "$TMP/m$i/verdict" 2>/dev/null || echo "ERROR: no verdict for mutation $i")
  echo "cuda-emu-mutations: $verdict"
  case $verdict in caught*) ;; *) status=1 ;; esac
done
[ $status = 0 ] && echo "cuda-emu-mutations: OK (every mutation fails cuda-emu, the unmutated sources pass)"
exit $status
