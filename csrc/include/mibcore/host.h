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

}  // namespace mibcore
