// The mibcore library (extension-cpp style): the module entry point and the build-wide ops.
// Each operator's schemas and autograd are in csrc/ops/<op>.cpp (TORCH_LIBRARY_FRAGMENT), its
// kernels in csrc/cpu and csrc/cuda, its fakes in mibcore/ops/<op>.py. Importing this library
// needs torch to be imported first.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "mibcore/host.h"
#include "mibcore/math.h"

extern "C" {
// A minimal module so that `import mibcore._C` loads the shared library (and runs the
// static registrations below) without pulling in pybind11.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace mibcore {

std::string build_info() {
#ifdef MIBCORE_NO_CPU_KERNELS
  std::string info = "cpu=0";
#else
  std::string info = "cpu=1";
#endif
#ifdef MIBCORE_WITH_CUDA
  info += ";cuda=1";
#else
  info += ";cuda=0";
#endif
  // The CPU kernels' instruction set is chosen at run time (cpu_isa(), csrc/cpu/isa.h); a
  // build for one -march (MIBCORE_CPU_ARCH, opt-in) runs only on CPUs like the build host's.
#ifdef MIBCORE_MARCH
  info += std::string(";march=") + MIBCORE_MARCH;
#endif
  return info;
}

// The constants that Python, C++ and Triton share, as C++ sees them ("key=value;..."), for
// tests/test_constants.py to compare with mibcore/constants.py.
std::string constants() {
  std::string out = "parameterization.softplus=" + std::to_string(kSoftplus) +
                    ";parameterization.logvar=" + std::to_string(kLogVar) +
                    ";parameterization.std=" + std::to_string(kStd) +
                    ";softplus_threshold=" + std::to_string(kSoftplusThreshold);
  for (auto t : {at::kHalf, at::kBFloat16, at::kFloat, at::kDouble}) {
    out += std::string(";accumulation.") + c10::toString(t) + "=" + c10::toString(accumulation_dtype(t));
  }
  return out;
}

TORCH_LIBRARY(mibcore, m) {
  m.def("build_info() -> str", &build_info);
  m.def("constants() -> str", &constants);
}

}  // namespace mibcore
