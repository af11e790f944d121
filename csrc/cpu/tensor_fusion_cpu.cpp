// CPU kernels of mibcore::tensor_fusion: an implicit GEMM over the outer product.
//
// y = W . vec(A (x) V (x) T) with A = [1; x1], V = [1; x2], T = [1; x3] (two inputs: V = [1]).
// The [B, N] outer product is never materialized: the columns are walked in chunks of whole
// (i, j) pairs (each K wide); each chunk's tile Z[B, chunk] (with the dropout scale from
// Philox) is built in cache and fed to a GEMM. The backward regenerates the same tiles:
// dW[:, chunk] = dY^T Z and dZ = dY W[:, chunk], contracted into dA, dV, dT on the fly.
// Parallel over chunks (per-thread accumulators). The GEMMs are fusion_gemm_cpu.h's AVX-512
// kernels for fp32 and fp16 weights, ATen's (MKL/oneDNN) otherwise.
#ifndef MIBCORE_ISA  // the first inclusion: what every level uses, compiled for the baseline
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "huge_pages.h"
#include "mibcore/philox.h"
#include "mibcore/tensor_fusion_host.h"

#define MIBCORE_ISA_FILE "tensor_fusion_cpu.cpp"
#include "isa_foreach.h"  // this file again, once per level

TORCH_LIBRARY_IMPL(mibcore, CPU, m) {
  m.impl("tensor_fusion", MIBCORE_CPU_KERNEL(tensor_fusion_cpu));
  m.impl("tensor_fusion_backward", MIBCORE_CPU_KERNEL(tensor_fusion_backward_cpu));
}

#else  // one pass per level (isa_foreach.h)
#include "fusion_gemm_cpu.h"
#include "philox_cpu.h"

namespace mibcore {
namespace MIBCORE_ISA {
namespace {

// Columns per tile: 2048 (long contiguous runs of W's rows; at the paper's B = 32 the tile and
// its mask stay in L2; measured faster than tiles sized to L2 at B = 256), fewer where B
// exceeds 512, so that a thread's buffers stay near 4 MB elements each for any batch.
constexpr int64_t kChunkColumns = 2048;
constexpr int64_t kTileElements = int64_t(1) << 20;
constexpr int64_t kTransposeBlock = 16;  // the forward tile's padding (fusion_gemm_cpu.h)

constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

struct Chunk {
  int64_t first_pair, pairs, column, width;  // pairs [first_pair, first_pair + pairs), columns [column, column + width)
};

std::vector<Chunk> make_chunks(const FusionShape& s) {
  const int64_t columns = std::min(kChunkColumns, kTileElements / std::max<int64_t>(s.B, 1));
  const int64_t pairs_per_chunk = std::max<int64_t>(1, columns / s.K);
  std::vector<Chunk> chunks;
  for (int64_t p = 0; p < s.I * s.J; p += pairs_per_chunk) {
    const int64_t pairs = std::min(pairs_per_chunk, s.I * s.J - p);
    chunks.push_back({p, pairs, p * s.K, pairs * s.K});
  }
  return chunks;
}

// Builds the tile Z[b, c] = A[b, i] V[b, j] T[b, k] * dropout_scale for the chunk's columns,
// rows `ldz` apart; `mask` (B x width, rows ldz apart) receives the dropout scales (left
// untouched without dropout).
template <typename acc_t>
void build_tile(const FusionShape& s, const Chunk& c, const acc_t* A, const acc_t* V, const acc_t* T,
                const Dropout& d, acc_t* Z, int64_t ldz, float* mask, uint32_t* scratch) {
  for (int64_t b = 0; b < s.B; ++b) {
    acc_t* z_row = Z + b * ldz;
    for (int64_t q = 0; q < c.pairs; ++q) {
      const int64_t pair = c.first_pair + q;
      const acc_t coef = A[b * s.I + pair / s.J] * V[b * s.J + pair % s.J];
      const acc_t* t_row = T + b * s.K;
      acc_t* z = z_row + q * s.K;
#pragma GCC ivdep
      for (int64_t k = 0; k < s.K; ++k) z[k] = coef * t_row[k];
    }
    if (d.active) {
      float* m_row = mask + b * ldz;
      cpu::fill_dropout_scale(static_cast<uint64_t>(b * s.N + c.column), c.width, d.seed, d.offset, d.keep_prob,
                         d.inv_keep, m_row, scratch);
#pragma GCC ivdep
      for (int64_t k = 0; k < c.width; ++k) z_row[k] *= dropout_factor<acc_t>(m_row[k], d.inv_keep_d);
    }
  }
}

// dA, dV, dT += the contraction of dZ (times the dropout scale) with the other two factors:
// dT[b, k] += A_i V_j dZ[b, ijk]; s = sum_k dZ[b, ijk] T[b, k]; dA[b, i] += V_j s; dV[b, j] += A_i s.
template <typename acc_t>
void contract_tile(const FusionShape& s, const Chunk& c, const acc_t* a, const acc_t* v, const acc_t* t,
                   const acc_t* dz, const float* mask, double inv_keep_d, acc_t* da, acc_t* dv, acc_t* dt) {
  for (int64_t b = 0; b < s.B; ++b) {
    const acc_t* t_row = t + b * s.K;
    acc_t* dt_row = dt + b * s.K;
    for (int64_t q = 0; q < c.pairs; ++q) {
      const int64_t pair = c.first_pair + q, i = pair / s.J, j = pair % s.J;
      const acc_t ai = a[b * s.I + i], vj = v[b * s.J + j], coef = ai * vj;
      const acc_t* g = dz + b * c.width + q * s.K;
      acc_t dot = 0;
      if (mask != nullptr) {
        const float* m = mask + b * c.width + q * s.K;
#pragma omp simd reduction(+ : dot)
        for (int64_t k = 0; k < s.K; ++k) {
          const acc_t gm = g[k] * dropout_factor<acc_t>(m[k], inv_keep_d);
          dot += gm * t_row[k];
          dt_row[k] += coef * gm;
        }
      } else {
#pragma omp simd reduction(+ : dot)
        for (int64_t k = 0; k < s.K; ++k) {
          dot += g[k] * t_row[k];
          dt_row[k] += coef * g[k];
        }
      }
      da[b * s.I + i] += vj * dot;
      dv[b * s.J + j] += ai * dot;
    }
  }
}

// How one call's GEMMs run: by fusion_gemm_cpu.h's fp32 kernels (`own`) for fp32 weights, and
// for fp16 ones on an fp32 copy of W (and of dY) with each tile rounded to fp16 (MKL has no
// fast fp16 GEMM on this CPU); by ATen's GEMM on the weight for bf16 and fp64, and in builds
// without AVX-512.
struct GemmPlan {
  bool own, round_to_half;
  at::Tensor W;  // what the GEMMs read
};

GemmPlan plan_gemm(const at::Tensor& W) {
  bool own = false;
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
  own = W.scalar_type() == at::kFloat || W.scalar_type() == at::kHalf;
#endif
  const bool half = own && W.scalar_type() == at::kHalf;
  return {own, half, half ? W.to(at::kFloat) : W};
}

// Y += Z W[:, chunk]^T by fusion_gemm_cpu.h's kernels; false (nothing done) where they do not
// apply (acc_t not float).
template <typename acc_t>
bool accumulate_tile_own_gemm(const FusionShape& s, const Chunk& c, acc_t* z, int64_t ldz, int64_t rows_padded,
                              acc_t* zt, const at::Tensor& W, bool round_to_half, at::Tensor& Y) {
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
  if constexpr (std::is_same_v<acc_t, float>) {
    if (round_to_half) cpu::round_through_half(z, ldz, s.B, c.width);
    cpu::transpose_tile(z, ldz, rows_padded, round_up(c.width, kTransposeBlock), zt, rows_padded);
    cpu::accumulate_zt_wt(zt, rows_padded, s.B, W.data_ptr<float>() + c.column, s.N, s.out, c.width,
                          Y.data_ptr<float>(), s.out);
    return true;
  }
#endif
  return false;
}

// dW[:, chunk] = dY^T Z and dZ_tile = dY W[:, chunk] by fusion_gemm_cpu.h's kernels (all fp32
// tensors); false (nothing done) where they do not apply, as above.
template <typename acc_t>
bool backward_tile_own_gemm(const FusionShape& s, const Chunk& c, acc_t* z, const at::Tensor& dY,
                            const at::Tensor& dYt, const at::Tensor& W, bool round_to_half, at::Tensor& grad_weight,
                            at::Tensor& dZ_tile) {
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512
  if constexpr (std::is_same_v<acc_t, float>) {
    if (round_to_half) cpu::round_through_half(z, c.width, s.B, c.width);
    cpu::small_left_gemm(s.out, s.B, c.width, dYt.data_ptr<float>(), s.B, z, c.width,
                         grad_weight.data_ptr<float>() + c.column, s.N, /*prefetch_x=*/false);
    cpu::small_left_gemm(s.B, s.out, c.width, dY.data_ptr<float>(), s.out, W.data_ptr<float>() + c.column, s.N,
                         dZ_tile.data_ptr<float>(), c.width, /*prefetch_x=*/true);
    return true;
  }
#endif
  return false;
}

}  // namespace

at::Tensor tensor_fusion_cpu(at::TensorList inputs, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             double dropout, const at::Tensor& rng) {
  const FusionShape s = check_tensor_fusion_args(inputs, weight, bias, dropout, rng, at::kCPU);
  // The GEMMs below run in the operands' dtype: autocast already chose it before the operator.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const Dropout d = read_dropout(rng, dropout);
  const auto acc_type = accumulation_dtype(weight.scalar_type());
  const auto [A, V, T] = padded_factors(inputs, acc_type);
  // Detached: the ATen calls below are arithmetic, not part of a graph; in the worker threads
  // grad mode is on, and out= GEMMs refuse inputs that require grad.
  const at::Tensor W = weight.detach().contiguous();
  const auto chunks = make_chunks(s);
  const int64_t max_width = chunks.front().width;  // the first chunk is the widest
  const int threads = at::get_num_threads();
  std::vector<at::Tensor> partial(threads);
  for (auto& p : partial) p = at::zeros({s.B, s.out}, weight.options().dtype(acc_type));
  // The tile is transposed and contracted by fusion_gemm_cpu.h's kernels where they serve the
  // dtype (plan_gemm); otherwise by ATen's GEMM (bfloat16 in that dtype: autocast's choice).
  const GemmPlan gemm = plan_gemm(W);
  AT_DISPATCH_FLOATING_TYPES(acc_type, "tensor_fusion_cpu", [&] {
    using acc_t = scalar_t;
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
      at::Tensor& Y = partial[at::get_thread_num()];
      // Rows and columns padded to whole 16 x 16 transpose blocks; the padding stays zero
      // (rows past B) or is never read back (columns past a chunk's width).
      const int64_t rows_padded = round_up(s.B, kTransposeBlock);
      const int64_t ldz = round_up(max_width, kTransposeBlock);
      std::vector<acc_t> z_buf(static_cast<size_t>(rows_padded * ldz));
      std::vector<acc_t> zt_buf(gemm.own ? z_buf.size() : 0);
      std::vector<float> mask(z_buf.size());
      std::vector<uint32_t> scratch(static_cast<size_t>(cpu::dropout_scratch_size(max_width)));
      for (int64_t ci = begin; ci < end; ++ci) {
        const Chunk& c = chunks[ci];
        build_tile<acc_t>(s, c, A.data_ptr<acc_t>(), V.data_ptr<acc_t>(), T.data_ptr<acc_t>(), d, z_buf.data(), ldz,
                          mask.data(), scratch.data());
        if (gemm.own && accumulate_tile_own_gemm(s, c, z_buf.data(), ldz, rows_padded, zt_buf.data(), gemm.W,
                                                 gemm.round_to_half, Y)) {
          continue;
        }
        const at::Tensor Z = at::from_blob(z_buf.data(), {s.B, c.width}, {ldz, 1}, A.options());
        const at::Tensor W_chunk_t = W.narrow(1, c.column, c.width).t();
        if (W.scalar_type() == acc_type) {
          Y.addmm_(Z, W_chunk_t);
        } else {  // half/bfloat16: the GEMM in that dtype (autocast's choice), summed over tiles in fp32
          Y.add_(at::mm(Z.to(W.scalar_type()), W_chunk_t));
        }
      }
    });
  });
  at::Tensor y = partial[0];
  for (int t = 1; t < threads; ++t) y.add_(partial[t]);
  if (bias.has_value() && bias->defined()) y.add_(*bias);
  return y.to(weight.scalar_type());
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> tensor_fusion_backward_cpu(
    const at::Tensor& grad_y, at::TensorList inputs, const at::Tensor& weight, double dropout, const at::Tensor& rng) {
  const FusionShape s = check_tensor_fusion_backward_args(grad_y, inputs, weight, dropout, rng, at::kCPU);
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const Dropout d = read_dropout(rng, dropout);
  const auto acc_type = accumulation_dtype(weight.scalar_type());
  const auto [A, V, T] = padded_factors(inputs, acc_type);
  // Detached: the ATen calls below are arithmetic, not part of a graph; in the worker threads
  // grad mode is on, and out= GEMMs refuse inputs that require grad.
  const at::Tensor W = weight.detach().contiguous();
  const GemmPlan gemm = plan_gemm(W);  // as in the forward; dY in the dtype of gemm.W
  const at::Tensor dY = grad_y.detach().to(W.scalar_type()).to(gemm.W.scalar_type()).contiguous();
  const at::Tensor dYt = dY.t().contiguous();
  at::Tensor grad_weight = at::empty_like(gemm.W);
  ::mibcore::cpu::advise_huge_pages(grad_weight);  // (before its first touch, in the GEMMs below)
  const auto chunks = make_chunks(s);
  const int64_t max_width = chunks.front().width;  // the first chunk is the widest
  const int threads = at::get_num_threads();
  const auto acc_options = A.options();
  std::vector<at::Tensor> dA(threads), dV(threads), dT(threads);
  for (int t = 0; t < threads; ++t) {
    dA[t] = at::zeros({s.B, s.I}, acc_options);
    dV[t] = at::zeros({s.B, s.J}, acc_options);
    dT[t] = at::zeros({s.B, s.K}, acc_options);
  }
  AT_DISPATCH_FLOATING_TYPES(acc_type, "tensor_fusion_backward_cpu", [&] {
    using acc_t = scalar_t;
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
      const int tid = at::get_thread_num();
      acc_t* da = dA[tid].data_ptr<acc_t>();
      acc_t* dv = dV[tid].data_ptr<acc_t>();
      acc_t* dt = dT[tid].data_ptr<acc_t>();
      const acc_t* a = A.data_ptr<acc_t>();
      const acc_t* v = V.data_ptr<acc_t>();
      const acc_t* t = T.data_ptr<acc_t>();
      std::vector<acc_t> z_buf(static_cast<size_t>(s.B * max_width));
      std::vector<float> mask(static_cast<size_t>(s.B * max_width));
      std::vector<uint32_t> scratch(static_cast<size_t>(cpu::dropout_scratch_size(max_width)));
      const at::Tensor dz_buf = at::empty({s.B * max_width}, gemm.W.options());
      for (int64_t ci = begin; ci < end; ++ci) {
        const Chunk& c = chunks[ci];
        at::Tensor Z = at::from_blob(z_buf.data(), {s.B, c.width}, acc_options);
        build_tile<acc_t>(s, c, a, v, t, d, z_buf.data(), c.width, mask.data(), scratch.data());
        // dW[:, chunk] = dY^T Z, written in place (row stride N); each chunk owns its columns.
        // dZ = dY W[:, chunk] (into a buffer reused across chunks), times the dropout scale,
        // contracted into dA, dV, dT.
        at::Tensor dZ_tile = at::from_blob(dz_buf.data_ptr(), {s.B, c.width}, gemm.W.options());
        if (!gemm.own ||
            !backward_tile_own_gemm(s, c, z_buf.data(), dY, dYt, gemm.W, gemm.round_to_half, grad_weight, dZ_tile)) {
          at::Tensor grad_weight_chunk = grad_weight.narrow(1, c.column, c.width);
          at::mm_out(grad_weight_chunk, dYt, Z.to(W.scalar_type()));
          at::mm_out(dZ_tile, dY, W.narrow(1, c.column, c.width));
        }
        const at::Tensor dZ = dZ_tile.to(acc_type);
        contract_tile<acc_t>(s, c, a, v, t, dZ.data_ptr<acc_t>(), d.active ? mask.data() : nullptr, d.inv_keep_d, da,
                             dv, dt);
      }
    });
  });
  for (int t = 1; t < threads; ++t) {
    dA[0].add_(dA[t]);
    dV[0].add_(dV[t]);
    dT[0].add_(dT[t]);
  }
  std::vector<at::Tensor> grads = unpad_factor_grads(inputs, dA[0], dV[0], dT[0]);
  return {grads, grad_weight.to(weight.scalar_type()), grad_y.sum(0).to(weight.scalar_type())};
}

}  // namespace MIBCORE_ISA
}  // namespace mibcore
#endif  // MIBCORE_ISA
