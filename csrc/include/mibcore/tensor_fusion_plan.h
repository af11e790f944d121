// The launch plan of the CUDA forward of mibcore::tensor_fusion (csrc/cuda/tensor_fusion_kernels.cu):
// block tiles per compute path and how the N = I * J * K contraction is split (split-K), so that
// a small output (the paper's B 32 x out 50: one block tile) still gives every SM >= 2 blocks.
// Plain C++ (no CUDA): the launcher, the cuda-emu driver and tests/test_cuda_tensor_fusion.py
// read the same plan.
//
// A block computes a bm x bn tile of y (batch rows x outputs) over one split's range of the
// contraction, in slabs of bk columns of the outer product; with more than one split each
// block writes its partial tile to a workspace [splits, B, out] (the accumulation type) and a
// second kernel sums the splits in order s = 0, 1, ... (deterministic: no float atomics).
#pragma once

#include <algorithm>
#include <cstdint>

namespace mibcore {

struct FusionTile {
  int bm, bn, bk, threads;
};
// fp32 / fp64: SIMT FMA, 4 x 4 outputs a thread (8 x 16 threads).
constexpr FusionTile kFusionFmaTile{32, 64, 32, 128};
// fp16 / bf16: WMMA 16x16x16, fp32 accumulation; each of the 4 warps holds the whole 32 x 64
// tile (2 x 4 fragments) and takes one 16-column step of each 64-column slab.
constexpr FusionTile kFusionMmaTile{32, 64, 64, 128};

constexpr int64_t kFusionKeepSpan = 1024;  // contraction columns whose keep bits a block holds at once
constexpr int64_t kFusionMinSlabs = 4;     // a split spans at least this many slabs (amortizes its epilogue)
constexpr int64_t kFusionBlocksPerSm = 2;  // the target: >= 2 resident blocks per SM

struct FusionPlan {
  int64_t tiles_m, tiles_n, splits, chunk, blocks;  // chunk: contraction columns per split
};

// The plan for y [B, out] = Z [B, N] W^T on a device of `sms` SMs (B, out, N >= 1).
inline FusionPlan fusion_plan(int64_t B, int64_t out, int64_t N, int64_t sms, const FusionTile& t) {
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  FusionPlan p{};
  p.tiles_m = ceil_div(B, t.bm);
  p.tiles_n = ceil_div(out, t.bn);
  const int64_t tiles = p.tiles_m * p.tiles_n;
  const int64_t target = kFusionBlocksPerSm * std::max<int64_t>(sms, 1);
  const int64_t min_chunk = kFusionMinSlabs * t.bk;
  if (tiles >= target || N <= min_chunk) {
    p.chunk = N;  // one split
  } else {
    // Exactly the wanted splits where a chunk gives that (every SM then runs the same number of
    // blocks: 264 at the paper's shape, not 277 with 3 on some SMs), else a few more (the chunk
    // rounded down). A split's last slab may be partial.
    const int64_t want = ceil_div(target, tiles);
    p.chunk = std::max(min_chunk, ceil_div(N, want));
    if (ceil_div(N, p.chunk) < want) p.chunk = std::max(min_chunk, N / want);
  }
  p.splits = ceil_div(N, p.chunk);
  p.blocks = tiles * p.splits;
  return p;
}

// Bytes of the workspace of the partial tiles (0 with one split).
inline int64_t fusion_workspace_bytes(const FusionPlan& p, int64_t B, int64_t out, int64_t acc_bytes) {
  return p.splits > 1 ? p.splits * B * out * acc_bytes : 0;
}

}  // namespace mibcore
