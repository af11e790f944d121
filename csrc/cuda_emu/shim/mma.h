// Stand-in for CUDA's <mma.h> in the cuda-emu build (csrc/cuda_emu/cuda_emu.h): the WMMA fragment
// API in plain scalar C++. Each thread's fragment holds the whole 16 x 16 tile in float (the
// element order of x[] is unspecified on the GPU: kernels may only combine fragments of one type
// element by element, as this layout also allows). Every call is warp-collective: it passes a
// full-warp barrier, so a call from a divergent part of a warp deadlocks and is reported; the
// pointer (32-byte) and leading-dimension (16-byte multiple) rules are checked as nvcc states them.
// mma_sync accumulates in float in k order (the hardware's order and rounding are unspecified).
#pragma once
#include <type_traits>

#include "../cuda_emu.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, int M, int N, int K> struct Shape;
template <int M, int N, int K> struct Shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct Shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct Shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = Shape<Use, M, N, K>::rows, cols = Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  float x[num_elements];  // [row][col]
};

template <typename T>
void check_operand(const T* p, unsigned ldm) {
  __syncwarp();
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) emu::fail("wmma: a matrix pointer that is not 32-byte aligned");
  if ((ldm * sizeof(T)) % 16 != 0) emu::fail("wmma: a leading dimension that is not a multiple of 16 bytes");
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  __syncwarp();
  for (float& e : f.x) e = v;
}

// Operand fragments: the layout is the fragment's own.
template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  check_operand(p, ldm);
  constexpr bool row = std::is_same_v<Layout, row_major>;
  for (int r = 0; r < f.rows; ++r) {
    for (int c = 0; c < f.cols; ++c) f.x[r * f.cols + c] = to_float(row ? p[r * ldm + c] : p[c * ldm + r]);
  }
}

// Accumulator fragments: the layout is the call's.
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout) {
  check_operand(p, ldm);
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  check_operand(p, ldm);
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
  }
  __syncwarp();  // every lane has written before any lane reads
}

template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  __syncwarp();
  float out[M * N];
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      float v = c.x[m * N + n];
      for (int k = 0; k < K; ++k) v += a.x[m * K + k] * b.x[k * N + n];
      out[m * N + n] = v;
    }
  }
  for (int e = 0; e < M * N; ++e) d.x[e] = out[e];
}

}  // namespace wmma
}  // namespace nvcuda
