// CUDA kernels of mibcore::tensor_fusion: GEMMs whose outer-product operand
// Z[b, n] = A[b, i] V[b, j] T[b, k] * dropout_scale(b * N + n) is generated on the fly
// (n = (i * J + j) * K + k), never stored. All indices are 64-bit; every grid is 1-D and its
// blocks take work items in a grid-stride loop (launch.h).
//   forward  y = Z W^T + bias: block tiles over (B, out) x splits of the N contraction
//            (split-K, mibcore/tensor_fusion_plan.h: >= 2 blocks per SM at the paper's B 32 x
//            out 50), the splits' partial tiles summed in order by reduce_splits_kernel
//            (deterministic). fp32/fp64: 4 x 4 SIMT FMA tiles a thread; fp16/bf16: WMMA
//            tensor-core fragments, fp32 accumulation (Z rounded to the weight's dtype, as the
//            reference's fp16/bf16 outer product is). The dropout keep bits of a span of the
//            contraction are made once per block row: one Philox call per 4 elements.
//   dW       dW = dY^T Z                    16 x 16 thread tiles over (out, N)
//   dX       dZ = dY W * scale, then dA[b, i] += dZ V_j T_k, dV[b, j] += dZ A_i T_k,
//            dT[b, k] += dZ A_i V_j         16 x 16 tiles over (B, N), float atomics: not deterministic
//                                           (the host raises torch's non-determinism alert)
// Compiled, not yet run on a GPU (the emulation in csrc/cuda_emu runs them on the CPU).
#include <mma.h>

#include "elem.cuh"
#include "launch.h"
#include "mibcore/philox.h"
#include "mibcore/tensor_fusion_plan.h"
#include "tensor_fusion_kernels.h"

namespace mibcore {
namespace cuda {
namespace {

constexpr int kTile = 16;
constexpr int kBlocksPerSm = 8;  // grid cap (256 threads a block): the resident blocks; the loop strides the rest

// The 2-D tile grid of a kernel: tiles_x column tiles per row of tiles, `total` tiles.
struct Tiles {
  int64_t x, total;
};

Tiles tiles_of(int64_t rows, int64_t cols) {
  const int64_t x = ceil_div(cols, kTile);
  return Tiles{x, ceil_div(rows, kTile) * x};
}

template <typename acc_t>
struct Factors {
  const acc_t *A, *V, *T;
  int64_t I, J, K, N;
  const int64_t* rng;
  bool dropout;
  float keep_prob, inv_keep;
  double inv_keep_d;

  __device__ acc_t z(int64_t b, int64_t n) const {
    const int64_t k = n % K, ij = n / K, j = ij % J, i = ij / J;
    acc_t value = A[b * I + i] * V[b * J + j] * T[b * K + k];
    if (dropout) {
      value *= dropout_factor<acc_t>(dropout_scale_at(static_cast<uint64_t>(b * N + n), static_cast<uint64_t>(rng[0]),
                                                      static_cast<uint64_t>(rng[1]), keep_prob, inv_keep),
                                     inv_keep_d);
    }
    return value;
  }
};

template <typename acc_t>
Factors<acc_t> factors(const FusionArgs& a) {
  return Factors<acc_t>{static_cast<const acc_t*>(a.A), static_cast<const acc_t*>(a.V),
                        static_cast<const acc_t*>(a.T), a.I, a.J, a.K, a.I * a.J * a.K, a.rng,
                        a.dropout, a.keep_prob, a.inv_keep, a.inv_keep_d};
}

// ---------------------------------------------------------------- forward
// The forward's view of the factors: 32-bit factor offsets (the launcher refuses
// B * max(I, J, K) >= 2^31), the dropout as a keep threshold (philox.h keep_bits) and the
// scale of a kept element in acc_t (1 / keep_prob, exact for double; 1 without dropout).
template <typename acc_t>
struct Outer {
  const acc_t *A, *V, *T;
  int B, I, J, K;
  int64_t N;
  const int64_t* rng;
  bool dropout;
  uint32_t threshold;
  acc_t keep_scale;
};

template <typename acc_t>
Outer<acc_t> outer_of(const FusionArgs& a) {
  const acc_t inv = !a.dropout ? acc_t(1)
                    : sizeof(acc_t) == sizeof(double) ? static_cast<acc_t>(a.inv_keep_d) : static_cast<acc_t>(a.inv_keep);
  return Outer<acc_t>{static_cast<const acc_t*>(a.A), static_cast<const acc_t*>(a.V), static_cast<const acc_t*>(a.T),
                      static_cast<int>(a.B), static_cast<int>(a.I), static_cast<int>(a.J), static_cast<int>(a.K),
                      a.I * a.J * a.K, a.rng, a.dropout, keep_threshold(a.keep_prob), inv};
}

// Digits (i, j, k) of a contraction column n = (i * J + j) * K + k, moved along by a fixed step
// with carries instead of divisions (each digit of the step is below its radix; i may pass I
// past the end of the contraction: readers clamp it).
struct Digits {
  int i, j, k;
};

__device__ __forceinline__ Digits digits_of(int64_t n, int J, int K) {
  const int64_t ij = n / K;
  return Digits{static_cast<int>(ij / J), static_cast<int>(ij % J), static_cast<int>(n % K)};
}

__device__ __forceinline__ void advance(Digits& d, const Digits& step, int J, int K) {
  d.k += step.k;
  const int ck = d.k >= K;
  d.k -= ck * K;
  d.j += step.j + ck;
  const int cj = d.j >= J;
  d.j -= cj * J;
  d.i += step.i + cj;
}

constexpr int kKeepWords = static_cast<int>(kFusionKeepSpan / 32);

// Keep bits of rows b0 .. b0 + kRows - 1 over the columns [s0, s1) (at most kFusionKeepSpan):
// bit (n - s0) % 32 of keep[r][(n - s0) / 32]; every bit set without dropout. One Philox call
// per block of 4 flat indices b * N + n (the contract's), so a row's span costs
// (s1 - s0) / 4 + 1 calls at most (the +1 where the span does not start on a block).
template <int kRows, int kThreads, typename acc_t>
__device__ void fill_keep_bits(uint32_t (&keep)[kRows][kKeepWords], const Outer<acc_t>& f, int64_t b0, int64_t s0,
                               int64_t s1) {
  __syncthreads();  // the previous span's readers are done
  for (int e = threadIdx.x; e < kRows * kKeepWords; e += kThreads) keep[e / kKeepWords][e % kKeepWords] = f.dropout ? 0u : ~0u;
  __syncthreads();
  if (!f.dropout) return;
  const uint64_t seed = static_cast<uint64_t>(f.rng[0]), offset = static_cast<uint64_t>(f.rng[1]);
  const int per_row = static_cast<int>((s1 - s0) / 4 + 2);  // Philox blocks that may touch a row's span
  for (int e = threadIdx.x; e < kRows * per_row; e += kThreads) {
    const int r = e / per_row;
    const int64_t b = b0 + r, first = b * f.N + s0, q = (first >> 2) + e % per_row;
    if (b >= f.B || 4 * q >= b * f.N + s1) continue;
    const uint32_t bits = keep_bits(philox_block(static_cast<uint64_t>(q), seed, offset), f.threshold);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int64_t rel = 4 * q + l - first;  // n - s0
      if (rel >= 0 && rel < s1 - s0 && ((bits >> l) & 1u)) atomicOr(&keep[r][rel >> 5], 1u << (rel & 31));
    }
  }
  __syncthreads();
}

// Where a block's tile goes: y (+ bias) with one split, else its split's partial tile.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void put(acc_t v, int64_t b, int64_t o, int64_t split, int64_t B, int64_t out,
                                    int64_t splits, const scalar_t* __restrict__ bias, scalar_t* __restrict__ y,
                                    acc_t* __restrict__ partial) {
  if (splits == 1) {
    if (bias != nullptr) v += Elem<scalar_t>::load(bias[o]);
    y[b * out + o] = Elem<scalar_t>::store(v);
  } else {
    partial[(split * B + b) * out + o] = v;
  }
}

// A work item: split `split` of block tile (b0, o0), over the columns [n_lo, n_hi).
struct Item {
  int64_t split, b0, o0, n_lo, n_hi;
};

__device__ __forceinline__ Item item_of(int64_t t, const FusionPlan& p, const FusionTile& tile, int64_t N) {
  const int64_t split = t % p.splits, tile_index = t / p.splits;
  const int64_t n_lo = split * p.chunk;
  return Item{split, tile_index / p.tiles_n * tile.bm, tile_index % p.tiles_n * tile.bn, n_lo,
              n_lo + p.chunk < N ? n_lo + p.chunk : N};
}

// Z[b, n] in acc_t from the digits of n, or 0 for a column past the split (`inside` false).
// Branch free: callers clamp rows past B to B - 1 (those outputs are never stored), i is
// clamped to I - 1 past the end of the contraction, and the column is zeroed by a select
// (never a product: a factor may be inf). A dropped NaN or inf stays NaN (times 0), as in the
// other backends.
template <typename acc_t>
__device__ __forceinline__ acc_t z_at(const Outer<acc_t>& f, int b, const Digits& d, bool kept, bool inside) {
  const int i = d.i < f.I ? d.i : f.I - 1;
  const acc_t z = f.A[b * f.I + i] * f.V[b * f.J + d.j] * f.T[b * f.K + d.k] * (kept ? f.keep_scale : acc_t(0));
  return inside ? z : acc_t(0);
}

// fp32 / fp64. Each thread generates one column of the Z and W slabs (coalesced along n) and
// accumulates a 4 x 4 block of the tile from 16-byte shared-memory reads.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kFusionFmaTile.threads)
    forward_fma_kernel(Outer<acc_t> f, const scalar_t* __restrict__ W, const scalar_t* __restrict__ bias,
                       scalar_t* __restrict__ y, acc_t* __restrict__ partial, int64_t out, FusionPlan plan) {
  constexpr FusionTile kT = kFusionFmaTile;
  constexpr int BM = kT.bm, BN = kT.bn, BK = kT.bk, kThreads = kT.threads, kRowStep = kThreads / BK;
  static_assert(BK == 32, "one keep word per row and slab");
  __shared__ Pack4<acc_t> zs[BK][BM / 4 + 1];  // [k][b]: Z^T, 4 rows a read (one padding pack)
  __shared__ Pack4<acc_t> ws[BK][BN / 4 + 1];  // [k][o]: W^T
  __shared__ uint32_t keep[BM][kKeepWords];
  const int tid = threadIdx.x, tx = tid % (BN / 4), ty = tid / (BN / 4), col = tid % BK, row = tid / BK;
  const Digits step = digits_of(BK, f.J, f.K);
  for (int64_t t = blockIdx.x; t < plan.blocks; t += static_cast<int64_t>(gridDim.x)) {
    const Item it = item_of(t, plan, kT, f.N);
    acc_t acc[4][4] = {};
    Digits d = digits_of(it.n_lo + col, f.J, f.K);
    for (int64_t s0 = it.n_lo; s0 < it.n_hi; s0 += kFusionKeepSpan) {  // uniform over the block
      const int64_t s1 = s0 + kFusionKeepSpan < it.n_hi ? s0 + kFusionKeepSpan : it.n_hi;
      fill_keep_bits<BM, kThreads>(keep, f, it.b0, s0, s1);
      for (int64_t n0 = s0; n0 < s1; n0 += BK) {
        const int64_t n = n0 + col, n_load = n < s1 ? n : s1 - 1;
        const bool inside = n < s1;
        const int word = static_cast<int>((n0 - s0) / 32);
#pragma unroll
        for (int q = 0; q < BM / kRowStep; ++q) {
          const int r = row + q * kRowStep;
          const int b = it.b0 + r < f.B ? static_cast<int>(it.b0) + r : f.B - 1;
          zs[col][r / 4].v[r % 4] = z_at(f, b, d, (keep[r][word] >> col) & 1u, inside);
        }
        const scalar_t* w_col = W + n_load;
#pragma unroll
        for (int q = 0; q < BN / kRowStep; ++q) {
          const int o = row + q * kRowStep;
          const int64_t wo = it.o0 + o < out ? it.o0 + o : out - 1;  // (columns past out: never stored)
          const acc_t w = Elem<scalar_t>::load(w_col[wo * f.N]);
          ws[col][o / 4].v[o % 4] = inside ? w : acc_t(0);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
          const Pack4<acc_t> a = zs[k][ty], w = ws[k][tx];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] += a.v[i] * w.v[j];
          }
        }
        __syncthreads();
        advance(d, step, f.J, f.K);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t b = it.b0 + ty * 4 + i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t o = it.o0 + tx * 4 + j;
        if (b < f.B && o < out) put(acc[i][j], b, o, it.split, static_cast<int64_t>(f.B), out, plan.splits, bias, y, partial);
      }
    }
  }
}

// fp16 / bf16 on tensor cores. Each of the 4 warps keeps the whole 32 x 64 tile in 2 x 4
// accumulator fragments and multiplies one 16-column step of each 64-column slab (6 fragment
// loads for 8 MMAs); the 4 warps' tiles are summed in order through shared memory at the end.
template <typename scalar_t>
__global__ void __launch_bounds__(kFusionMmaTile.threads)
    forward_mma_kernel(Outer<float> f, const scalar_t* __restrict__ W, const scalar_t* __restrict__ bias,
                       scalar_t* __restrict__ y, float* __restrict__ partial, int64_t out, FusionPlan plan) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // bf16 WMMA needs sm_80 (setup.py builds 8.0 and 9.0)
  namespace wmma = nvcuda::wmma;
  constexpr FusionTile kT = kFusionMmaTile;
  constexpr int BM = kT.bm, BN = kT.bn, BK = kT.bk, kThreads = kT.threads, kRowStep = kThreads / BK;
  constexpr int LD = BK + 8, LDR = BN + 4;  // padded leading dimensions (WMMA: multiples of 16 bytes)
  static_assert(BM == 32 && BN == 64 && BK == 16 * (kThreads / 32), "one 16-column step a warp, 2 x 4 fragments");
  alignas(32) __shared__ scalar_t zs[BM][LD];  // A = Z, row-major
  alignas(32) __shared__ scalar_t ws[BN][LD];  // B = W^T, column-major ([o][k])
  alignas(32) __shared__ float red[BM][LDR];   // the warps' tiles, summed
  __shared__ uint32_t keep[BM][kKeepWords];
  const int tid = threadIdx.x, warp = tid / 32, col = tid % BK, row = tid / BK;
  const scalar_t zero = Elem<scalar_t>::store(0.0f);
  const Digits step = digits_of(BK, f.J, f.K);
  for (int64_t t = blockIdx.x; t < plan.blocks; t += static_cast<int64_t>(gridDim.x)) {
    const Item it = item_of(t, plan, kT, f.N);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    }
    Digits d = digits_of(it.n_lo + col, f.J, f.K);
    for (int64_t s0 = it.n_lo; s0 < it.n_hi; s0 += kFusionKeepSpan) {
      const int64_t s1 = s0 + kFusionKeepSpan < it.n_hi ? s0 + kFusionKeepSpan : it.n_hi;
      fill_keep_bits<BM, kThreads>(keep, f, it.b0, s0, s1);
      for (int64_t n0 = s0; n0 < s1; n0 += BK) {
        const int64_t n = n0 + col, n_load = n < s1 ? n : s1 - 1;
        const bool inside = n < s1;
        const int word = static_cast<int>((n_load - s0) >> 5), bit = static_cast<int>((n_load - s0) & 31);
#pragma unroll
        for (int q = 0; q < BM / kRowStep; ++q) {
          const int r = row + q * kRowStep;
          const int b = it.b0 + r < f.B ? static_cast<int>(it.b0) + r : f.B - 1;
          zs[r][col] = Elem<scalar_t>::store(z_at(f, b, d, (keep[r][word] >> bit) & 1u, inside));
        }
        const scalar_t* w_col = W + n_load;
#pragma unroll 8
        for (int q = 0; q < BN / kRowStep; ++q) {
          const int o = row + q * kRowStep;
          const int64_t wo = it.o0 + o < out ? it.o0 + o : out - 1;
          const scalar_t w = w_col[wo * f.N];
          ws[o][col] = inside ? w : zero;
        }
        __syncthreads();
        wmma::fragment<wmma::matrix_a, 16, 16, 16, scalar_t, wmma::row_major> a0, a1;
        wmma::load_matrix_sync(a0, &zs[0][16 * warp], LD);
        wmma::load_matrix_sync(a1, &zs[16][16 * warp], LD);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, scalar_t, wmma::col_major> w;
          wmma::load_matrix_sync(w, &ws[16 * j][16 * warp], LD);
          wmma::mma_sync(acc[0][j], a0, w, acc[0][j]);
          wmma::mma_sync(acc[1][j], a1, w, acc[1][j]);
        }
        __syncthreads();
        advance(d, step, f.J, f.K);
      }
    }
    for (int w = 0; w < kThreads / 32; ++w) {  // red = tile of warp 0 + tile of warp 1 + ...
      if (warp == w) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if (w > 0) {
              wmma::fragment<wmma::accumulator, 16, 16, 16, float> prev;
              wmma::load_matrix_sync(prev, &red[16 * i][16 * j], LDR, wmma::mem_row_major);
              for (int e = 0; e < prev.num_elements; ++e) acc[i][j].x[e] = prev.x[e] + acc[i][j].x[e];
            }
            wmma::store_matrix_sync(&red[16 * i][16 * j], acc[i][j], LDR, wmma::mem_row_major);
          }
        }
      }
      __syncthreads();
    }
    for (int e = tid; e < BM * BN; e += kThreads) {
      const int64_t b = it.b0 + e / BN, o = it.o0 + e % BN;
      if (b < f.B && o < out) {
        put(red[e / BN][e % BN], b, o, it.split, static_cast<int64_t>(f.B), out, plan.splits, bias, y, partial);
      }
    }
    __syncthreads();  // red is read before the next item's warps write it
  }
#endif
}

// y = the sum of the splits' partial tiles, in split order, + bias.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(256)
    reduce_splits_kernel(const acc_t* __restrict__ partial, const scalar_t* __restrict__ bias,
                         scalar_t* __restrict__ y, int64_t B, int64_t out, int64_t splits) {
  const int64_t numel = B * out;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < numel;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc_t v = 0;
    for (int64_t s = 0; s < splits; ++s) v += partial[s * numel + e];
    if (bias != nullptr) v += Elem<scalar_t>::load(bias[e % out]);
    y[e] = Elem<scalar_t>::store(v);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTile* kTile)
    grad_weight_kernel(Factors<acc_t> f, const scalar_t* __restrict__ dy, scalar_t* __restrict__ dW, int64_t B,
                       int64_t out, Tiles tiles) {
  __shared__ acc_t dys[kTile][kTile + 1];  // [b][o]
  __shared__ acc_t zs[kTile][kTile + 1];   // [b][n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t t = blockIdx.x; t < tiles.total; t += gridDim.x) {
    const int64_t n0 = (t % tiles.x) * kTile, o0 = (t / tiles.x) * kTile;
    const int64_t n = n0 + tx, o = o0 + ty, o_col = o0 + tx;
    acc_t acc = 0;
    for (int64_t b0 = 0; b0 < B; b0 += kTile) {
      const int64_t b = b0 + ty;
      dys[ty][tx] = (b < B && o_col < out) ? Elem<scalar_t>::load(dy[b * out + o_col]) : acc_t(0);
      zs[ty][tx] = (b < B && n < f.N) ? f.z(b, n) : acc_t(0);
      __syncthreads();
#pragma unroll
      for (int q = 0; q < kTile; ++q) acc += dys[q][ty] * zs[q][tx];
      __syncthreads();
    }
    if (o < out && n < f.N) dW[o * f.N + n] = Elem<scalar_t>::store(acc);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTile* kTile)
    grad_input_kernel(Factors<acc_t> f, const scalar_t* __restrict__ W, const scalar_t* __restrict__ dy, acc_t* dA,
                      acc_t* dV, acc_t* dT, int64_t B, int64_t out, Tiles tiles) {
  __shared__ acc_t dys[kTile][kTile + 1];  // [b][o]
  __shared__ acc_t ws[kTile][kTile + 1];   // [o][n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t t = blockIdx.x; t < tiles.total; t += gridDim.x) {
    const int64_t n = (t % tiles.x) * kTile + tx, b = (t / tiles.x) * kTile + ty;
    acc_t dz = 0;
    for (int64_t o0 = 0; o0 < out; o0 += kTile) {
      dys[ty][tx] = (b < B && o0 + tx < out) ? Elem<scalar_t>::load(dy[b * out + o0 + tx]) : acc_t(0);
      ws[ty][tx] = (o0 + ty < out && n < f.N) ? Elem<scalar_t>::load(W[(o0 + ty) * f.N + n]) : acc_t(0);
      __syncthreads();
#pragma unroll
      for (int q = 0; q < kTile; ++q) dz += dys[ty][q] * ws[q][tx];
      __syncthreads();
    }
    if (b >= B || n >= f.N) continue;  // no barrier follows in this tile
    if (f.dropout) {
      dz *= dropout_factor<acc_t>(dropout_scale_at(static_cast<uint64_t>(b * f.N + n), static_cast<uint64_t>(f.rng[0]),
                                                   static_cast<uint64_t>(f.rng[1]), f.keep_prob, f.inv_keep),
                                  f.inv_keep_d);
    }
    const int64_t k = n % f.K, ij = n / f.K, j = ij % f.J, i = ij / f.J;
    const acc_t a = f.A[b * f.I + i], v = f.V[b * f.J + j], tk = f.T[b * f.K + k];
    atomicAdd(dA + b * f.I + i, dz * v * tk);
    atomicAdd(dV + b * f.J + j, dz * a * tk);
    atomicAdd(dT + b * f.K + k, dz * a * v);
  }
}

// Launches kernel(args..., tiles) over the tiles of a rows x cols output.
template <typename Kernel, typename... Args>
cudaError_t launch_tiles(Kernel kernel, int64_t rows, int64_t cols, cudaStream_t stream, Args... args) {
  const Tiles tiles = tiles_of(rows, cols);
  unsigned grid = 0;
  const cudaError_t status = grid_for(tiles.total, kBlocksPerSm, &grid);
  if (status != cudaSuccess) return status;
  kernel<<<grid, dim3(kTile, kTile), 0, stream>>>(args..., tiles);
  return cudaGetLastError();
}

}  // namespace

namespace {

constexpr bool is_16_bit(DType t) { return t == DType::kFloat16 || t == DType::kBFloat16; }

// The forward's plan on the current device (mibcore/tensor_fusion_plan.h).
cudaError_t forward_plan(const FusionArgs& a, FusionPlan* plan) {
  int sms = 0;
  const cudaError_t status = sm_count(&sms);
  if (status != cudaSuccess) return status;
  *plan = fusion_plan(a.B, a.out, a.I * a.J * a.K, sms, is_16_bit(a.dtype) ? kFusionMmaTile : kFusionFmaTile);
  return cudaSuccess;
}

}  // namespace

cudaError_t tensor_fusion_forward_workspace(const FusionArgs& a, int64_t* bytes) {
  *bytes = 0;
  if (a.B == 0 || a.out == 0) return cudaSuccess;
  FusionPlan plan{};
  const cudaError_t status = forward_plan(a, &plan);
  if (status == cudaSuccess) *bytes = fusion_workspace_bytes(plan, a.B, a.out, a.dtype == DType::kFloat64 ? 8 : 4);
  return status;
}

cudaError_t tensor_fusion_forward(const FusionArgs& a, const void* bias, void* y, void* workspace,
                                  cudaStream_t stream) {
  if (a.B == 0 || a.out == 0) return cudaSuccess;
  FusionPlan plan{};
  cudaError_t status = forward_plan(a, &plan);
  if (status != cudaSuccess) return status;
  if (plan.splits > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  if (!tensor_fusion_factors_fit(a)) return cudaErrorInvalidValue;  // 32-bit factor offsets
  unsigned grid = 0;
  status = grid_for(plan.blocks, kBlocksPerSm, &grid);
  if (status != cudaSuccess) return status;
  return with_types(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Elem<scalar_t>::acc;
    const auto* W = static_cast<const scalar_t*>(a.weight);
    const auto* b = static_cast<const scalar_t*>(bias);
    auto* out = static_cast<scalar_t*>(y);
    auto* partial = static_cast<acc_t*>(workspace);
    if constexpr (sizeof(scalar_t) == 2) {
      forward_mma_kernel<scalar_t><<<grid, kFusionMmaTile.threads, 0, stream>>>(outer_of<acc_t>(a), W, b, out, partial,
                                                                                a.out, plan);
    } else {
      forward_fma_kernel<scalar_t, acc_t><<<grid, kFusionFmaTile.threads, 0, stream>>>(outer_of<acc_t>(a), W, b, out,
                                                                                        partial, a.out, plan);
    }
    cudaError_t s = cudaGetLastError();
    if (s != cudaSuccess || plan.splits == 1) return s;
    s = grid_for(ceil_div(a.B * a.out, 256), kBlocksPerSm, &grid);
    if (s != cudaSuccess) return s;
    reduce_splits_kernel<scalar_t, acc_t><<<grid, 256, 0, stream>>>(partial, b, out, a.B, a.out, plan.splits);
    return cudaGetLastError();
  });
}

cudaError_t tensor_fusion_backward(const FusionArgs& a, const void* grad_y, void* grad_weight, void* dA, void* dV,
                                   void* dT, cudaStream_t stream) {
  if (a.out == 0) return cudaSuccess;
  const int64_t N = a.I * a.J * a.K;
  return with_types(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Elem<scalar_t>::acc;
    const auto f = factors<acc_t>(a);
    const auto* dy = static_cast<const scalar_t*>(grad_y);
    cudaError_t status = launch_tiles(grad_weight_kernel<scalar_t, acc_t>, a.out, N, stream, f, dy,
                                      static_cast<scalar_t*>(grad_weight), a.B, a.out);
    if (status == cudaSuccess && a.B > 0) {
      status = launch_tiles(grad_input_kernel<scalar_t, acc_t>, a.B, N, stream, f,
                            static_cast<const scalar_t*>(a.weight), dy, static_cast<acc_t*>(dA),
                            static_cast<acc_t*>(dV), static_cast<acc_t*>(dT), a.B, a.out);
    }
    return status;
  });
}

}  // namespace cuda
}  // namespace mibcore
