# Sourced by the scripts that build mibcore._C against a CUDA torch (.ci/cuda_torch_check.sh,
# .ci/gpu_check.sh): sets CUDA_HOME from the nvcc on the PATH when it is not set. torch's
# cpp_extension guesses CUDA_HOME as nvcc's grandparent folder, which is wrong where nvcc is a
# link or a wrapper script that execs the real one (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`):
# here CUDA_HOME is the real nvcc's grandparent. Does nothing where there is no nvcc.
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc > /dev/null 2>&1; then
  _mib_nvcc=$(readlink -f "$(command -v nvcc)")
  if [ "$(head -c 2 "$_mib_nvcc")" = "#!" ]; then
    _mib_real=$(sed -n 's/^[[:space:]]*exec[[:space:]]\{1,\}"\{0,1\}\([^ "]*nvcc\).*/\1/p' "$_mib_nvcc" | head -n 1)
    [ -n "$_mib_real" ] && [ -x "$_mib_real" ] && _mib_nvcc=$(readlink -f "$_mib_real")
  fi
  CUDA_HOME=$(dirname "$(dirname "$_mib_nvcc")")
  export CUDA_HOME
  unset _mib_nvcc _mib_real
fi
