// fp32 AVX-512 GEMM kernels for the forward of tensor_fusion's implicit GEMM.
//
// The forward contracts a tile Z[B, width] of the outer product with a column block of the
// weight, Y[B, out] += Z W[:, block]^T, where B and out are small (the paper: 32 and 50) and
// width is long. MKL packs both operands on every such call, which at these shapes costs
// about as much as the arithmetic. Here the tile is transposed once (16 x 16 blocks in
// registers) to ZT[width, B] so that the batch runs along the vector lanes: each weight
// element is loaded once, broadcast, and used for ceil(B / 16) FMAs, straight from the
// weight's rows, with no packing.
#pragma once

#if defined(__AVX512F__)
#define MIBCORE_HAVE_FUSION_GEMM 1

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

namespace mibcore {
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
    for (int64_t b = 0; b < rows_padded; b += kFusionLanes) transpose16x16(z + b * ldz + c, ldz, zt + c * ldzt + b, ldzt);
  }
}

// y[b * ldy + o] += sum_{c < width} zt[c * ldzt + b] * w_rows[o][c] for b < rows, o < outs:
// kVecs vectors of batch rows by kOuts weight rows in registers (batch lanes past `rows`, and
// rows of w_rows past `outs`, are computed and dropped). Not inlined: inside the caller's loops g++ spilled the accumulators.
template <int kVecs, int kOuts>
__attribute__((noinline)) void accumulate_block(const float* zt, int64_t ldzt, const float* const* w_rows, int64_t width, float* y,
                             int64_t ldy, int rows, int outs) {
  __m512 acc[kOuts][kVecs];
  for (int j = 0; j < kOuts; ++j) {
    for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < width; ++c) {
    __m512 z[kVecs];
    for (int v = 0; v < kVecs; ++v) z[v] = _mm512_loadu_ps(zt + c * ldzt + v * kFusionLanes);
    for (int j = 0; j < kOuts; ++j) {
      const __m512 w = _mm512_set1_ps(w_rows[j][c]);
      for (int v = 0; v < kVecs; ++v) acc[j][v] = _mm512_fmadd_ps(z[v], w, acc[j][v]);
    }
  }
  alignas(64) float lanes[kVecs * kFusionLanes];
  for (int j = 0; j < outs; ++j) {
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

}  // namespace cpu
}  // namespace mibcore

#endif  // __AVX512F__
