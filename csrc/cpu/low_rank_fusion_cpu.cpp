// CPU kernels of mibcore::low_rank_fusion (LMF): one operator instead of the reference's
// dozen small ops and autograd nodes.
//
// Per block of 4 batch rows, in registers/cache: P_m[r, :] = F_m[r, 0, :] + sum_i x_m[b, i] F_m[r, i + 1, :]
// (register-blocked over 16 columns, factors zero-padded to a multiple of 16), prod = prod_m P_m,
// y[b, :] = bias + sum_r w_r prod[r, :].
// The backward recomputes P_m per row, forms G_m = dy w_r prod_{m' != m} P_m', and from it
// dx_m (dot products), dF_m (per-thread accumulators) and dw. The shapes of LMF are small
// (the paper: B 32, rank 5, 51 x 50 factors), where a BLAS call per modality costs more in
// thread wake-ups than the arithmetic; plain loops keep it on one core until B is large.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

namespace mibcore {
namespace {

// Multiply-adds per parallel task, at least: below this, waking threads costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 23;

struct LmfShape {
  int64_t B, R, out, M;
  int64_t dims[3];  // d_m + 1 (the factor rows)
};

LmfShape check_lmf_args(at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights) {
  TORCH_CHECK(inputs.size() == 2 || inputs.size() == 3, "low_rank_fusion: inputs must hold 2 or 3 tensors");
  TORCH_CHECK(factors.size() == inputs.size(), "low_rank_fusion: factors must hold one tensor per input");
  LmfShape s{inputs[0].size(0), factors[0].size(0), factors[0].size(2), static_cast<int64_t>(inputs.size()), {1, 1, 1}};
  for (size_t m = 0; m < inputs.size(); ++m) {
    TORCH_CHECK(inputs[m].dim() == 2 && inputs[m].size(0) == s.B, "low_rank_fusion: inputs[", m, "] must be [B, d]");
    TORCH_CHECK(factors[m].dim() == 3 && factors[m].size(0) == s.R && factors[m].size(1) == inputs[m].size(1) + 1 &&
                    factors[m].size(2) == s.out,
                "low_rank_fusion: factors[", m, "] must be [rank, d + 1, out]");
    TORCH_CHECK(inputs[m].device().is_cpu() && factors[m].device().is_cpu(), "low_rank_fusion: CPU tensors expected");
    s.dims[m] = factors[m].size(1);
  }
  TORCH_CHECK(rank_weights.numel() == s.R, "low_rank_fusion: rank_weights must hold rank values");
  return s;
}

at::ScalarType lmf_acc(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

int64_t rows_per_task(const LmfShape& s) {
  int64_t macs_per_row = 0;
  for (int64_t m = 0; m < s.M; ++m) macs_per_row += s.R * s.dims[m] * s.out;
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(macs_per_row, 1));
}

constexpr int64_t kLanes = 16;  // columns per register block (a zmm of floats)
constexpr int64_t kRowBlock = 4;  // batch rows sharing each factor load

int64_t padded(int64_t out) { return (out + kLanes - 1) / kLanes * kLanes; }

// P[bb][r * op + o] = F[r, 0, o] + sum_i x[b0 + bb, i] F[r, i + 1, o] for bb < kRowBlock, with
// factors padded to op columns (zeros). GNU vector types keep the kRowBlock accumulators in
// registers (g++ spills plain arrays here, and the stores dominate).
// 64-byte GNU vectors (declared per type: the attribute is ignored on a dependent type).
typedef float VecF __attribute__((vector_size(64)));
typedef double VecD __attribute__((vector_size(64)));
template <typename T> struct Vec64;
template <> struct Vec64<float> { using type = VecF; };
template <> struct Vec64<double> { using type = VecD; };

template <typename acc_t>
void project_block(const LmfShape& s, int64_t rows, int64_t op, const acc_t* x, int64_t b0, int64_t nb,
                   const acc_t* F, acc_t* P) {
  using Vec = typename Vec64<acc_t>::type;
  constexpr int64_t kV = 64 / sizeof(acc_t);
  static_assert(kRowBlock == 4, "the accumulators below are written out for 4 rows");
  // Rows past the batch read x from the first row (their results are never stored).
  const acc_t* x0 = x + b0 * (rows - 1);
  const acc_t* x1 = x + (b0 + (nb > 1 ? 1 : 0)) * (rows - 1);
  const acc_t* x2 = x + (b0 + (nb > 2 ? 2 : 0)) * (rows - 1);
  const acc_t* x3 = x + (b0 + (nb > 3 ? 3 : 0)) * (rows - 1);
  auto load = [](const acc_t* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(Vec));
    return v;
  };
  for (int64_t r = 0; r < s.R; ++r) {
    for (int64_t o0 = 0; o0 < op; o0 += kV) {
      const acc_t* f = F + r * rows * op + o0;
      Vec a0 = load(f), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = 1; i < rows; ++i) {
        const Vec fi = load(f + i * op);
        a0 += x0[i - 1] * fi;
        a1 += x1[i - 1] * fi;
        a2 += x2[i - 1] * fi;
        a3 += x3[i - 1] * fi;
      }
      const Vec acc[kRowBlock] = {a0, a1, a2, a3};
      for (int64_t bb = 0; bb < nb; ++bb) std::memcpy(P + bb * s.R * op + r * op + o0, &acc[bb], sizeof(Vec));
    }
  }
}

// For one block of rows and one modality, given G[bb][r * op + o] (zero in padding columns):
// dF[r, i, :] += sum_bb [1; x][bb, i] G[bb][r, :] and dx[bb, i - 1] += sum_{r, o} G[bb][r, o] F[r, i, o],
// with the dx partial sums kept as vectors (dx_vec) and reduced across lanes once at the end.
template <typename acc_t>
void accumulate_block_grads(const LmfShape& s, int64_t rows, int64_t op, const acc_t* x, int64_t b0, int64_t nb,
                            const acc_t* F, const acc_t* G, acc_t* dF, acc_t* dx,
                            std::vector<typename Vec64<acc_t>::type>& dx_vec) {
  using Vec = typename Vec64<acc_t>::type;
  constexpr int64_t kV = 64 / sizeof(acc_t);
  auto load = [](const acc_t* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(Vec));
    return v;
  };
  auto store = [](acc_t* p, const Vec& v) { std::memcpy(p, &v, sizeof(Vec)); };
  const int64_t RO = s.R * op;
  // xt[i][bb]: x of the block's rows, 1 for the constant row i = 0, 0 for rows past the batch.
  std::vector<acc_t> xt(static_cast<size_t>(rows * kRowBlock));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t bb = 0; bb < kRowBlock; ++bb)
      xt[i * kRowBlock + bb] = bb >= nb ? acc_t(0) : i == 0 ? acc_t(1) : x[(b0 + bb) * (rows - 1) + i - 1];
  dx_vec.assign(static_cast<size_t>(rows * kRowBlock), Vec{});
  for (int64_t r = 0; r < s.R; ++r) {
    for (int64_t o0 = 0; o0 < op; o0 += kV) {
      const Vec g0 = load(G + 0 * RO + r * op + o0), g1 = load(G + 1 * RO + r * op + o0);
      const Vec g2 = load(G + 2 * RO + r * op + o0), g3 = load(G + 3 * RO + r * op + o0);
      const acc_t* f = F + r * rows * op + o0;
      acc_t* df = dF + r * rows * op + o0;
      for (int64_t i = 0; i < rows; ++i) {
        const Vec fi = load(f + i * op);
        const acc_t* xi = xt.data() + i * kRowBlock;
        store(df + i * op, load(df + i * op) + xi[0] * g0 + xi[1] * g1 + xi[2] * g2 + xi[3] * g3);
        Vec* d = dx_vec.data() + i * kRowBlock;
        d[0] += g0 * fi;
        d[1] += g1 * fi;
        d[2] += g2 * fi;
        d[3] += g3 * fi;
      }
    }
  }
  for (int64_t i = 1; i < rows; ++i)
    for (int64_t bb = 0; bb < nb; ++bb) {
      const Vec v = dx_vec[i * kRowBlock + bb];
      acc_t sum = 0;
      for (int64_t l = 0; l < kV; ++l) sum += v[l];
      dx[(b0 + bb) * (rows - 1) + i - 1] += sum;
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

template <typename acc_t>
void backward_rows(const LmfShape& s, int64_t op, const std::vector<const acc_t*>& x,
                   const std::vector<const acc_t*>& F, const acc_t* w, const acc_t* dy,
                   const std::vector<acc_t*>& dx, std::vector<std::vector<acc_t>>& dF_partial, acc_t* dw_partial) {
  const int64_t RO = s.R * op;
  const int64_t blocks = (s.B + kRowBlock - 1) / kRowBlock;
  at::parallel_for(0, blocks, std::max<int64_t>(1, rows_per_task(s) / kRowBlock), [&](int64_t k0, int64_t k1) {
    const int tid = at::get_thread_num();
    std::vector<acc_t> P(static_cast<size_t>(s.M * kRowBlock * RO)), G(static_cast<size_t>(kRowBlock * RO));
    std::vector<typename Vec64<acc_t>::type> dx_vec;
    acc_t* dw = dw_partial + tid * s.R;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t b0 = k * kRowBlock, nb = std::min(kRowBlock, s.B - b0);
      for (int64_t m = 0; m < s.M; ++m) project_block(s, s.dims[m], op, x[m], b0, nb, F[m], P.data() + m * kRowBlock * RO);
      auto proj = [&](int64_t m, int64_t bb, int64_t r) { return P.data() + (m * kRowBlock + bb) * RO + r * op; };
      for (int64_t bb = 0; bb < nb; ++bb) {
        const acc_t* dyb = dy + (b0 + bb) * s.out;
        for (int64_t r = 0; r < s.R; ++r) {
          const acc_t *p0 = proj(0, bb, r), *p1 = proj(1, bb, r), *p2 = s.M == 3 ? proj(2, bb, r) : nullptr;
          acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t o = 0; o < s.out; ++o) sum += dyb[o] * p0[o] * p1[o] * (p2 != nullptr ? p2[o] : acc_t(1));
          dw[r] += sum;
        }
      }
      int64_t dF_offset = 0;
      for (int64_t m = 0; m < s.M; ++m) {
        // G[bb][r, o] = dy[o] w_r prod_{m' != m} P_m'[r, o]; zero in the padding columns.
        std::fill(G.begin(), G.end(), acc_t(0));
        for (int64_t bb = 0; bb < nb; ++bb) {
          const acc_t* dyb = dy + (b0 + bb) * s.out;
          for (int64_t r = 0; r < s.R; ++r) {
            acc_t* g = G.data() + bb * RO + r * op;
            for (int64_t o = 0; o < s.out; ++o) g[o] = dyb[o] * w[r];
            for (int64_t other = 0; other < s.M; ++other) {
              if (other == m) continue;
              const acc_t* po = proj(other, bb, r);
#pragma omp simd
              for (int64_t o = 0; o < s.out; ++o) g[o] *= po[o];
            }
          }
        }
        const int64_t rows = s.dims[m];
        acc_t* dF = dF_partial[tid].data() + dF_offset;
        dF_offset += s.R * rows * op;
        accumulate_block_grads(s, rows, op, x[m], b0, nb, F[m], G.data(), dF, dx[m], dx_vec);
      }
    }
  });
}

std::vector<at::Tensor> as_contiguous(at::TensorList list, at::ScalarType dtype) {
  std::vector<at::Tensor> out;
  for (const auto& t : list) out.push_back(t.to(dtype).contiguous());
  return out;
}

// Factors [R, d + 1, out] -> [R, d + 1, op] with zero padding columns.
std::vector<at::Tensor> zero_padded_columns(at::TensorList factors, at::ScalarType dtype, int64_t op) {
  std::vector<at::Tensor> out;
  for (const auto& f : factors) {
    at::Tensor p = at::zeros({f.size(0), f.size(1), op}, f.options().dtype(dtype));
    p.narrow(2, 0, f.size(2)).copy_(f);
    out.push_back(p);
  }
  return out;
}

template <typename acc_t>
std::vector<const acc_t*> pointers(const std::vector<at::Tensor>& list) {
  std::vector<const acc_t*> out;
  for (const auto& t : list) out.push_back(t.data_ptr<acc_t>());
  return out;
}

at::Tensor low_rank_fusion_cpu(at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights,
                               const at::Tensor& bias) {
  const LmfShape s = check_lmf_args(inputs, factors, rank_weights);
  TORCH_CHECK(bias.numel() == s.out, "low_rank_fusion: bias must hold out values");
  const auto acc = lmf_acc(factors[0].scalar_type());
  const int64_t op = padded(s.out);
  const auto x = as_contiguous(inputs, acc), F = zero_padded_columns(factors, acc, op);
  const at::Tensor w = rank_weights.reshape({-1}).to(acc).contiguous();
  const at::Tensor b = bias.reshape({-1}).to(acc).contiguous();
  at::Tensor y = at::empty({s.B, s.out}, F[0].options());
  AT_DISPATCH_FLOATING_TYPES(acc, "low_rank_fusion_cpu", [&] {
    forward_rows<scalar_t>(s, op, pointers<scalar_t>(x), pointers<scalar_t>(F), w.data_ptr<scalar_t>(),
                           b.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
  return y.to(factors[0].scalar_type());
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor> low_rank_fusion_backward_cpu(
    const at::Tensor& grad_y, at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights) {
  const LmfShape s = check_lmf_args(inputs, factors, rank_weights);
  const auto acc = lmf_acc(factors[0].scalar_type());
  const int64_t op = padded(s.out);
  const auto x = as_contiguous(inputs, acc), F = zero_padded_columns(factors, acc, op);
  const at::Tensor w = rank_weights.reshape({-1}).to(acc).contiguous();
  const at::Tensor dy = grad_y.to(acc).contiguous();
  std::vector<at::Tensor> dx;
  for (const auto& xm : x) dx.push_back(at::zeros_like(xm));
  // One partial-sum buffer per thread that can get work (just one at the paper's sizes).
  const int64_t blocks = (s.B + kRowBlock - 1) / kRowBlock;
  const int64_t grain = std::max<int64_t>(1, rows_per_task(s) / kRowBlock);
  const int threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(1, (blocks + grain - 1) / grain)));
  int64_t factor_elems = 0;
  for (int64_t m = 0; m < s.M; ++m) factor_elems += s.R * s.dims[m] * op;
  at::Tensor dw_partial = at::zeros({threads, s.R}, F[0].options());
  std::vector<at::Tensor> grad_factors;
  AT_DISPATCH_FLOATING_TYPES(acc, "low_rank_fusion_backward_cpu", [&] {
    std::vector<std::vector<scalar_t>> dF(threads, std::vector<scalar_t>(static_cast<size_t>(factor_elems)));
    std::vector<scalar_t*> dx_ptr;
    for (auto& t : dx) dx_ptr.push_back(t.data_ptr<scalar_t>());
    backward_rows<scalar_t>(s, op, pointers<scalar_t>(x), pointers<scalar_t>(F), w.data_ptr<scalar_t>(),
                            dy.data_ptr<scalar_t>(), dx_ptr, dF, dw_partial.data_ptr<scalar_t>());
    int64_t off = 0;
    for (int64_t m = 0; m < s.M; ++m) {
      const int64_t n = s.R * s.dims[m] * op;
      at::Tensor total = at::zeros({s.R, s.dims[m], op}, F[0].options());
      scalar_t* t = total.data_ptr<scalar_t>();
      for (int k = 0; k < threads; ++k) {
        const scalar_t* part = dF[k].data() + off;
        for (int64_t e = 0; e < n; ++e) t[e] += part[e];
      }
      grad_factors.push_back(total.narrow(2, 0, s.out).to(factors[m].scalar_type()).contiguous());
      off += n;
    }
  });
  std::vector<at::Tensor> grad_inputs;
  for (int64_t m = 0; m < s.M; ++m) grad_inputs.push_back(dx[m].to(inputs[m].scalar_type()));
  return {grad_inputs, grad_factors, dw_partial.sum(0).to(rank_weights.scalar_type()),
          grad_y.sum(0).to(rank_weights.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, CPU, m) {
  m.impl("low_rank_fusion", &low_rank_fusion_cpu);
  m.impl("low_rank_fusion_backward", &low_rank_fusion_backward_cpu);
}

}  // namespace mibcore
