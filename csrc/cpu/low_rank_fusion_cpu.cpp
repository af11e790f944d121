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
// arithmetic; plain loops keep it on one core until B is large. Below AVX-512, calls from
// kGemmMacs on run the same math as a few ATen GEMMs instead (lmf_gemm below): there a tuned GEMM
// beats g++'s ymm loops by 2x or more (B 512, 128-d inputs, rank 8, out 128: 0.5x eager with them).
#ifndef MIBCORE_ISA  // the first inclusion: what every level uses, compiled for the baseline
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mibcore/host.h"

namespace mibcore {
namespace lmf_gemm {

// [1, x]: the inputs with the constant 1 of the factors' first row (x: [B, d]).
inline at::Tensor with_ones(const at::Tensor& x) { return at::cat({at::ones({x.size(0), 1}, x.options()), x}, 1); }

// P_m = [1, x_m] F_m, [R, B, out] each: one GEMM per rank, the factors read in place
// (inputs and factors of one floating dtype, contiguous).
inline std::vector<at::Tensor> projections(const std::vector<at::Tensor>& x1, const std::vector<at::Tensor>& F) {
  std::vector<at::Tensor> P;
  for (size_t m = 0; m < x1.size(); ++m) P.push_back(at::matmul(x1[m], F[m]));
  return P;
}

// The product of the projections other than `skip` (-1: all of them).
inline at::Tensor product(const std::vector<at::Tensor>& P, int64_t skip = -1) {
  at::Tensor out;
  for (int64_t m = 0; m < static_cast<int64_t>(P.size()); ++m) {
    if (m == skip) continue;
    out = out.defined() ? out * P[m] : P[m];
  }
  return out;
}

// y = bias + sum_r w_r prod_m P_m[r].
inline at::Tensor forward(const std::vector<at::Tensor>& x, const std::vector<at::Tensor>& F, const at::Tensor& w,
                          const at::Tensor& bias) {
  std::vector<at::Tensor> x1;
  for (const auto& xm : x) x1.push_back(with_ones(xm));
  const int64_t B = x[0].size(0), R = F[0].size(0), out = F[0].size(2);
  const at::Tensor prod = product(projections(x1, F)).reshape({R, B * out});
  return at::matmul(w.reshape({1, R}), prod).reshape({B, out}) + bias;
}

// dx_m, dF_m and dw (dbias is the caller's: dy summed over the batch).
inline std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor> backward(
    const at::Tensor& dy, const std::vector<at::Tensor>& x, const std::vector<at::Tensor>& F, const at::Tensor& w) {
  std::vector<at::Tensor> x1;
  for (const auto& xm : x) x1.push_back(with_ones(xm));
  const int64_t B = x[0].size(0), R = F[0].size(0), out = F[0].size(2);
  const auto P = projections(x1, F);
  const at::Tensor dy3 = dy.reshape({1, B, out});
  const at::Tensor wdy = w.reshape({R, 1, 1}) * dy3;
  std::vector<at::Tensor> dx, dF;
  for (int64_t m = 0; m < static_cast<int64_t>(x.size()); ++m) {
    const at::Tensor G = wdy * product(P, m);  // d loss / d P_m, [R, B, out]
    dF.push_back(at::matmul(x1[m].t(), G));   // [R, d + 1, out]
    dx.push_back(at::matmul(G, F[m].transpose(1, 2)).sum(0).narrow(1, 1, x[m].size(1)).contiguous());
  }
  const at::Tensor dw = (product(P) * dy3).sum({1, 2});
  return {dx, dF, dw};
}

}  // namespace lmf_gemm
}  // namespace mibcore

#define MIBCORE_ISA_FILE "low_rank_fusion_cpu.cpp"
#include "isa_foreach.h"  // this file again, once per level

TORCH_LIBRARY_IMPL(mibcore, CPU, m) {
  m.impl("low_rank_fusion", MIBCORE_CPU_KERNEL(low_rank_fusion_cpu));
  m.impl("low_rank_fusion_backward", MIBCORE_CPU_KERNEL(low_rank_fusion_backward_cpu));
}

#else  // one pass per level (isa_foreach.h)
#include "vec_cpu.h"
#include "low_rank_fusion_blocks_cpu.h"  // (uses vec_cpu.h)

namespace mibcore {
namespace MIBCORE_ISA {
namespace {

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

// Multiply-adds of a call (B x sum_m R (d_m + 1) out) from which the GEMM formulation runs, per
// level. Below AVX-512 the loops lose to ATen's GEMM from a few million on, at 128-d inputs even to
// the eager reference (2 Zen 3 cores, forward+backward, loops / GEMMs / eager: B 8, 128-d, rank 8,
// out 128: 1.82 / 0.84 / 1.61 ms; B 32: 3.81 / 1.36 / 2.12 ms); at the paper's shape (1.2M) they
// still win. The AVX-512 loops measured faster than eager up to B 512 x 128-d (Zen 4): kept there.
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
constexpr int64_t kGemmMacs = std::numeric_limits<int64_t>::max();
#else
constexpr int64_t kGemmMacs = int64_t(1) << 21;
#endif

bool use_gemm(const LmfShape& s) {
  int64_t macs_per_row = 0;
  for (int64_t m = 0; m < s.M; ++m) macs_per_row += s.R * s.dims[m] * s.out;
  return s.B * macs_per_row >= kGemmMacs;
}

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
  if (use_gemm(s)) return lmf_gemm::forward(x, as_contiguous(factors, acc), w, b).to(factors[0].scalar_type());
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
  // (A grad_y of another shape would be read out of bounds.)
  TORCH_CHECK_VALUE(grad_y.dim() == 2 && grad_y.size(0) == s.B && grad_y.size(1) == s.out,
                    "low_rank_fusion_backward: grad_y must be [B, out] = [", s.B, ", ", s.out, "], got ",
                    grad_y.sizes());
  check_same_dtype_device("low_rank_fusion_backward", "grad_y", grad_y, "factors[0]", factors[0]);
  const auto acc = accumulation_dtype(factors[0].scalar_type());
  const int64_t op = padded(s.out);
  const auto x = as_contiguous(inputs, acc);
  const at::Tensor w = rank_weights.reshape({-1}).to(acc).contiguous();
  const at::Tensor dy = grad_y.to(acc).contiguous();
  const at::ScalarType wtype = rank_weights.scalar_type();
  if (use_gemm(s)) {
    auto [dx, dF, dw] = lmf_gemm::backward(dy, x, as_contiguous(factors, acc), w);
    for (int64_t m = 0; m < s.M; ++m) {
      dx[m] = dx[m].to(inputs[m].scalar_type());
      dF[m] = dF[m].to(factors[m].scalar_type());
    }
    return {dx, dF, dw.to(wtype), grad_y.sum(0).to(wtype)};
  }
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
  return {grad_inputs, grad_factors, dw.to(wtype), grad_y.sum(0).to(wtype)};
}

}  // namespace MIBCORE_ISA
}  // namespace mibcore
#endif  // MIBCORE_ISA
