// Test-only emulation of the CUDA runtime and device builtins that csrc/cuda/*.cu use, so that
// the real kernels compile with g++ as C++ (their launch statements rewritten by
// translate_launches.py, this header force-included, shim/ on the include path in place of the
// CUDA headers) and run on the CPU under ASan and UBSan (`make cuda-emu`, csrc/cuda_emu/emu.mk).
//
// Execution model: a launch runs its blocks one after another; the threads of a block are fibers
// on one OS thread (the small context switch below), each running the kernel from its start and
// switched only at __syncthreads and warp collectives. A barrier releases when every thread of
// its scope (the block, or the 32 lanes of a warp for __shfl_*_sync) has arrived; a thread that
// exits while others wait, or threads waiting at barriers of different scopes, is reported as a
// divergent barrier (undefined on the GPU) and aborts. Each scheduling pass resumes the ready
// threads in the opposite order of the last, so that a read of shared memory before the barrier
// that should order it sees stale data in either direction. __shared__ variables are statics
// (one block runs at a time), atomics are std::atomic_ref. The SM count grid_for reads
// (cudaDevAttrMultiProcessorCount) and a cap on gridDim.x are settable (emu::config), to force
// the kernels' grid-stride loops. Nothing here models timing, the memory model beyond barriers,
// or warp scheduling (README.md, section GPU, says what this cannot catch).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include "fiber_context.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block runs at a time: statics are the block's shared memory

// ---------------------------------------------------------------- runtime types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaDeviceAttr { cudaDevAttrMaxThreadsPerBlock = 1, cudaDevAttrMultiProcessorCount = 16 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;
constexpr int warpSize = 32;

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// ---------------------------------------------------------------- half and bfloat16 storage
struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.x, 2);
  return static_cast<float>(f);
}
inline __half __float2half_rn(float v) {
  const _Float16 f = static_cast<_Float16>(v);  // round to nearest even (libgcc)
  __half h;
  std::memcpy(&h.x, &f, 2);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = static_cast<uint32_t>(b.x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (v != v) return __nv_bfloat16{0x7fff};  // CUDA's canonical NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);      // round to nearest even
  return __nv_bfloat16{static_cast<uint16_t>(bits >> 16)};
}

namespace emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "cuda-emu: %s (block %u,%u,%u thread %u,%u,%u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
               threadIdx.x, threadIdx.y, threadIdx.z);
  std::abort();
}

// Settings of the emulated device, and counters of what ran.
struct Config {
  int sms = 132;          // cudaDevAttrMultiProcessorCount (an H200's)
  unsigned max_grid = 0;  // nonzero: gridDim.x capped to it (forces grid-stride loops)
};
struct Stats {
  long launches = 0, blocks = 0, threads = 0, barriers = 0, warp_collectives = 0;
};
inline Config config;
inline Stats stats;
inline cudaError_t last_error = cudaSuccess;

struct Barrier {
  unsigned arrived = 0, generation = 0, scope = 0;  // scope: 0 = block, 1 + w = warp w
};

// ---- execution contexts: fiber_context.h (context_init, context_switch)

struct Fiber {
  Context ctx;
  char* stack = nullptr;
  uint3 tid{};
  unsigned linear = 0;
  bool done = false;
  const Barrier* waiting = nullptr;  // released when its generation moves on
  unsigned wait_generation = 0;
  void* fake_stack = nullptr;
};

constexpr size_t kStackBytes = 256 * 1024;  // room for a sanitizer report printed from a fiber
constexpr size_t kGuardBytes = 4096;

// The block being run: its fibers, barriers and the per-thread exchange slots of warp shuffles.
struct Block {
  std::vector<Fiber> fibers;
  unsigned n = 0, warps = 0;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<uint64_t> slots;
  Context scheduler;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
  void* sched_fake_stack = nullptr;
  Fiber* current = nullptr;
  void (*body)(const void*) = nullptr;
  const void* body_arg = nullptr;
};
inline Block block;

// ---- context switches, annotated for ASan (its fake stacks and stack bounds follow the fibers)
inline void enter_fiber(Fiber& f) {
  block.current = &f;
  threadIdx = f.tid;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(&block.sched_fake_stack, f.stack, kStackBytes);
#endif
  context_switch(block.scheduler, f.ctx);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(block.sched_fake_stack, nullptr, nullptr);
#endif
}

inline void arrived_in_fiber(Fiber& f) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(f.fake_stack, &block.sched_bottom, &block.sched_size);
#else
  (void)f;
#endif
}

inline void yield_to_scheduler(bool exiting) {
  Fiber& f = *block.current;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.fake_stack, block.sched_bottom, block.sched_size);
#else
  (void)exiting;
#endif
  context_switch(f.ctx, block.scheduler);
  arrived_in_fiber(f);
}

inline void fiber_main() {
  Fiber& f = *block.current;
  arrived_in_fiber(f);
  block.body(block.body_arg);
  f.done = true;
  yield_to_scheduler(true);  // never resumed
  fail("an exited thread was resumed");
}

// Arrive at a barrier of `expected` threads; wait (switch away) until the last one arrives.
inline void arrive_and_wait(Barrier& b, unsigned expected) {
  ++stats.barriers;
  if (++b.arrived == expected) {
    b.arrived = 0;
    ++b.generation;
    yield_to_scheduler(false);  // let the others run first: a schedule as adversarial as cheap
    return;
  }
  Fiber& f = *block.current;
  f.waiting = &b;
  f.wait_generation = b.generation;
  yield_to_scheduler(false);
  f.waiting = nullptr;
}

inline char* stack_of(unsigned i) {
  static std::vector<char*> stacks;
  while (stacks.size() <= i) {
    void* p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) fail("mmap of a fiber stack failed");
    mprotect(p, kGuardBytes, PROT_NONE);  // a stack overflow faults instead of corrupting
    stacks.push_back(static_cast<char*>(p) + kGuardBytes);
  }
  return stacks[i];
}

// Runs every thread of the current block (blockIdx, blockDim set) to its end.
inline void run_block() {
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  block.n = n;
  block.warps = (n + 31) / 32;
  block.fibers.assign(n, Fiber{});
  block.block_barrier = Barrier{};
  block.warp_barriers.assign(block.warps, Barrier{});
  for (unsigned w = 0; w < block.warps; ++w) block.warp_barriers[w].scope = 1 + w;
  block.slots.assign(n, 0);
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = block.fibers[i];
    f.linear = i;
    f.tid = uint3{i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y)};
    f.stack = stack_of(i);
    context_init(f.ctx, f.stack, kStackBytes, fiber_main);
  }
  stats.threads += n;
  unsigned live = n;
  bool forward = true;
  while (live > 0) {
    bool ran = false;
    for (unsigned k = 0; k < n; ++k) {
      Fiber& f = block.fibers[forward ? k : n - 1 - k];
      if (f.done || (f.waiting != nullptr && f.waiting->generation == f.wait_generation)) continue;
      enter_fiber(f);
      ran = true;
      if (f.done) --live;
    }
    forward = !forward;
    if (!ran) {  // everyone left waits: some threads exited or wait at another barrier
      unsigned at_block = 0, at_warp = 0;
      for (const Fiber& f : block.fibers) {
        if (f.waiting != nullptr) (f.waiting->scope == 0 ? at_block : at_warp) += 1;
      }
      std::fprintf(stderr, "cuda-emu: divergent barrier: %u threads wait at __syncthreads, %u at a warp collective, "
                   "%u exited\n", at_block, at_warp, n - live);
      fail("deadlock");
    }
  }
}

// Type-erased kernel call of a launch (the lambda the rewritten launch statement passes).
template <typename Body>
void call_body(const void* body) {
  (*static_cast<const Body*>(body))();
}

struct LaunchCfg {
  dim3 grid, block;
  size_t shared_bytes;
  LaunchCfg(dim3 g, dim3 b, size_t smem = 0, cudaStream_t = nullptr) : grid(g), block(b), shared_bytes(smem) {}
};

// `kernel<<<grid, block, smem, stream>>>(args)` is rewritten (translate_launches.py) to
// `::emu::launch(::emu::LaunchCfg(grid, block, smem, stream), [&] { kernel(args); })`.
template <typename Body>
void launch(const LaunchCfg& cfg, const Body& body) {
  const dim3 g = cfg.grid, b = cfg.block;
  const unsigned long threads = static_cast<unsigned long>(b.x) * b.y * b.z;
  if (g.x == 0 || g.x > 2147483647u || g.y == 0 || g.y > 65535 || g.z == 0 || g.z > 65535 || threads == 0 ||
      threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 || cfg.shared_bytes > 48 * 1024) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  ++stats.launches;
  gridDim = g;
  if (config.max_grid != 0 && gridDim.x > config.max_grid) gridDim.x = config.max_grid;
  blockDim = b;
  block.body = &call_body<Body>;
  block.body_arg = &body;
  for (unsigned z = 0; z < gridDim.z; ++z) {
    for (unsigned y = 0; y < gridDim.y; ++y) {
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = uint3{x, y, z};
        ++stats.blocks;
        run_block();
      }
    }
  }
  threadIdx = uint3{0, 0, 0};
}

// The source lane of lane `lane` for each shuffle kind, or -1 for "keep your own value".
template <typename T>
T shuffle(unsigned mask, T v, int (*source)(int lane, int arg, int width), int arg, int width) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
  if (mask != 0xffffffffu) fail("__shfl_*_sync with a partial mask is not emulated");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) fail("__shfl_*_sync width must be a power of 2 <= 32");
  Fiber& f = *block.current;
  const unsigned warp = f.linear / 32;
  if (32 * warp + 32 > block.n) fail("__shfl_*_sync with a full mask in a partial warp");
  ++stats.warp_collectives;
  std::memcpy(&block.slots[f.linear], &v, sizeof(T));
  arrive_and_wait(block.warp_barriers[warp], 32);  // every lane has written its value
  const int src = source(static_cast<int>(f.linear % 32), arg, width);
  T out = v;
  if (src >= 0) std::memcpy(&out, &block.slots[32 * warp + static_cast<unsigned>(src)], sizeof(T));
  arrive_and_wait(block.warp_barriers[warp], 32);  // every lane has read before the slots change
  return out;
}

inline int src_down(int lane, int delta, int width) { return (lane % width) + delta < width ? lane + delta : -1; }
inline int src_up(int lane, int delta, int width) { return (lane % width) >= delta ? lane - delta : -1; }
inline int src_xor(int lane, int m, int width) { return ((lane ^ m) / width == lane / width) ? (lane ^ m) : -1; }
inline int src_idx(int lane, int s, int width) { return (lane / width) * width + ((s % width) + width) % width; }

}  // namespace emu

// ---------------------------------------------------------------- device builtins
inline void __syncthreads() { emu::arrive_and_wait(emu::block.block_barrier, emu::block.n); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)emu::shuffle<int>(mask, 0, emu::src_idx, 0, 32); }
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::shuffle(mask, v, emu::src_down, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::shuffle(mask, v, emu::src_up, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return emu::shuffle(mask, v, emu::src_xor, lane_mask, width);
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return emu::shuffle(mask, v, emu::src_idx, src_lane, width);
}
template <typename T>
T atomicAdd(T* address, T v) {
  return std::atomic_ref<T>(*address).fetch_add(v);
}
template <typename T>
T atomicOr(T* address, T v) {
  return std::atomic_ref<T>(*address).fetch_or(v);
}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---------------------------------------------------------------- runtime API
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  if (attr == cudaDevAttrMultiProcessorCount) *value = emu::config.sms;
  else if (attr == cudaDevAttrMaxThreadsPerBlock) *value = 1024;
  else return cudaErrorInvalidValue;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return emu::last_error; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorInvalidConfiguration ? "invalid configuration" : "invalid value";
}
