// CUDA kernels of mibcore::tensor_fusion: shared-memory tiled GEMMs whose outer-product
// operand Z[b, n] = A[b, i] V[b, j] T[b, k] * dropout_scale(b * N + n) is generated on the fly
// (n = (i * J + j) * K + k), never stored. 16 x 16 thread tiles, no tensor cores (a simple
// and portable version; `auto` runs the Triton backend's tensor-core kernels on GPUs:
// mibcore/ops/tensor_fusion.py AUTO_ORDER). Each kernel takes 16 x 16 output tiles from a 1-D
// grid in a grid-stride loop (tile t = (row tile t / tiles_x, column tile t % tiles_x)), so no
// size overflows a grid dimension (launch.h); all indices are 64-bit.
//   forward  y = Z W^T + bias               tiles over (B, out)
//   dW       dW = dY^T Z                    tiles over (out, N)
//   dX       dZ = dY W * scale, then dA[b, i] += dZ V_j T_k, dV[b, j] += dZ A_i T_k,
//            dT[b, k] += dZ A_i V_j         tiles over (B, N), float atomics: not deterministic
//                                           (the host raises torch's non-determinism alert)
#include "elem.cuh"
#include "launch.h"
#include "mibcore/philox.h"
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

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTile* kTile)
    forward_kernel(Factors<acc_t> f, const scalar_t* __restrict__ W, const scalar_t* __restrict__ bias,
                   scalar_t* __restrict__ y, int64_t B, int64_t out, Tiles tiles) {
  __shared__ acc_t zs[kTile][kTile + 1];  // [b][n]
  __shared__ acc_t ws[kTile][kTile + 1];  // [o][n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t t = blockIdx.x; t < tiles.total; t += gridDim.x) {  // uniform over the block
    const int64_t o0 = (t % tiles.x) * kTile, b0 = (t / tiles.x) * kTile;
    const int64_t o = o0 + tx, b = b0 + ty, w_row = o0 + ty;
    acc_t acc = 0;
    for (int64_t n0 = 0; n0 < f.N; n0 += kTile) {
      const int64_t n = n0 + tx;
      zs[ty][tx] = (b < B && n < f.N) ? f.z(b, n) : acc_t(0);
      ws[ty][tx] = (w_row < out && n < f.N) ? Elem<scalar_t>::load(W[w_row * f.N + n]) : acc_t(0);
      __syncthreads();
#pragma unroll
      for (int q = 0; q < kTile; ++q) acc += zs[ty][q] * ws[tx][q];
      __syncthreads();
    }
    if (b < B && o < out) {
      if (bias != nullptr) acc += Elem<scalar_t>::load(bias[o]);
      y[b * out + o] = Elem<scalar_t>::store(acc);
    }
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

cudaError_t tensor_fusion_forward(const FusionArgs& a, const void* bias, void* y, cudaStream_t stream) {
  if (a.B == 0 || a.out == 0) return cudaSuccess;
  return with_types(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Elem<scalar_t>::acc;
    return launch_tiles(forward_kernel<scalar_t, acc_t>, a.B, a.out, stream, factors<acc_t>(a),
                        static_cast<const scalar_t*>(a.weight), static_cast<const scalar_t*>(bias),
                        static_cast<scalar_t*>(y), a.B, a.out);
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
