// CPU kernels of mibcore::low_rank_fusion (LMF): one operator instead of the reference's
// dozen small ops and autograd nodes.
//
// Per block of 4 batch rows, in registers/cache: P_m[r, :] = F_m[r, 0, :] + sum_i x_m[b, i] F_m[r, i + 1, :]
// (register-blocked over 16 columns, factors zero-padded to a multiple of 16), prod = prod_m P_m,
// y[b, :] = bias + sum_r w_r prod[r, :].
// The backward splits the batch into at most one task per thread. A task recomputes P_m for
// its rows, forms G_m = dy w_r prod_{m' != m} P_m', and from it dw, dF_m = [1; x_m]^T G_m (its
// own partial sum, accumulated over the task's rows in registers) and dx_m = G_m F_m^T (from
// transposed factors). The shapes of LMF are small (the paper: B 32, rank 5, 51 x 50 factors),
// where a BLAS call per modality costs more in thread wake-ups and packing than the
// arithmetic; plain loops keep it on one core until B is large.
#ifndef MIBCORE_ISA  // the first inclusion: what every level uses, compiled for the baseline
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mibcore/host.h"

#define MIBCORE_ISA_FILE "low_rank_fusion_cpu.cpp"
#include "isa_foreach.h"  // this file again, once per level

TORCH_LIBRARY_IMPL(mibcore, CPU, m) {
  m.impl("low_rank_fusion", MIBCORE_CPU_KERNEL(low_rank_fusion_cpu));
  m.impl("low_rank_fusion_backward", MIBCORE_CPU_KERNEL(low_rank_fusion_backward_cpu));
}

#else  // one pass per level (isa_foreach.h)
#include "vec_cpu.h"

namespace mibcore {
namespace MIBCORE_ISA {
namespace {

// Multiply-adds per parallel task, at least: below this, waking threads costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 23;

struct LmfShape {
  int64_t B, R, out, M;
  int64_t dims[3];  // d_m + 1 (the factor rows)
};

LmfShape check_lmf_args(at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights) {
  TORCH_CHECK_VALUE(inputs.size() == 2 || inputs.size() == 3, "low_rank_fusion: inputs must hold 2 or 3 tensors");
  TORCH_CHECK_VALUE(factors.size() == inputs.size(), "low_rank_fusion: factors must hold one tensor per input");
  LmfShape s{inputs[0].size(0), factors[0].size(0), factors[0].size(2), static_cast<int64_t>(inputs.size()), {1, 1, 1}};
  for (size_t m = 0; m < inputs.size(); ++m) {
    TORCH_CHECK_VALUE(inputs[m].dim() == 2 && inputs[m].size(0) == s.B,
                      "low_rank_fusion: inputs[", m, "] must be [B, d]");
    TORCH_CHECK_VALUE(factors[m].dim() == 3 && factors[m].size(0) == s.R &&
                          factors[m].size(1) == inputs[m].size(1) + 1 && factors[m].size(2) == s.out,
                      "low_rank_fusion: factors[", m, "] must be [rank, d + 1, out]");
    TORCH_CHECK_VALUE(inputs[m].device().is_cpu() && factors[m].device().is_cpu(),
                      "low_rank_fusion: CPU tensors expected");
    check_same_dtype_device("low_rank_fusion", "inputs", inputs[m], "factors[0]", factors[0]);
    check_same_dtype_device("low_rank_fusion", "factors", factors[m], "factors[0]", factors[0]);
    s.dims[m] = factors[m].size(1);
  }
  TORCH_CHECK_TYPE(at::isFloatingType(factors[0].scalar_type()),
                   "low_rank_fusion: factors must be floating point, got ",
                   factors[0].scalar_type());
  TORCH_CHECK_VALUE(rank_weights.numel() == s.R, "low_rank_fusion: rank_weights must hold rank values");
  check_same_dtype_device("low_rank_fusion", "rank_weights", rank_weights, "factors[0]", factors[0]);
  return s;
}

int64_t rows_per_task(const LmfShape& s) {
  int64_t macs_per_row = 0;
  for (int64_t m = 0; m < s.M; ++m) macs_per_row += s.R * s.dims[m] * s.out;
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(macs_per_row, 1));
}

constexpr int64_t kLanes = 16;  // columns are padded to whole vectors at every level (a zmm of floats)
constexpr int64_t kRowBlock = 4;  // batch rows sharing each factor load

int64_t padded(int64_t out) { return (out + kLanes - 1) / kLanes * kLanes; }

using cpu::Buffer;
using cpu::load_vec;
using cpu::store_vec;
using cpu::uninitialized;

// P[bb][r * op + o] = F[r, 0, o] + sum_i x[b0 + bb, i] F[r, i + 1, o] for bb < kRowBlock, with
// factors padded to op columns (zeros). GNU vector types keep the kRowBlock accumulators in
// registers (g++ spills plain arrays here, and the stores dominate).

template <typename acc_t>
void project_block(const LmfShape& s, int64_t rows, int64_t op, const acc_t* x, int64_t b0, int64_t nb,
                   const acc_t* F, acc_t* P) {
  using Vec = typename cpu::Vec<acc_t>::type;
  constexpr int64_t kV = cpu::kVecBytes / sizeof(acc_t);
  static_assert(kRowBlock == 4, "the accumulators below are written out for 4 rows");
  // Rows past the batch read x from the first row (their results are never stored).
  const acc_t* x0 = x + b0 * (rows - 1);
  const acc_t* x1 = x + (b0 + (nb > 1 ? 1 : 0)) * (rows - 1);
  const acc_t* x2 = x + (b0 + (nb > 2 ? 2 : 0)) * (rows - 1);
  const acc_t* x3 = x + (b0 + (nb > 3 ? 3 : 0)) * (rows - 1);
  for (int64_t r = 0; r < s.R; ++r) {
    for (int64_t o0 = 0; o0 < op; o0 += kV) {
      const acc_t* f = F + r * rows * op + o0;
      Vec a0 = load_vec<Vec>(f), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = 1; i < rows; ++i) {
        const Vec fi = load_vec<Vec>(f + i * op);
        a0 += x0[i - 1] * fi;
        a1 += x1[i - 1] * fi;
        a2 += x2[i - 1] * fi;
        a3 += x3[i - 1] * fi;
      }
      const Vec acc[kRowBlock] = {a0, a1, a2, a3};
      for (int64_t bb = 0; bb < nb; ++bb) store_vec(P + bb * s.R * op + r * op + o0, acc[bb]);
    }
  }
}

// dF[r, i, :] = sum_b xrow[b, i] G[b][r, :] over the n rows of a task (xrow = [1; x] per row,
// zero-padded to xs columns, a multiple of kFactorRows): kFactorRows factor rows share each
// load of G, and their accumulators stay in registers for the whole batch.
constexpr int64_t kFactorRows = 8;

template <typename acc_t>
void accumulate_factor_grad(const LmfShape& s, int64_t rows, int64_t op, int64_t n, const acc_t* xrow, int64_t xs,
                            const acc_t* G, acc_t* dF) {
  using Vec = typename cpu::Vec<acc_t>::type;
  constexpr int64_t kV = cpu::kVecBytes / sizeof(acc_t);
  static_assert(kFactorRows == 8, "the accumulators below are written out for 8 factor rows");
  const int64_t RO = s.R * op;
  for (int64_t r = 0; r < s.R; ++r) {
    for (int64_t o0 = 0; o0 < op; o0 += kV) {
      for (int64_t i0 = 0; i0 < rows; i0 += kFactorRows) {
        Vec a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{};
        for (int64_t b = 0; b < n; ++b) {
          const Vec g = load_vec<Vec>(G + b * RO + r * op + o0);
          const acc_t* x = xrow + b * xs + i0;
          a0 += x[0] * g;
          a1 += x[1] * g;
          a2 += x[2] * g;
          a3 += x[3] * g;
          a4 += x[4] * g;
          a5 += x[5] * g;
          a6 += x[6] * g;
          a7 += x[7] * g;
        }
        const Vec acc[kFactorRows] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int64_t k = 0; k < std::min(kFactorRows, rows - i0); ++k) store_vec(dF + (r * rows + i0 + k) * op + o0, acc[k]);
      }
    }
  }
}

// FT[r, o, i] = F[r, i + 1, o] for the d = rows - 1 input rows, zero-padded to dp columns (a
// multiple of the vector width): input_grad then needs no horizontal sums and skips the
// padding columns of out.
template <typename acc_t>
Buffer<acc_t> transposed_input_rows(const LmfShape& s, int64_t rows, int64_t op, int64_t dp, const acc_t* F) {
  Buffer<acc_t> FT = uninitialized<acc_t>(s.R * s.out * dp);
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t o = 0; o < s.out; ++o) {
      acc_t* ft = FT.get() + (r * s.out + o) * dp;
      const acc_t* f = F + (r * rows + 1) * op + o;
      for (int64_t i = 0; i < rows - 1; ++i) ft[i] = f[i * op];
      std::fill(ft + rows - 1, ft + dp, acc_t(0));
    }
  return FT;
}

// dx[b, i] = sum_{r, o} G[b][r, o] FT[r, o, i] for the n rows of a task, 4 batch rows of
// accumulators per vector of input columns.
template <typename acc_t>
void input_grad(const LmfShape& s, int64_t d, int64_t op, int64_t dp, int64_t n, const acc_t* FT, const acc_t* G,
                acc_t* dx) {
  using Vec = typename cpu::Vec<acc_t>::type;
  constexpr int64_t kV = cpu::kVecBytes / sizeof(acc_t);
  const int64_t RO = s.R * op;
  for (int64_t b0 = 0; b0 < n; b0 += kRowBlock) {
    const int64_t nb = std::min(kRowBlock, n - b0);
    // Rows past the task read row b0 (their results are never stored).
    const acc_t* g0 = G + b0 * RO;
    const acc_t* g1 = G + (b0 + (nb > 1 ? 1 : 0)) * RO;
    const acc_t* g2 = G + (b0 + (nb > 2 ? 2 : 0)) * RO;
    const acc_t* g3 = G + (b0 + (nb > 3 ? 3 : 0)) * RO;
    for (int64_t i0 = 0; i0 < d; i0 += kV) {
      Vec a0{}, a1{}, a2{}, a3{};
      for (int64_t r = 0; r < s.R; ++r) {
        const acc_t* ft = FT + r * s.out * dp + i0;
        const int64_t at = r * op;
        for (int64_t o = 0; o < s.out; ++o) {
          const Vec f = load_vec<Vec>(ft + o * dp);
          a0 += g0[at + o] * f;
          a1 += g1[at + o] * f;
          a2 += g2[at + o] * f;
          a3 += g3[at + o] * f;
        }
      }
      const Vec acc[kRowBlock] = {a0, a1, a2, a3};
      const int64_t width = std::min(kV, d - i0);
      for (int64_t bb = 0; bb < nb; ++bb) {
        acc_t lanes[kV];
        std::memcpy(lanes, &acc[bb], sizeof(Vec));
        std::copy(lanes, lanes + width, dx + (b0 + bb) * d + i0);
      }
    }
  }
}

template <typename acc_t>
void forward_rows(const LmfShape& s, int64_t op, const std::vector<const acc_t*>& x,
                  const std::vector<const acc_t*>& F, const acc_t* w, const acc_t* bias, acc_t* y) {
  const int64_t RO = s.R * op;
  const int64_t blocks = (s.B + kRowBlock - 1) / kRowBlock;
  at::parallel_for(0, blocks, std::max<int64_t>(1, rows_per_task(s) / kRowBlock), [&](int64_t k0, int64_t k1) {
    std::vector<acc_t> p(static_cast<size_t>(kRowBlock * RO)), prod(static_cast<size_t>(kRowBlock * RO));
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t b0 = k * kRowBlock, nb = std::min(kRowBlock, s.B - b0);
      for (int64_t m = 0; m < s.M; ++m) {
        project_block(s, s.dims[m], op, x[m], b0, nb, F[m], m == 0 ? prod.data() : p.data());
        if (m > 0) {
#pragma omp simd
          for (int64_t e = 0; e < nb * RO; ++e) prod[e] *= p[e];
        }
      }
      for (int64_t bb = 0; bb < nb; ++bb) {
        acc_t* yb = y + (b0 + bb) * s.out;
        std::copy(bias, bias + s.out, yb);
        for (int64_t r = 0; r < s.R; ++r) {
          const acc_t wr = w[r];
          const acc_t* pr = prod.data() + bb * RO + r * op;
#pragma omp simd
          for (int64_t o = 0; o < s.out; ++o) yb[o] += wr * pr[o];
        }
      }
    }
  });
}

// Rows per task of the backward: whole blocks of kRowBlock, at least the parallel grain,
// at most one task per thread (each task owns one partial sum of the factor gradients).
int64_t backward_task_rows(const LmfShape& s) {
  const int64_t blocks = (s.B + kRowBlock - 1) / kRowBlock;
  const int64_t grain = std::max<int64_t>(1, rows_per_task(s) / kRowBlock);
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks / grain));
  return std::max<int64_t>(1, (blocks + tasks - 1) / tasks) * kRowBlock;  // (an empty batch: no task)
}

// Task t takes rows [t * task_rows, ...): P_m for each of its rows, then per modality
// G_m = dy w_r prod_{m' != m} P_m' (zero in the padding columns), from which its dw and dF_m
// partial sums (dw_partial[t], dF_partial[t]) and dx_m of its rows.
template <typename acc_t>
void backward_rows(const LmfShape& s, int64_t op, int64_t task_rows, const std::vector<const acc_t*>& x,
                   const std::vector<const acc_t*>& F, const acc_t* w, const acc_t* dy,
                   const std::vector<acc_t*>& dx, acc_t* dF_partial, int64_t factor_elems, acc_t* dw_partial) {
  constexpr int64_t kV = cpu::kVecBytes / sizeof(acc_t);
  const int64_t RO = s.R * op;
  const int64_t tasks = (s.B + task_rows - 1) / task_rows;
  std::vector<int64_t> dp(s.M);
  std::vector<Buffer<acc_t>> FT(s.M);
  for (int64_t m = 0; m < s.M; ++m) {
    dp[m] = (s.dims[m] - 1 + kV - 1) / kV * kV;
    FT[m] = transposed_input_rows(s, s.dims[m], op, dp[m], F[m]);
  }
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b_begin = task * task_rows, n = std::min(s.B, b_begin + task_rows) - b_begin;
      Buffer<acc_t> P = uninitialized<acc_t>(s.M * n * RO), G = uninitialized<acc_t>(n * RO);
      auto proj = [&](int64_t m, int64_t b, int64_t r) { return P.get() + (m * n + b) * RO + r * op; };
      for (int64_t m = 0; m < s.M; ++m)
        for (int64_t b0 = 0; b0 < n; b0 += kRowBlock)
          project_block(s, s.dims[m], op, x[m], b_begin + b0, std::min(kRowBlock, n - b0), F[m], proj(m, b0, 0));
      acc_t* dw = dw_partial + task * s.R;
      for (int64_t r = 0; r < s.R; ++r) {
        acc_t sum = 0;
        for (int64_t b = 0; b < n; ++b) {
          const acc_t* dyb = dy + (b_begin + b) * s.out;
          const acc_t *p0 = proj(0, b, r), *p1 = proj(1, b, r), *p2 = s.M == 3 ? proj(2, b, r) : nullptr;
#pragma omp simd reduction(+ : sum)
          for (int64_t o = 0; o < s.out; ++o) sum += dyb[o] * p0[o] * p1[o] * (p2 != nullptr ? p2[o] : acc_t(1));
        }
        dw[r] = sum;
      }
      Buffer<acc_t> xrow;
      acc_t* dF = dF_partial + task * factor_elems;
      for (int64_t m = 0; m < s.M; ++m) {
        for (int64_t b = 0; b < n; ++b) {
          const acc_t* dyb = dy + (b_begin + b) * s.out;
          for (int64_t r = 0; r < s.R; ++r) {
            acc_t* g = G.get() + b * RO + r * op;
            std::fill(g + s.out, g + op, acc_t(0));
            for (int64_t o = 0; o < s.out; ++o) g[o] = dyb[o] * w[r];
            for (int64_t other = 0; other < s.M; ++other) {
              if (other == m) continue;
              const acc_t* po = proj(other, b, r);
#pragma omp simd
              for (int64_t o = 0; o < s.out; ++o) g[o] *= po[o];
            }
          }
        }
        const int64_t rows = s.dims[m];
        const int64_t xs = (rows + kFactorRows - 1) / kFactorRows * kFactorRows;
        xrow = uninitialized<acc_t>(n * xs);
        for (int64_t b = 0; b < n; ++b) {
          acc_t* xr = xrow.get() + b * xs;
          xr[0] = acc_t(1);
          std::copy(x[m] + (b_begin + b) * (rows - 1), x[m] + (b_begin + b + 1) * (rows - 1), xr + 1);
          std::fill(xr + rows, xr + xs, acc_t(0));
        }
        accumulate_factor_grad(s, rows, op, n, xrow.get(), xs, G.get(), dF);
        dF += s.R * rows * op;
        input_grad(s, rows - 1, op, dp[m], n, FT[m].get(), G.get(), dx[m] + b_begin * (rows - 1));
      }
    }
  });
}

std::vector<at::Tensor> as_contiguous(at::TensorList list, at::ScalarType dtype) {
  std::vector<at::Tensor> out;
  for (const auto& t : list) out.push_back(t.to(dtype).contiguous());
  return out;
}

// Factors [R, d + 1, out] -> [R, d + 1, op] with zero padding columns (plain buffers: at the
// paper's sizes, each ATen call costs about as much as the copy).
template <typename acc_t>
std::vector<Buffer<acc_t>> zero_padded_columns(at::TensorList factors, int64_t op) {
  std::vector<Buffer<acc_t>> out;
  for (const auto& f : factors) {
    const at::Tensor c = f.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const acc_t* src = c.data_ptr<acc_t>();
    const int64_t lines = c.size(0) * c.size(1), cols = c.size(2);
    Buffer<acc_t> padded = uninitialized<acc_t>(lines * op);
    for (int64_t l = 0; l < lines; ++l) {
      std::copy(src + l * cols, src + (l + 1) * cols, padded.get() + l * op);
      std::fill(padded.get() + l * op + cols, padded.get() + (l + 1) * op, acc_t(0));
    }
    out.push_back(std::move(padded));
  }
  return out;
}

template <typename T>
std::vector<T*> pointers(const std::vector<at::Tensor>& list) {
  std::vector<T*> out;
  for (const auto& t : list) out.push_back(t.data_ptr<std::remove_const_t<T>>());
  return out;
}

template <typename T, typename U>
std::vector<T*> pointers(const std::vector<Buffer<U>>& list) {
  std::vector<T*> out;
  for (const auto& b : list) out.push_back(b.get());
  return out;
}

}  // namespace

at::Tensor low_rank_fusion_cpu(at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights,
                               const at::Tensor& bias) {
  const LmfShape s = check_lmf_args(inputs, factors, rank_weights);
  TORCH_CHECK_VALUE(bias.numel() == s.out, "low_rank_fusion: bias must hold out values");
  check_same_dtype_device("low_rank_fusion", "bias", bias, "factors[0]", factors[0]);
  const auto acc = accumulation_dtype(factors[0].scalar_type());
  const int64_t op = padded(s.out);
  const auto x = as_contiguous(inputs, acc);
  const at::Tensor w = rank_weights.reshape({-1}).to(acc).contiguous();
  const at::Tensor b = bias.reshape({-1}).to(acc).contiguous();
  at::Tensor y = at::empty({s.B, s.out}, x[0].options());
  AT_DISPATCH_FLOATING_TYPES(acc, "low_rank_fusion_cpu", [&] {
    auto F = zero_padded_columns<scalar_t>(factors, op);
    forward_rows<scalar_t>(s, op, pointers<const scalar_t>(x), pointers<const scalar_t>(F), w.data_ptr<scalar_t>(),
                           b.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
  return y.to(factors[0].scalar_type());
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor> low_rank_fusion_backward_cpu(
    const at::Tensor& grad_y, at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights) {
  const LmfShape s = check_lmf_args(inputs, factors, rank_weights);
  // (A grad_y of another shape was read out of bounds.)
  TORCH_CHECK_VALUE(grad_y.dim() == 2 && grad_y.size(0) == s.B && grad_y.size(1) == s.out,
                    "low_rank_fusion_backward: grad_y must be [B, out] = [", s.B, ", ", s.out, "], got ",
                    grad_y.sizes());
  check_same_dtype_device("low_rank_fusion_backward", "grad_y", grad_y, "factors[0]", factors[0]);
  const auto acc = accumulation_dtype(factors[0].scalar_type());
  const int64_t op = padded(s.out);
  const auto x = as_contiguous(inputs, acc);
  const at::Tensor w = rank_weights.reshape({-1}).to(acc).contiguous();
  const at::Tensor dy = grad_y.to(acc).contiguous();
  std::vector<at::Tensor> dx;
  for (const auto& xm : x) dx.push_back(at::empty_like(xm));  // every element is written once
  const int64_t task_rows = backward_task_rows(s);
  const int64_t tasks = (s.B + task_rows - 1) / task_rows;
  int64_t factor_elems = 0;
  for (int64_t m = 0; m < s.M; ++m) factor_elems += s.R * s.dims[m] * op;
  at::Tensor dw = at::empty({s.R}, x[0].options());
  std::vector<at::Tensor> grad_factors;
  AT_DISPATCH_FLOATING_TYPES(acc, "low_rank_fusion_backward_cpu", [&] {
    auto F = zero_padded_columns<scalar_t>(factors, op);
    Buffer<scalar_t> dF = uninitialized<scalar_t>(tasks * factor_elems), dw_partial = uninitialized<scalar_t>(tasks * s.R);
    backward_rows<scalar_t>(s, op, task_rows, pointers<const scalar_t>(x), pointers<const scalar_t>(F),
                            w.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), pointers<scalar_t>(dx), dF.get(),
                            factor_elems, dw_partial.get());
    // Sum the tasks' partials, dropping the padding columns.
    int64_t off = 0;
    for (int64_t m = 0; m < s.M; ++m) {
      const int64_t lines = s.R * s.dims[m];
      at::Tensor total = at::zeros({s.R, s.dims[m], s.out}, x[0].options());
      scalar_t* t = total.data_ptr<scalar_t>();
      for (int64_t l = 0; l < lines; ++l) {
        for (int64_t k = 0; k < tasks; ++k) {
          const scalar_t* part = dF.get() + k * factor_elems + off + l * op;
          for (int64_t o = 0; o < s.out; ++o) t[l * s.out + o] += part[o];
        }
      }
      grad_factors.push_back(total.to(factors[m].scalar_type()));
      off += lines * op;
    }
    scalar_t* dwp = dw.data_ptr<scalar_t>();
    for (int64_t r = 0; r < s.R; ++r) {
      dwp[r] = 0;
      for (int64_t k = 0; k < tasks; ++k) dwp[r] += dw_partial[k * s.R + r];
    }
  });
  std::vector<at::Tensor> grad_inputs;
  for (int64_t m = 0; m < s.M; ++m) grad_inputs.push_back(dx[m].to(inputs[m].scalar_type()));
  return {grad_inputs, grad_factors, dw.to(rank_weights.scalar_type()), grad_y.sum(0).to(rank_weights.scalar_type())};
}

}  // namespace MIBCORE_ISA
}  // namespace mibcore
#endif  // MIBCORE_ISA
