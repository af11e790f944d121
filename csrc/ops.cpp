// Schemas of the mibcore operators (extension-cpp style). The CPU kernels register in
// csrc/cpu, the CUDA kernels in csrc/cuda, the autograd of every C++ operator in
// csrc/autograd.cpp; fake tensors are registered from Python (mibcore/ops). Importing this
// library needs torch to be imported first.
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
  std::string info = "cpu=1";
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
  // z = mu + std(scale) * eps (or mu when sample is false) and the KL of each row (summed
  // over the last dim: shape mu.shape[:-1]), float32 (float64 for float64 inputs). The
  // functional API reduces the rows. rng = (seed, offset), see philox.h.
  m.def(
      "reparameterize_kl(Tensor mu, Tensor scale, Tensor rng, int parameterization, float shift, "
      "bool sample) -> (Tensor, Tensor)");
  // Gradients of mu and scale given the gradients of z and of the row KLs;
  // eps is regenerated from rng, never stored.
  m.def(
      "reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor scale, "
      "Tensor rng, int parameterization, float shift, bool sample) -> (Tensor, Tensor)");
  // linear(dropout(flatten(outer([1; x_1], [1; x_2], ...))), weight, bias) without ever forming
  // the outer product; dropout's keep-decisions come from rng (see philox.h).
  m.def("tensor_fusion(Tensor[] inputs, Tensor weight, Tensor? bias, float dropout, Tensor rng) -> Tensor");
  // (grad_inputs, grad_weight, grad_bias), regenerating the tiles and the dropout mask.
  m.def(
      "tensor_fusion_backward(Tensor grad_y, Tensor[] inputs, Tensor weight, float dropout, Tensor rng) "
      "-> (Tensor[], Tensor, Tensor)");
  // Inverted dropout on the Philox contract (philox.h): element j of the row-major flattened
  // tensor is kept iff uniform(j) <= 1 - p, and kept elements are scaled by 1 / (1 - p).
  // The backward of dropout is dropout of the gradient with the same rng (mask regenerated).
  m.def("dropout(Tensor x, float p, Tensor rng) -> Tensor");
  // x + dropout(h, p): the residual pattern (x and h of one shape).
  m.def("dropout_add(Tensor x, Tensor h, float p, Tensor rng) -> Tensor");
  // dropout(relu(x), p); its backward needs only the output: grad_x = grad_y * (y > 0) / (1 - p).
  m.def("relu_dropout(Tensor x, float p, Tensor rng) -> Tensor");
  m.def("relu_dropout_backward(Tensor grad_y, Tensor y, float p) -> Tensor");
  // LMF: sum_r w_r prod_m ([1; x_m] @ factors[m][r]) + bias (rank_weights: R values, bias: out values).
  m.def("low_rank_fusion(Tensor[] inputs, Tensor[] factors, Tensor rank_weights, Tensor bias) -> Tensor");
  // (grad_inputs, grad_factors, grad_rank_weights [R], grad_bias [out]).
  m.def(
      "low_rank_fusion_backward(Tensor grad_y, Tensor[] inputs, Tensor[] factors, Tensor rank_weights) "
      "-> (Tensor[], Tensor[], Tensor, Tensor)");
}

}  // namespace mibcore
