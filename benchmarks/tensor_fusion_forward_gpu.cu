// The CUDA forward of tensor_fusion on a real GPU, without torch: correctness against a float64
// CPU reference (masks from philox.h's dropout_scale_at, the contract's scalar function) and the
// median time of the forward (both launches) per dtype at the paper's and the benchmarks' shapes.
// For a lent GPU machine:
//   python mibcore/_math_tables.py /tmp/gen && nvcc -O3 -std=c++20 --expt-relaxed-constexpr -arch=sm_90 \
//     -I csrc/include -I csrc/cuda -I /tmp/gen benchmarks/tensor_fusion_forward_gpu.cu -o /tmp/tf && /tmp/tf
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "../csrc/cuda/tensor_fusion_kernels.cu"

namespace {

using mibcore::cuda::DType;

template <typename T> struct Host;
template <> struct Host<float> {
  static constexpr DType dtype = DType::kFloat32;
  static constexpr const char* name = "fp32";
  static constexpr double unit = 0x1p-24, acc_unit = 0x1p-24;
  static float put(double v) { return static_cast<float>(v); }
  static double get(float v) { return v; }
};
template <> struct Host<double> {
  static constexpr DType dtype = DType::kFloat64;
  static constexpr const char* name = "fp64";
  static constexpr double unit = 0x1p-53, acc_unit = 0x1p-53;
  static double put(double v) { return v; }
  static double get(double v) { return v; }
};
template <> struct Host<__half> {
  static constexpr DType dtype = DType::kFloat16;
  static constexpr const char* name = "fp16";
  static constexpr double unit = 0x1p-11, acc_unit = 0x1p-24;
  static __half put(double v) { return __double2half(v); }
  static double get(__half v) { return __half2float(v); }
};
template <> struct Host<__nv_bfloat16> {
  static constexpr DType dtype = DType::kBFloat16;
  static constexpr const char* name = "bf16";
  static constexpr double unit = 0x1p-8, acc_unit = 0x1p-24;
  static __nv_bfloat16 put(double v) { return __double2bfloat16(v); }
  static double get(__nv_bfloat16 v) { return __bfloat162float(v); }
};

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

template <typename T>
int run(int64_t B, std::vector<int64_t> dims, int64_t out, double p, int reps) {
  using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const int64_t I = dims[0] + 1, J = dims.size() == 3 ? dims[1] + 1 : 1, K = dims.back() + 1, N = I * J * K;
  std::mt19937_64 gen(B * 7 + N);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<acc_t> A(B * I), V(B * J), Tf(B * K);
  for (auto* v : {&A, &V, &Tf}) {
    const int64_t d = v->size() / B;
    for (int64_t e = 0; e < B * d; ++e) (*v)[e] = e % d == 0 ? acc_t(1) : static_cast<acc_t>(u(gen));
  }
  std::vector<T> W(out * N), bias(out), y(B * out);
  const double w_scale = 1.0 / std::sqrt(static_cast<double>(N));
  for (auto& w : W) w = Host<T>::put(u(gen) * w_scale);
  for (auto& b : bias) b = Host<T>::put(u(gen));
  const int64_t rng_host[2] = {0x1234abcd5678ef01ll, 0x0000000300000007ll};
  const float keep = static_cast<float>(1.0 - p), inv_f = static_cast<float>(1.0 / (1.0 - p));
  const double inv_d = 1.0 / (1.0 - p);

  acc_t *dA, *dV, *dT;
  T *dW, *dbias, *dy;
  int64_t* drng;
  CHECK(cudaMalloc(&dA, A.size() * sizeof(acc_t)));
  CHECK(cudaMalloc(&dV, V.size() * sizeof(acc_t)));
  CHECK(cudaMalloc(&dT, Tf.size() * sizeof(acc_t)));
  CHECK(cudaMalloc(&dW, W.size() * sizeof(T)));
  CHECK(cudaMalloc(&dbias, bias.size() * sizeof(T)));
  CHECK(cudaMalloc(&dy, y.size() * sizeof(T)));
  CHECK(cudaMalloc(&drng, sizeof rng_host));
  CHECK(cudaMemcpy(dA, A.data(), A.size() * sizeof(acc_t), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dV, V.data(), V.size() * sizeof(acc_t), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dT, Tf.data(), Tf.size() * sizeof(acc_t), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dW, W.data(), W.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dbias, bias.data(), bias.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(drng, rng_host, sizeof rng_host, cudaMemcpyHostToDevice));
  const mibcore::cuda::FusionArgs args{dA, dV, dT, B, I, J, K, out, dW, Host<T>::dtype, drng, p > 0, keep, inv_f, inv_d};
  int64_t ws_bytes = 0;
  CHECK(mibcore::cuda::tensor_fusion_forward_workspace(args, &ws_bytes));
  void* ws = nullptr;
  if (ws_bytes > 0) CHECK(cudaMalloc(&ws, ws_bytes));
  CHECK(mibcore::cuda::tensor_fusion_forward(args, dbias, dy, ws, nullptr));
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(y.data(), dy, y.size() * sizeof(T), cudaMemcpyDeviceToHost));

  // the float64 reference (the tolerance of run_cases.cpp: depth roundings of the accumulation,
  // the output's rounding, and for fp16/bf16 Z rounded to T)
  const double inv = Host<T>::dtype == DType::kFloat64 ? inv_d : static_cast<double>(inv_f);
  double worst = 0;
  int64_t bad = 0;
  std::vector<double> z(N);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t n = 0; n < N; ++n) {
      const int64_t k = n % K, j = (n / K) % J, i = n / (J * K);
      double s = 1.0;
      if (p > 0) {
        s = mibcore::dropout_scale_at(static_cast<uint64_t>(b * N + n), static_cast<uint64_t>(rng_host[0]),
                                      static_cast<uint64_t>(rng_host[1]), keep, inv_f) == 0.0f ? 0.0 : inv;
      }
      z[n] = static_cast<double>(A[b * I + i]) * V[b * J + j] * Tf[b * K + k] * s;
    }
    for (int64_t o = 0; o < out; ++o) {
      double want = Host<T>::get(bias[o]), mag = std::fabs(want);
      for (int64_t n = 0; n < N; ++n) {
        const double t = z[n] * Host<T>::get(W[o * N + n]);
        want += t;
        mag += std::fabs(t);
      }
      const double tol = (N + 4) * Host<T>::acc_unit * mag + Host<T>::unit * std::fabs(want) +
                         (sizeof(T) == 2 ? Host<T>::unit * mag : 0.0) + 1e-30;
      const double err = std::fabs(Host<T>::get(y[b * out + o]) - want) / tol;
      worst = std::max(worst, std::isfinite(err) ? err : 1e30);
      bad += !(err <= 1.0);
    }
  }

  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    CHECK(cudaEventRecord(start));
    CHECK(mibcore::cuda::tensor_fusion_forward(args, dbias, dy, ws, nullptr));
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  mibcore::FusionPlan plan{};
  int sms = 0;
  CHECK(mibcore::cuda::sm_count(&sms));
  plan = mibcore::fusion_plan(B, out, N, sms, sizeof(T) == 2 ? mibcore::kFusionMmaTile : mibcore::kFusionFmaTile);
  const double floor_us = static_cast<double>(out * N * sizeof(T)) / 4.3e12 * 1e6;  // the weight at 4.3 TB/s
  std::printf("%s B%lld (%lld", Host<T>::name, (long long)B, (long long)dims[0]);
  for (size_t d = 1; d < dims.size(); ++d) std::printf(",%lld", (long long)dims[d]);
  std::printf(")->%lld p=%.1f: blocks %lld (splits %lld), worst error %.3f of the tolerance, %lld outside: %s; "
              "median %.1f us (min %.1f) over %d runs, weight-read floor %.1f us\n",
              (long long)out, p, (long long)plan.blocks, (long long)plan.splits, worst, (long long)bad,
              bad ? "FAIL" : "ok", ms[ms.size() / 2] * 1e3, ms[0] * 1e3, reps, floor_us);
  for (void* ptr : {static_cast<void*>(dA), static_cast<void*>(dV), static_cast<void*>(dT), static_cast<void*>(dW),
                    static_cast<void*>(dbias), static_cast<void*>(dy), static_cast<void*>(drng), ws}) {
    cudaFree(ptr);
  }
  return bad ? 1 : 0;
}

template <typename T>
int run_all() {
  int failures = 0;
  failures += run<T>(32, {50, 50, 50}, 50, 0.5, 50);  // the paper's TFN head
  failures += run<T>(32, {50, 50, 50}, 50, 0.0, 50);
  failures += run<T>(33, {7, 1, 50}, 9, 0.5, 5);
  failures += run<T>(3, {2, 300}, 5, 0.25, 5);
  failures += run<T>(64, {64, 64, 64}, 128, 0.0, 20);
  failures += run<T>(256, {32, 32, 32}, 64, 0.5, 20);
  return failures;
}

}  // namespace

int main() {
  int failures = run_all<float>() + run_all<double>() + run_all<__half>() + run_all<__nv_bfloat16>();
  std::printf("tensor_fusion forward on the GPU: %s (%d failing cases)\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
