#!/usr/bin/env bash
# Builds mibcore._C with its CUDA sources against a CUDA build of torch (no GPU needed), then
# imports it: proves that the torch-facing CUDA host code (csrc/cuda/*.cpp, which needs
# c10/cuda headers) compiles and links, beyond the standalone nvcc check of the kernels.
# Skipped, with a message, where nvcc or the CUDA torch wheel is not available; under
# MIBCORE_REQUIRE_CUDA_CHECKS=1 (set by .ci/run) those cases fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-cuda
skip() {
  if [ "${MIBCORE_REQUIRE_CUDA_CHECKS:-0}" = 1 ]; then
    echo "cuda-torch-check: FAILED ($1; MIBCORE_REQUIRE_CUDA_CHECKS=1)"; exit 1
  fi
  echo "cuda-torch-check: skipped ($1)"; exit 0
}
if ! command -v nvcc >/dev/null 2>&1; then
  skip "no nvcc"
fi
# CUDA_HOME from the real nvcc (nvcc may be a wrapper script that execs it).
source .ci/cuda_home.sh
test -x $VENV/bin/python || python3 -m venv $VENV
if ! $VENV/bin/pip install -q torch==2.14.1 numpy ninja setuptools wheel; then
  skip "a CUDA build of torch could not be installed"
fi
rm -rf build-cuda && mkdir -p build-cuda
# (Without the CPU kernels: this check is about the CUDA host code.)
if ! MIBCORE_BUILD_CUDA=1 MIBCORE_CPU_KERNELS=0 TORCH_CUDA_ARCH_LIST="8.0;9.0" MAX_JOBS=${MAX_JOBS:-2} \
  $VENV/bin/python setup.py -q build_ext --build-lib build-cuda/lib --build-temp build-cuda/tmp > build-cuda/build.log 2>&1; then
  tail -n 60 build-cuda/build.log
  echo "cuda-torch-check: FAILED to build mibcore._C against a CUDA torch (log: build-cuda/build.log)"
  exit 1
fi
$VENV/bin/python - <<'PY'
import glob, importlib.util, torch
path = glob.glob("build-cuda/lib/mibcore/_C*.so")[0]
spec = importlib.util.spec_from_file_location("mibcore._C", path)
spec.loader.exec_module(importlib.util.module_from_spec(spec))
info = torch.ops.mibcore.build_info()
assert "cuda=1" in info, info
cuda_ops = sorted(n for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("mibcore::") and torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA"))
assert cuda_ops, "no mibcore operator has a CUDA kernel"
# The CUDA kernels' host code checks its arguments (csrc/include/mibcore/*_host.h) before any CUDA
# call, so CPU tensors sent to it get an error naming the argument, even without a GPU. Every CUDA
# operator is called with arguments made from its schema (no operator is named here).
cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)


def cpu_argument(arg):
    kind = str(arg.type)
    kind = kind[len("Optional["):-1] if kind.startswith("Optional[") else kind
    if arg.name == "rng":
        return torch.tensor([1, 2])
    if kind == "List[Tensor]":
        return [torch.randn(4, 4), torch.randn(4, 4)]
    if kind == "Tensor":
        return torch.randn(4, 4)
    return {"float": 0.5, "int": 0, "bool": True}[kind]


for qualified in cuda_ops:
    name = qualified.removeprefix("mibcore::")
    op = getattr(torch.ops.mibcore, name).default
    try:
        op.redispatch(cuda, *[cpu_argument(a) for a in op._schema.arguments])
        raise AssertionError(f"{name}: the CUDA kernel accepted CPU tensors")
    except ValueError as error:  # (shape, value and device mistakes: ValueError, as in Python)
        message = str(error).splitlines()[0]
        assert message.startswith(name.removesuffix("_backward")) and "CUDA" in message, (name, message)
print(f"cuda-torch-check: mibcore._C built against torch {torch.__version__} ({info}) imports; CUDA kernels: "
      f"{', '.join(n.removeprefix('mibcore::') for n in cuda_ops)}")
PY
