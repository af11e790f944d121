#!/usr/bin/env bash
# `make gpu-rehearsal`: the device check (.ci/gpu_check.sh) rehearsed without a GPU, on a replica of
# the lent GPU machine's software and of what the device tool sends it:
# - the software: Python 3.12 (pyenv's), torch 2.11.0 (the CUDA build, as on the device: cu13),
#   triton 3.6.0 and the packages the device has preinstalled that the tests use, in a venv built
#   once and cached (MIBCORE_DEVICE_VENV, default .venv-device, git-ignored); mibcore is NOT
#   installed in it;
# - the checkout: the tracked files and the untracked files git does not ignore, copied into a
#   fresh folder with nothing beside it (no ../shared, no .venv, no build, no mibcore/_C*.so);
# then runs `gpu_check.sh --rehearsal` there: preflight, the CUDA build (it must report cuda=1),
# imports, collection of the GPU tier, the benchmark's providers, the budget. Exit code: the
# check's (non-zero when a step fails for a reason other than the missing GPU). Logs: $OUT
# (default gpu-rehearsal-out/). Needs nvcc here for the CUDA build; the first run downloads the
# wheels (torch's is 0.5 GB) and takes minutes, the build takes minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${MIBCORE_DEVICE_VENV:-$ROOT/.venv-device}
# The device's versions (KINDS.md of the device tool: Python 3.12.3, torch 2.11.0+cu130, triton
# 3.6.0, transformers 5.17.0); it has no expecttest, so neither has the replica.
PACKAGES="torch==2.11.0 triton==3.6.0 transformers==5.17.0 numpy pytest pytest-benchmark pytest-xdist
pytest-timeout h5py tqdm matplotlib pybind11 ninja hypothesis pyyaml setuptools wheel"
STAMP=$VENV/.replica-$(echo "$PACKAGES" | sha1sum | cut -c1-12)

python312() {
  local v
  if command -v pyenv > /dev/null; then
    for v in $(pyenv versions --bare 2> /dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V -r); do
      PYENV_VERSION=$v pyenv which python3.12 2> /dev/null && return
    done
  fi
  for v in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2> /dev/null | sort -V -r); do
    echo "$v"; return
  done
  command -v python3.12 || { echo "gpu-rehearsal: no Python 3.12 (pyenv install 3.12)" >&2; return 1; }
}

if [ ! -f "$STAMP" ]; then
  echo "gpu-rehearsal: building the device replica in $VENV (once)"
  [ -f "$VENV/pyvenv.cfg" ] && rm -rf "$VENV"
  "$(python312)" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $PACKAGES
  "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'torch is not a CUDA build')"
  touch "$STAMP"
fi
"$VENV/bin/python" -c "import sys, torch, triton; print(f'replica: python {sys.version.split()[0]}, torch {torch.__version__} (cuda {torch.version.cuda}), triton {triton.__version__}')"

# The checkout as the device tool sends it.
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir "$STAGE/repo"
{ git ls-files -z; git ls-files -z --others --exclude-standard; } \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | xargs -0 cp --parents -P -t "$STAGE/repo"
echo "checkout copied to $STAGE/repo ($(find "$STAGE/repo" -type f | wc -l) files)"

OUT=${OUT:-$ROOT/gpu-rehearsal-out}
rm -rf "$OUT" && mkdir -p "$OUT"
cd "$STAGE/repo"
env -u PYTHONPATH -u TRITON_INTERPRET -u MIBCORE_REQUIRE_BACKENDS PYTHON="$VENV/bin/python" OUT="$OUT" \
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" bash .ci/gpu_check.sh --rehearsal
