// Launchers of the CUDA kernels of the dropout operators. This header has no torch
// dependency, so that csrc/cuda/*.cu compile standalone with nvcc (the CMake compile check).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.h"

namespace mibcore {
namespace cuda {

// y = dropout(b), a + dropout(b), dropout(relu(b)); kReluBackward: y = b * (a > 0 ? inv_keep : 0)
// with a = the forward's output and b = its gradient (no rng).
enum class DropoutOp { kDropout, kAdd, kRelu, kReluBackward };

struct DropoutArgs {
  DropoutOp op;
  const void* a;       // kAdd: the residual x; kReluBackward: y; else unused
  const void* b;       // the tensor dropped out (kReluBackward: grad_y)
  void* y;             // output, b's dtype and numel
  const int64_t* rng;  // device pointer: (seed, offset); unused by kReluBackward
  int64_t numel;       // of every tensor above (all contiguous)
  float keep_prob;     // (float)(1 - p)
  float inv_keep_f;    // (float)(1 / (1 - p)): the scale for fp32, fp16, bf16
  double inv_keep_d;   // 1 / (1 - p): the scale for fp64
  DType dtype;
};

cudaError_t dropout_launch(const DropoutArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace mibcore
