// What the autograd of every C++ operator shares (csrc/ops/<op>.cpp). The autograd is registered
// at the Autograd dispatch key, so a call costs no Python (torch.library's Python autograd costs
// tens of microseconds per call, more than the kernels at the paper's shapes). Each backward
// calls the operator's backward schema, which regenerates what the forward drew (eps, dropout
// masks) from the saved rng tensor: nothing random is stored.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

namespace mibcore {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The typed handle of mibcore::<name> (looked up once per call site).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The backward kernels are not themselves differentiable: a double backward (create_graph=True,
// e.g. a gradient penalty) would silently get zero second derivatives, so it is an error.
inline void check_no_double_backward(const char* op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "mibcore::", op,
              ": double backward (a backward with create_graph=True) is not supported by the fused "
              "cpu/cuda operators; use the 'reference' backend (mibcore.backends.use(\"reference\")) "
              "for higher-order gradients");
}

inline std::vector<at::Tensor> slice(const variable_list& v, size_t begin, size_t end) {
  return std::vector<at::Tensor>(v.begin() + begin, v.begin() + end);
}

}  // namespace mibcore
