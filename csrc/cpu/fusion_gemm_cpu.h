// fp32 AVX-512 GEMM kernels for tensor_fusion's implicit GEMM on the CPU.
//
// Per tile Z[B, width] of the outer product and column block W[:, block] of the weight, the
// forward computes Y[B, out] += Z W[:, block]^T and the backward dW[:, block] = dY^T Z and
// dZ = dY W[:, block], where B and out are small (the paper: 32 and 50) and width is long.
// MKL packs both operands on every such call, which at these shapes costs about as much as
// the arithmetic. These kernels read the operands where they lie:
// - forward: the tile is transposed once (16 x 16 blocks in registers) to ZT[width, B] so
//   that the batch runs along the vector lanes; each weight element is loaded once,
//   broadcast, and used for ceil(B / 16) FMAs.
// - backward: both products have a small left factor (dY^T or dY) and a long right one whose
//   rows are contiguous (Z, or W's rows): the columns run along the vector lanes, a few rows
//   of the result stay in registers, and the small factor is broadcast.
// Per-level code (isa_level.h): no include guard, the kernel file includes it once per pass.
#include "isa_level.h"

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX512


#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

namespace mibcore {
namespace MIBCORE_ISA {
namespace cpu {

constexpr int64_t kFusionLanes = 16;  // floats per vector

// dst[c * ldd + b] = src[b * lds + c] for b, c < 16: interleave 32-bit, then 64-bit pairs,
// then 128-bit lanes twice.
inline void transpose16x16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
}

// zt[c * ldzt + b] = z[b * ldz + c] for b < rows_padded, c < cols_padded (multiples of 16).
inline void transpose_tile(const float* z, int64_t ldz, int64_t rows_padded, int64_t cols_padded, float* zt,
                           int64_t ldzt) {
  for (int64_t c = 0; c < cols_padded; c += kFusionLanes) {
    for (int64_t b = 0; b < rows_padded; b += kFusionLanes) {
      transpose16x16(z + b * ldz + c, ldz, zt + c * ldzt + b, ldzt);
    }
  }
}

// y[b * ldy + o] += sum_{c < width} zt[c * ldzt + b] * w_rows[o][c] for b < rows, o < outs:
// kVecs vectors of batch rows by kOuts weight rows in registers (batch lanes past `rows`, and
// rows of w_rows past `outs`, are computed and dropped). Not inlined: inside the caller's
// loops g++ spilled the accumulators.
template <int kVecs, int kOuts>
__attribute__((noinline)) void accumulate_block(const float* zt, int64_t ldzt, const float* const* w_rows,
                                                int64_t width, float* y, int64_t ldy, int rows, int outs) {
  // Every loop over acc is unrolled fully: an indexed array lives in memory, and g++ would
  // then store the accumulators on every iteration.
  __m512 acc[kOuts][kVecs];
#pragma GCC unroll 32
  for (int j = 0; j < kOuts; ++j) {
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < width; ++c) {
    __m512 z[kVecs];
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) z[v] = _mm512_loadu_ps(zt + c * ldzt + v * kFusionLanes);
#pragma GCC unroll 32
    for (int j = 0; j < kOuts; ++j) {
      const __m512 w = _mm512_set1_ps(w_rows[j][c]);
#pragma GCC unroll 2
      for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_fmadd_ps(z[v], w, acc[j][v]);
    }
  }
  alignas(64) float lanes[kVecs * kFusionLanes];
#pragma GCC unroll 32
  for (int j = 0; j < kOuts; ++j) {
    if (j >= outs) break;
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) _mm512_store_ps(lanes + v * kFusionLanes, acc[j][v]);
    for (int b = 0; b < rows; ++b) y[b * ldy + j] += lanes[b];
  }
}

// accumulate_block<kVecs, n> for n = 1 .. kMaxOuts, indexed by n - 1.
template <int kVecs, int... kOuts>
constexpr auto accumulate_block_table(std::integer_sequence<int, kOuts...>) {
  return std::array{&accumulate_block<kVecs, kOuts + 1>...};
}

// Calls accumulate_block over all output blocks of `rows` batch rows: blocks of equal size
// (at most kMaxOuts, which with kVecs keeps 24 accumulators: one broadcast per 24 FMAs), so
// that out = 50 runs as 5 x 10 rather than 4 x 12 + a mostly idle block.
template <int kVecs, int kMaxOuts>
inline void accumulate_rows(const float* zt, int64_t ldzt, int rows, const float* w, int64_t ldw, int64_t out,
                            int64_t width, float* y, int64_t ldy) {
  static constexpr auto kernels = accumulate_block_table<kVecs>(std::make_integer_sequence<int, kMaxOuts>{});
  if (out == 0) return;
  const int64_t blocks = (out + kMaxOuts - 1) / kMaxOuts;
  const int per_block = static_cast<int>((out + blocks - 1) / blocks);
  for (int64_t o = 0; o < out; o += per_block) {
    const int outs = static_cast<int>(std::min<int64_t>(per_block, out - o));
    const float* w_rows[kMaxOuts];
    for (int j = 0; j < per_block; ++j) w_rows[j] = w + (o + std::min(j, outs - 1)) * ldw;
    kernels[per_block - 1](zt, ldzt, w_rows, width, y + o, ldy, rows, outs);
  }
}

// y[b, o] += sum_{c < width} zt[c, b] w[o, c] for b < rows (zt: ldzt >= rows rounded up to 16).
inline void accumulate_zt_wt(const float* zt, int64_t ldzt, int64_t rows, const float* w, int64_t ldw, int64_t out,
                             int64_t width, float* y, int64_t ldy) {
  for (int64_t b = 0; b < rows; b += 2 * kFusionLanes) {
    const int n = static_cast<int>(std::min<int64_t>(2 * kFusionLanes, rows - b));
    if (n > kFusionLanes) {
      accumulate_rows<2, 12>(zt + b, ldzt, n, w, ldw, out, width, y + b * ldy, ldy);
    } else {
      accumulate_rows<1, 24>(zt + b, ldzt, n, w, ldw, out, width, y + b * ldy, ldy);
    }
  }
}

// z[b * ldz + c] = z rounded to fp16 (to nearest even) and back, for b < rows, c < cols: the
// operand an fp16 GEMM sees, so that fp16 weights can use the fp32 kernels on an fp32 copy
// (products of fp16 values are exact in fp32).
inline void round_through_half(float* z, int64_t ldz, int64_t rows, int64_t cols) {
  for (int64_t b = 0; b < rows; ++b) {
    for (int64_t c = 0; c < cols; c += kFusionLanes) {
      const __mmask16 m = c + kFusionLanes <= cols ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(m, z + b * ldz + c);
      const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm512_mask_storeu_ps(z + b * ldz + c, m, _mm512_cvtph_ps(h));
    }
  }
}

// c[m * ldc + j] (+)= sum_{k < depth} a[m * lda + k] * x[k * ldx + j] for m < kRows and the
// 64 columns j of `mask` (4 vectors; masked lanes are neither read nor written); += where
// `accumulate`.
template <int kRows>
__attribute__((noinline)) void small_left_block(const float* a, int64_t lda, int64_t depth, const float* x,
                                                int64_t ldx, float* c, int64_t ldc, const __mmask16* mask,
                                                bool accumulate) {
  __m512 acc[kRows][4];  // every loop over acc unrolled fully, as in accumulate_block
#pragma GCC unroll 8
  for (int m = 0; m < kRows; ++m) {
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[m][v] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < depth; ++k) {
    __m512 xv[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) xv[v] = _mm512_maskz_loadu_ps(mask[v], x + k * ldx + v * kFusionLanes);
#pragma GCC unroll 8
    for (int m = 0; m < kRows; ++m) {
      const __m512 s = _mm512_set1_ps(a[m * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[m][v] = _mm512_fmadd_ps(s, xv[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < kRows; ++m) {
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      float* out = c + m * ldc + v * kFusionLanes;
      if (accumulate) acc[m][v] = _mm512_add_ps(acc[m][v], _mm512_maskz_loadu_ps(mask[v], out));
      _mm512_mask_storeu_ps(out, mask[v], acc[m][v]);
    }
  }
}

template <int... kRows>
constexpr auto small_left_table(std::integer_sequence<int, kRows...>) {
  return std::array{&small_left_block<kRows + 1>...};
}

// c[m, j] = sum_k a[m, k] x[k, j] for m < rows, k < depth, j < width (row strides lda, ldx,
// ldc). Rows go in near-equal blocks of at most 6 (24 accumulators); the depth in blocks of
// 64, so that a block of x (64 rows of 64 columns, 16 KB) stays in L1 while every row block
// reads it. With prefetch_x, the next column block of x is prefetched while this one is
// computed: x rows far apart in memory (W's) are more streams than the hardware prefetcher
// follows.
inline void small_left_gemm(int64_t rows, int64_t depth, int64_t width, const float* a, int64_t lda, const float* x,
                            int64_t ldx, float* c, int64_t ldc, bool prefetch_x) {
  constexpr int kMaxRows = 6;
  constexpr int64_t kColumns = 4 * kFusionLanes;
  constexpr int64_t kDepth = 64;
  static constexpr auto kernels = small_left_table(std::make_integer_sequence<int, kMaxRows>{});
  const int64_t blocks = (rows + kMaxRows - 1) / kMaxRows;
  for (int64_t j = 0; j < width; j += kColumns) {
    __mmask16 mask[4];
    for (int v = 0; v < 4; ++v) {
      const int64_t left = width - j - v * kFusionLanes;
      mask[v] = left >= kFusionLanes ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
    }
    if (prefetch_x && j + kColumns < width) {
      for (int64_t k = 0; k < depth; ++k) {
        for (int64_t v = 0; v < kColumns && j + kColumns + v < width; v += kFusionLanes) {
          _mm_prefetch(reinterpret_cast<const char*>(x + k * ldx + j + kColumns + v), _MM_HINT_T1);
        }
      }
    }
    // At least one pass: with an empty depth (an empty batch) c is still written, with zeros.
    for (int64_t k = 0; k < std::max<int64_t>(depth, 1); k += kDepth) {
      const int64_t n_depth = std::min(kDepth, depth - k);
      for (int64_t blk = 0, m = 0; blk < blocks; ++blk) {
        const int64_t n = rows / blocks + (blk < rows % blocks ? 1 : 0);
        kernels[n - 1](a + m * lda + k, lda, n_depth, x + k * ldx + j, ldx, c + m * ldc + j, ldc, mask, k > 0);
        m += n;
      }
    }
  }
}

}  // namespace cpu
}  // namespace MIBCORE_ISA
}  // namespace mibcore

#endif  // MIBCORE_ISA_AVX512
