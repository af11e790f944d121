// Host-side argument checks and scale constants of the dropout operators (dropout,
// dropout_add, relu_dropout, relu_dropout_backward), shared by the CPU and CUDA
// implementations (no device code here).
#pragma once

#include <ATen/ATen.h>

#include "mibcore/host.h"

namespace mibcore {

// keep_prob as the Philox compare uses it (1 - p in double, rounded to float), and the scale of
// kept elements: the double 1 / (1 - p) for fp64 tensors, that value rounded to float otherwise.
struct DropoutScale {
  float keep_prob;
  float inv_keep_f;
  double inv_keep_d;
};

inline DropoutScale dropout_scale(double p) {
  return DropoutScale{static_cast<float>(1.0 - p), static_cast<float>(1.0 / (1.0 - p)), 1.0 / (1.0 - p)};
}

inline void check_dropout_p(const char* op, double p) {
  TORCH_CHECK_VALUE(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p);  // NaN fails too
}

inline void check_dropout_tensor(const char* op, const char* name, const at::Tensor& t, at::DeviceType device_type) {
  const auto dtype = t.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
                   op, ": ",
                   name, " must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(t.device().type() == device_type, op, ": ", name, " must be a ", at::DeviceTypeName(device_type),
                    " tensor for this backend, got one on ", t.device());
}

// `b` must match `a` in shape, dtype and device.
inline void check_dropout_pair(const char* op, const char* a_name, const at::Tensor& a, const char* b_name,
                               const at::Tensor& b) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), op, ": ", b_name, " must have ", a_name, "'s shape ", a.sizes(), ", got ",
                    b.sizes());
  check_same_dtype_device(op, b_name, b, a_name, a);
}

// Checks of each operator, at its boundary.
inline void check_dropout_args(const char* op, const at::Tensor& x, double p, const at::Tensor& rng,
                               at::DeviceType device_type) {
  check_dropout_tensor(op, "x", x, device_type);
  check_dropout_p(op, p);
  check_rng(op, rng, "x", x);
}

inline void check_dropout_add_args(const at::Tensor& x, const at::Tensor& h, double p, const at::Tensor& rng,
                                   at::DeviceType device_type) {
  check_dropout_tensor("dropout_add", "x", x, device_type);
  check_dropout_pair("dropout_add", "x", x, "h", h);
  check_dropout_p("dropout_add", p);
  check_rng("dropout_add", rng, "h", h);
}

inline void check_relu_dropout_backward_args(const at::Tensor& grad_y, const at::Tensor& y, double p,
                                             at::DeviceType device_type) {
  check_dropout_tensor("relu_dropout_backward", "y", y, device_type);
  check_dropout_pair("relu_dropout_backward", "y", y, "grad_y", grad_y);
  check_dropout_p("relu_dropout_backward", p);
}

}  // namespace mibcore
