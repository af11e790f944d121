// Host-side rules shared by every operator's CPU and CUDA host code (no device code here).
#pragma once

#include <ATen/ATen.h>

namespace mibcore {

// The accumulation-dtype rule of every operator (mirrored by mibcore/constants.py, and
// compared with it by tests/test_constants.py): float64 computes in float64, every other
// floating dtype in float32.
inline at::ScalarType accumulation_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

// Rows of the [..., D] view: the product of the leading sizes (well defined when D == 0).
inline int64_t leading_numel(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t i = 0; i + 1 < t.dim(); ++i) rows *= t.size(i);
  return rows;
}

// rng = (seed, offset): an int64 tensor of shape [2] on the device of `like` (the CUDA kernels
// read it there: no host sync; the CPU kernels read it on the host).
inline void check_rng(const char* op, const at::Tensor& rng, const char* like_name, const at::Tensor& like) {
  TORCH_CHECK_TYPE(rng.scalar_type() == at::kLong, op, ": rng must be an int64 tensor (seed, offset), got ",
                   rng.scalar_type());
  TORCH_CHECK_VALUE(rng.dim() == 1 && rng.numel() == 2,
                    op, ": rng must have shape [2] (seed, offset), got ", rng.sizes());
  TORCH_CHECK_VALUE(rng.device() == like.device(),
                    op, ": rng must be on ", like_name, "'s device ", like.device(), ", got ",
                    rng.device());
}

// `t` must be a floating-point tensor of `like`'s dtype, on `like`'s device.
inline void check_same_dtype_device(const char* op, const char* name, const at::Tensor& t, const char* like_name,
                                    const at::Tensor& like) {
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have ", like_name, "'s dtype ",
                   like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " must be on ", like_name, "'s device ", like.device(),
                    ", got ", t.device());
}

}  // namespace mibcore
