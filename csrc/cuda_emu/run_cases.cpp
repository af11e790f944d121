// cuda-emu driver: runs the real CUDA kernels of csrc/cuda (compiled for the host through
// cuda_emu.h) through their own host-side launchers on the contract cases, and compares every
// output with an independent scalar reference in double: every dtype (fp32, fp64, fp16, bf16),
// odd sizes and tails, rows not a multiple of the 4-element vector width, misaligned and offset
// pointers (the scalar and the vectorized paths), grids capped to force the grid-stride loops.
// The samples come from the CPU headers' scalar functions of the Philox contract
// (mibcore/philox.h: normal_at, dropout_scale_at), not from the CUDA code under test.
// Outputs start as a sentinel and are surrounded by guard elements (or end exactly where ASan's
// redzone begins), so a missed or stray write is a mismatch or a sanitizer report.
// Usage: run_cases [--jobs N] [--verbose]; exit status 1 on any mismatch.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dropout_kernels.h"
#include "harness.h"
#include "mibcore/philox.h"
#include "reparameterize_kl_kernels.h"
#include "tensor_fusion_kernels.h"

namespace {

// ---------------------------------------------------------------- dropout operators
const char* op_name(mibcore::cuda::DropoutOp op) {
  static const char* names[] = {"dropout", "dropout_add", "relu_dropout", "relu_dropout_backward"};
  return names[static_cast<int>(op)];
}

template <typename T>
void dropout_case(Check& c, mibcore::cuda::DropoutOp op, int64_t numel, double p, const Layout& l) {
  using mibcore::cuda::DropoutOp;
  configure(l);
  Rng r{static_cast<uint64_t>(numel) * 31 + static_cast<uint64_t>(op)};
  Buffer<T> a(numel, l.pre, l.post), b(numel, l.pre, l.post), y(numel, l.pre_out, l.post);
  fill(a, r, -3, 3);
  fill(b, r, -3, 3);
  const double specials[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0};
  for (int k = 0; k < 5; ++k) {
    if (static_cast<int64_t>(5 * k + 2) < numel) b.data[5 * k + 2] = Store<T>::put(specials[k]);
  }
  const float keep_prob = static_cast<float>(1.0 - p);
  const float inv_f = static_cast<float>(1.0 / (1.0 - p));
  const double inv_d = 1.0 / (1.0 - p);
  int64_t* rng = static_cast<int64_t*>(std::malloc(sizeof kRng));
  std::memcpy(rng, kRng, sizeof kRng);
  const bool uses_a = op == DropoutOp::kAdd || op == DropoutOp::kReluBackward;
  mibcore::cuda::DropoutArgs args{op, uses_a ? a.data : nullptr, b.data, y.data, rng, numel, keep_prob, inv_f, inv_d,
                                  Store<T>::dtype};
  c.status("dropout_launch", mibcore::cuda::dropout_launch(args, nullptr));
  const double inv = Store<T>::dtype == DType::kFloat64 ? inv_d : static_cast<double>(inv_f);
  for (int64_t i = 0; i < numel; ++i) {
    const double av = a.get(i), bv = b.get(i);
    double s;
    if (op == DropoutOp::kReluBackward) {
      s = av > 0 ? inv : 0.0;
    } else {  // the keep decision of the Philox contract, from the CPU header's scalar function
      s = mibcore::dropout_scale_at(static_cast<uint64_t>(i), seed(), offset(), keep_prob, inv_f) != 0.0f ? inv : 0.0;
    }
    const double v = op == DropoutOp::kRelu ? (bv < 0 ? 0.0 : bv) : bv;  // relu(NaN) = NaN
    const double residual = op == DropoutOp::kAdd ? av : 0.0;
    const double want = v * s + residual;
    c.near("y", i, y.get(i), want, tolerance<T>(want, std::fabs(v * s) + std::fabs(residual), 2));
  }
  c.guards("y", y);
  std::free(rng);
}

// ---------------------------------------------------------------- reparameterize_kl
// std, log std and their derivatives in double, from the formulas (not from math.h).
struct Terms {
  double std, log_std, dstd, dlog_std;
};
Terms exact_terms(int64_t P, double scale, double shift) {
  if (P == mibcore::kSoftplus) {
    const double x = scale + shift;
    const double sp = x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
    const double sig = 1.0 / (1.0 + std::exp(-x));
    const bool underflow = x < -700;  // log softplus(x) = x + O(e^x)
    return Terms{sp, underflow ? x : std::log(sp), sig, underflow ? 1.0 : sig / sp};
  }
  if (P == mibcore::kLogVar) {
    const double s = std::exp(0.5 * scale);
    return Terms{s, 0.5 * scale, 0.5 * s, 0.5};
  }
  return Terms{scale, std::log(scale), 1.0, 1.0 / scale};
}

template <typename T>
void reparameterize_kl_case(Check& c, int64_t P, bool sample, int64_t rows, int64_t cols, const Layout& l) {
  using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  configure(l);
  const int64_t numel = rows * cols;
  Rng r{static_cast<uint64_t>(numel * 7 + P * 3 + sample)};
  Buffer<T> mu(numel, l.pre, l.post), scale(numel, l.pre, l.post), z(numel, l.pre_out, l.post);
  Buffer<T> gz(numel, l.pre, l.post), gmu(numel, l.pre_out, l.post), gscale(numel, l.pre_out, l.post);
  Buffer<acc_t> kl(rows, 0, 0), gkl(rows, 0, 0);
  fill(mu, r, -2, 2);
  fill(gz, r, -1, 1);
  fill(gkl, r, -1, 1);
  if (P == mibcore::kSoftplus) fill(scale, r, -3, 8);  // x = scale - 5 in [-8, 3]
  else if (P == mibcore::kLogVar) fill(scale, r, -4, 4);
  else fill(scale, r, 0.1, 2);
  if (P == mibcore::kSoftplus && numel > 3) scale.data[1] = Store<T>::put(-30);  // std underflows: log std = x
  const double shift = -5.0;
  int64_t* rng = static_cast<int64_t*>(std::malloc(sizeof kRng));
  std::memcpy(rng, kRng, sizeof kRng);
  const mibcore::cuda::ReparamArgs args{mu.data, scale.data, rng, rows, cols, P, shift, sample, Store<T>::dtype};
  c.status("reparameterize_kl_forward", mibcore::cuda::reparameterize_kl_forward(args, z.data, kl.data, nullptr));
  c.status("reparameterize_kl_backward", mibcore::cuda::reparameterize_kl_backward(args, gz.data, gkl.data, gmu.data,
                                                                                    gscale.data, nullptr));
  const double u = Store<T>::acc_unit;
  for (int64_t row = 0; row < rows; ++row) {
    double kl_sum = 0, kl_mag = 0;
    const double gk = Store<acc_t>::get(gkl.data[row]);
    for (int64_t col = 0; col < cols; ++col) {
      const int64_t i = row * cols + col;
      const double m = mu.get(i), s = scale.get(i), g = gz.get(i);
      const Terms t = exact_terms(P, s, shift);
      // eps of element i from the CPU header's scalar Philox mapping (normal_at)
      const double eps = sample ? mibcore::normal_at(static_cast<uint64_t>(i), seed(), offset()) : 0.0;
      if (sample) {
        const double want = m + t.std * eps;
        c.near("z", i, z.get(i), want, tolerance<T>(want, std::fabs(m) + 8 * std::fabs(t.std * eps), 4));
      } else {
        c.near("z", i, z.get(i), m, 0.0);  // z = mu exactly
      }
      kl_sum += 0.5 * (m * m + t.std * t.std - 2 * t.log_std - 1);
      kl_mag += 0.5 * (m * m + t.std * t.std + 2 * std::fabs(t.log_std) + 1);
      const double want_gm = g + gk * m;
      c.near("grad_mu", i, gmu.get(i), want_gm, tolerance<T>(want_gm, std::fabs(g) + std::fabs(gk * m), 3));
      const double kl_ds = t.std * t.dstd - t.dlog_std;
      const double want_gs = g * eps * t.dstd + gk * kl_ds;
      const double mag_gs = 8 * (std::fabs(g * eps * t.dstd) + std::fabs(gk) * (std::fabs(t.std * t.dstd) +
                                                                                 std::fabs(t.dlog_std)));
      c.near("grad_scale", i, gscale.get(i), want_gs, tolerance<T>(want_gs, mag_gs, 4));
    }
    // each element's KL is a few ulps of its terms; the row sum adds cols roundings at most
    const double tol = (8 + static_cast<double>(cols)) * u * kl_mag + Store<acc_t>::tiny;
    c.near("kl_rows", row, Store<acc_t>::get(kl.data[row]), kl_sum, tol);
  }
  for (auto* b : {&z, &gmu, &gscale}) c.guards("z/grad_mu/grad_scale", *b);
  std::free(rng);
}

// ---------------------------------------------------------------- tensor_fusion
template <typename T>
void tensor_fusion_case(Check& c, int64_t B, std::vector<int64_t> dims, int64_t out, double p, bool with_bias,
                        const Layout& l) {
  using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  configure(l);
  const int64_t I = dims[0] + 1, J = dims.size() == 3 ? dims[1] + 1 : 1, K = dims.back() + 1, N = I * J * K;
  Rng r{static_cast<uint64_t>(B * 131 + N * 7 + out)};
  // The padded factors [1; x] in the accumulation type, as the torch glue makes them.
  Buffer<acc_t> A(B * I, 0, 0), V(B * J, 0, 0), Tf(B * K, 0, 0);
  for (auto [buf, d] : {std::pair{&A, I}, std::pair{&V, J}, std::pair{&Tf, K}}) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t k = 0; k < d; ++k) buf->data[b * d + k] = k == 0 ? acc_t(1) : static_cast<acc_t>(r.uniform(-1, 1));
    }
  }
  Buffer<T> W(out * N, l.pre, l.post), bias(out, l.pre, l.post), dy(B * out, l.pre, l.post);
  Buffer<T> y(B * out, l.pre_out, l.post), dW(out * N, l.pre_out, l.post);
  Buffer<acc_t> dA(B * I, 0, 0), dV(B * J, 0, 0), dT(B * K, 0, 0);
  fill(W, r, -0.5, 0.5);
  fill(bias, r, -1, 1);
  fill(dy, r, -1, 1);
  for (auto* g : {&dA, &dV, &dT}) std::fill(g->data, g->data + g->n, acc_t(0));  // the caller zeroes them
  int64_t* rng = static_cast<int64_t*>(std::malloc(sizeof kRng));
  std::memcpy(rng, kRng, sizeof kRng);
  const float keep_prob = static_cast<float>(1.0 - p), inv_f = static_cast<float>(1.0 / (1.0 - p));
  const double inv_d = 1.0 / (1.0 - p);
  const mibcore::cuda::FusionArgs args{A.data, V.data, Tf.data, B, I, J, K, out, W.data, Store<T>::dtype, rng,
                                       p > 0, keep_prob, inv_f, inv_d};
  int64_t workspace_bytes = -1;
  c.status("tensor_fusion_forward_workspace", mibcore::cuda::tensor_fusion_forward_workspace(args, &workspace_bytes));
  void* workspace = workspace_bytes > 0 ? std::malloc(static_cast<size_t>(workspace_bytes)) : nullptr;
  c.status("tensor_fusion_forward",
           mibcore::cuda::tensor_fusion_forward(args, with_bias ? bias.data : nullptr, y.data, workspace, nullptr));
  std::free(workspace);
  c.status("tensor_fusion_backward",
           mibcore::cuda::tensor_fusion_backward(args, dy.data, dW.data, dA.data, dV.data, dT.data, nullptr));
  // Z[b, n] in double, its dropout scale from the CPU header's scalar mapping (dropout_scale_at).
  const double inv = Store<T>::dtype == DType::kFloat64 ? inv_d : static_cast<double>(inv_f);
  std::vector<double> Z(B * N), S(B * N);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t n = 0; n < N; ++n) {
      const int64_t k = n % K, j = (n / K) % J, i = n / (J * K);
      S[b * N + n] = p > 0 && mibcore::dropout_scale_at(static_cast<uint64_t>(b * N + n), seed(), offset(), keep_prob,
                                                        inv_f) == 0.0f ? 0.0 : (p > 0 ? inv : 1.0);
      Z[b * N + n] = static_cast<double>(A.data[b * I + i]) * V.data[b * J + j] * Tf.data[b * K + k] * S[b * N + n];
    }
  }
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t o = 0; o < out; ++o) {
      double want = with_bias ? bias.get(o) : 0.0, mag = std::fabs(want);
      for (int64_t n = 0; n < N; ++n) {
        want += Z[b * N + n] * W.get(o * N + n);
        mag += std::fabs(Z[b * N + n] * W.get(o * N + n));
      }
      // fp16/bf16 multiply Z rounded to T on tensor cores (as the reference's outer product in T is)
      const double rounded_z = sizeof(T) == 2 ? Store<T>::unit * mag : 0.0;
      c.near("y", b * out + o, y.get(b * out + o), want,
             tolerance<T>(want, mag, static_cast<double>(N) + 4) + rounded_z);
    }
  }
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t n = 0; n < N; ++n) {
      double want = 0, mag = 0;
      for (int64_t b = 0; b < B; ++b) {
        want += dy.get(b * out + o) * Z[b * N + n];
        mag += std::fabs(dy.get(b * out + o) * Z[b * N + n]);
      }
      c.near("grad_weight", o * N + n, dW.get(o * N + n), want, tolerance<T>(want, mag, static_cast<double>(B) + 4));
    }
  }
  // dZ[b, n] = sum_o dy W * scale, then each factor's gradient sums dZ times the other two.
  std::vector<double> gA(B * I, 0), gV(B * J, 0), gT(B * K, 0), mA(B * I, 0), mV(B * J, 0), mT(B * K, 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t n = 0; n < N; ++n) {
      double dz = 0, dz_mag = 0;
      for (int64_t o = 0; o < out; ++o) {
        dz += dy.get(b * out + o) * W.get(o * N + n);
        dz_mag += std::fabs(dy.get(b * out + o) * W.get(o * N + n));
      }
      dz *= S[b * N + n];
      dz_mag *= S[b * N + n];
      const int64_t k = n % K, j = (n / K) % J, i = n / (J * K);
      const double a = A.data[b * I + i], v = V.data[b * J + j], t = Tf.data[b * K + k];
      gA[b * I + i] += dz * v * t, mA[b * I + i] += dz_mag * std::fabs(v * t);
      gV[b * J + j] += dz * a * t, mV[b * J + j] += dz_mag * std::fabs(a * t);
      gT[b * K + k] += dz * a * v, mT[b * K + k] += dz_mag * std::fabs(a * v);
    }
  }
  const double depth = static_cast<double>(out + N) + 4;  // the dot over out, then the atomics over n
  for (int64_t e = 0; e < B * I; ++e) c.near("dA", e, dA.data[e], gA[e], tolerance<acc_t>(gA[e], mA[e], depth));
  for (int64_t e = 0; e < B * J; ++e) c.near("dV", e, dV.data[e], gV[e], tolerance<acc_t>(gV[e], mV[e], depth));
  for (int64_t e = 0; e < B * K; ++e) c.near("dT", e, dT.data[e], gT[e], tolerance<acc_t>(gT[e], mT[e], depth));
  c.guards("y", y);
  c.guards("grad_weight", dW);
  std::free(rng);
}

// keep_bits (one Philox block's 4 keep decisions as integer compares, used by the CUDA forward)
// against the contract's float compare, uniform_from_bits(r) <= keep_prob: every 24-bit value
// near the threshold and a stride through the rest, for probabilities with and without a
// fractional keep_prob * 2^24.
void keep_bits_case(Check& c) {
  for (const double p : {0.0, 0.1, 0.3, 0.5, 0.9, 1e-7, 0.999999}) {
    const float keep_prob = static_cast<float>(1.0 - p);
    const uint32_t t = mibcore::keep_threshold(keep_prob);
    auto check = [&](uint32_t v) {
      for (uint32_t low : {0u, 0xffu}) {
        const uint32_t r = (v << 8) | low;
        const bool want = mibcore::uniform_from_bits(r) <= keep_prob;
        const uint32_t bits = mibcore::keep_bits(mibcore::Philox4{r, ~r, r, r}, t);
        c.near("keep_bits", v, (bits & 1u) != 0 && ((bits >> 2) & 1u) != 0, want, 0.0);
      }
    };
    for (uint32_t v = 0; v < (1u << 24); v += 997) check(v);
    for (int64_t v = static_cast<int64_t>(t) - 3; v <= static_cast<int64_t>(t) + 3; ++v) {
      if (v >= 0 && v < (1 << 24)) check(static_cast<uint32_t>(v));
    }
  }
}

// ---------------------------------------------------------------- the cases
struct Case {
  std::string name;
  std::function<void(Check&)> run;
};

template <typename T>
void add_cases(std::vector<Case>& cases) {
  using mibcore::cuda::DropoutOp;
  const std::string dt = Store<T>::name;
  // Layouts: exact allocations on the vectorized path; a misaligned input (scalar path); offset
  // but aligned pointers with guards; mixed (aligned inputs, misaligned outputs).
  const Layout aligned{};
  const Layout misaligned{132, 0, 1, 3, 1, "misaligned"};
  const Layout offset_stride{1, 2, 4, 4, 4, "offset, 2 blocks"};
  const Layout mixed_one_block{1, 1, 0, 2, 1, "mixed alignment, 1 block"};
  auto add = [&](std::string name, std::function<void(Check&)> run) { cases.push_back({name + " " + dt, run}); };
  for (DropoutOp op : {DropoutOp::kDropout, DropoutOp::kAdd, DropoutOp::kRelu, DropoutOp::kReluBackward}) {
    const std::string n = op_name(op);
    add(n + " 1003 p=0.3 aligned", [=](Check& c) { dropout_case<T>(c, op, 1003, 0.3, aligned); });
    add(n + " 257 p=0.5 misaligned", [=](Check& c) { dropout_case<T>(c, op, 257, 0.5, misaligned); });
    add(n + " 3077 p=0.9 offset 2 blocks", [=](Check& c) { dropout_case<T>(c, op, 3077, 0.9, offset_stride); });
    add(n + " 7 p=0 mixed", [=](Check& c) { dropout_case<T>(c, op, 7, 0.0, mixed_one_block); });
    add(n + " 1 p=0.5 misaligned", [=](Check& c) { dropout_case<T>(c, op, 1, 0.5, misaligned); });
    add(n + " 4 p=0.5 aligned", [=](Check& c) { dropout_case<T>(c, op, 4, 0.5, aligned); });
  }
  // grid_for's own grid on a 1-SM device (32 blocks of 256 threads) over more blocks than that
  add("dropout 40003 p=0.15 sms=1", [](Check& c) {
    dropout_case<T>(c, DropoutOp::kDropout, 40003, 0.15, Layout{1, 0, 0, 0, 0, "sms=1"});
  });
  for (int64_t P : {mibcore::kSoftplus, mibcore::kLogVar, mibcore::kStd}) {
    const std::string n = "reparameterize_kl P=" + std::to_string(P);
    add(n + " 3x7 aligned", [=](Check& c) { reparameterize_kl_case<T>(c, P, true, 3, 7, aligned); });
    add(n + " 2x257 misaligned", [=](Check& c) { reparameterize_kl_case<T>(c, P, true, 2, 257, misaligned); });
    add(n + " 1x1", [=](Check& c) { reparameterize_kl_case<T>(c, P, true, 1, 1, aligned); });
    add(n + " 33x65 offset 2 blocks", [=](Check& c) { reparameterize_kl_case<T>(c, P, true, 33, 65, offset_stride); });
    add(n + " 5x12 sample=false mixed", [=](Check& c) {
      reparameterize_kl_case<T>(c, P, false, 5, 12, mixed_one_block);
    });
    add(n + " 6x4 aligned", [=](Check& c) { reparameterize_kl_case<T>(c, P, true, 6, 4, aligned); });
    add(n + " 70x1 misaligned", [=](Check& c) { reparameterize_kl_case<T>(c, P, true, 70, 1, misaligned); });
  }
  add("reparameterize_kl 4x0", [=](Check& c) { reparameterize_kl_case<T>(c, mibcore::kSoftplus, true, 4, 0, aligned); });
  // grid_for's own grid on a 1-SM device (16 blocks of 8 warps) over 300 rows
  add("reparameterize_kl 300x8 sms=1", [](Check& c) {
    reparameterize_kl_case<T>(c, mibcore::kSoftplus, true, 300, 8, Layout{1, 0, 0, 0, 0, "sms=1"});
  });
  add("tensor_fusion 33x(3,4,5)->17 p=0.4 bias", [](Check& c) {
    tensor_fusion_case<T>(c, 33, {3, 4, 5}, 17, 0.4, true, Layout{});
  });
  add("tensor_fusion 5x(6,2)->3 misaligned 1 block", [](Check& c) {
    tensor_fusion_case<T>(c, 5, {6, 2}, 3, 0.0, false, Layout{132, 1, 1, 3, 1, "misaligned, 1 block"});
  });
  add("tensor_fusion 17x(16,1)->33 aligned", [](Check& c) {
    tensor_fusion_case<T>(c, 17, {16, 1}, 33, 0.25, false, Layout{});
  });
  add("tensor_fusion 16x(3,3)->16 2 blocks", [](Check& c) {
    tensor_fusion_case<T>(c, 16, {3, 3}, 16, 0.0, true, Layout{132, 2, 0, 0, 0, "2 blocks"});
  });
  add("tensor_fusion 0x(2,2,2)->5 empty batch", [](Check& c) {
    tensor_fusion_case<T>(c, 0, {2, 2, 2}, 5, 0.3, true, Layout{});
  });
  add("tensor_fusion 1x(1,1)->1 bias", [](Check& c) { tensor_fusion_case<T>(c, 1, {1, 1}, 1, 0.0, true, Layout{}); });
  // split contractions (the plan's splits and the in-order reduction), wide outputs (3 column
  // tiles), keep-bit spans (one split over 2,416 columns on a 1-SM device)
  add("tensor_fusion 33x(7,1,50)->9 p=0.5 splits", [](Check& c) {
    tensor_fusion_case<T>(c, 33, {7, 1, 50}, 9, 0.5, true, Layout{});
  });
  add("tensor_fusion 9x(5,4,3)->130 p=0.3 misaligned", [](Check& c) {
    tensor_fusion_case<T>(c, 9, {5, 4, 3}, 130, 0.3, true, Layout{132, 0, 1, 3, 1, "misaligned"});
  });
  add("tensor_fusion 33x(7,1,150)->9 p=0.5 sms=1 spans", [](Check& c) {
    tensor_fusion_case<T>(c, 33, {7, 1, 150}, 9, 0.5, false, Layout{1, 0, 0, 0, 0, "sms=1"});
  });
  add("tensor_fusion 5x(6,1,210)->3 p=0.5 sms=4 partial slabs", [](Check& c) {  // 8 splits of 370 columns
    tensor_fusion_case<T>(c, 5, {6, 1, 210}, 3, 0.5, true, Layout{4, 0, 0, 0, 0, "sms=4"});
  });
  add("tensor_fusion 3x(2,300)->5 splits 2 blocks", [](Check& c) {
    tensor_fusion_case<T>(c, 3, {2, 300}, 5, 0.25, true, Layout{132, 2, 0, 0, 0, "2 blocks"});
  });
  add("tensor_fusion 40x(2,3,2)->20 p=0.5 1 block", [](Check& c) {
    tensor_fusion_case<T>(c, 40, {2, 3, 2}, 20, 0.5, true, Layout{132, 1, 4, 4, 4, "offset, 1 block"});
  });
}

}  // namespace

int main(int argc, char** argv) {
  int jobs = 2;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) jobs = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--verbose") == 0) verbose = true;
    else {
      std::fprintf(stderr, "usage: %s [--jobs N] [--verbose]\n", argv[0]);
      return 2;
    }
  }
  std::vector<Case> cases;
  cases.push_back({"keep_bits", keep_bits_case});
  add_cases<float>(cases);
  add_cases<double>(cases);
  add_cases<__half>(cases);
  add_cases<__nv_bfloat16>(cases);
  // Worker processes take cases from a shared counter and add up their results there.
  struct Shared {
    std::atomic<long> next, cases, compared, mismatches, launches, blocks, threads, barriers, warp_collectives;
  };
  auto* shared = static_cast<Shared*>(
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (shared == MAP_FAILED) return 2;
  new (shared) Shared{};
  std::fflush(stdout);
  std::vector<pid_t> workers;
  for (int w = 0; w < jobs; ++w) {
    const pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid > 0) {
      workers.push_back(pid);
      continue;
    }
    for (long k; (k = shared->next.fetch_add(1)) < static_cast<long>(cases.size());) {
      Check c(cases[k].name);
      cases[k].run(c);
      shared->cases += 1;
      shared->compared += c.compared;
      shared->mismatches += c.mismatches;
      if (verbose || c.mismatches) {
        std::printf("%-4s %s (%ld values)\n", c.mismatches ? "FAIL" : "ok", c.name.c_str(), c.compared);
      }
      std::fflush(stdout);
    }
    shared->launches += emu::stats.launches;
    shared->blocks += emu::stats.blocks;
    shared->threads += emu::stats.threads;
    shared->barriers += emu::stats.barriers;
    shared->warp_collectives += emu::stats.warp_collectives;
    std::fflush(stdout);
    std::exit(0);  // LeakSanitizer checks each worker too
  }
  int crashed = 0;
  for (pid_t pid : workers) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++crashed;
  }
  const bool ok = crashed == 0 && shared->mismatches == 0 && shared->cases == static_cast<long>(cases.size());
  std::printf("cuda-emu: %ld launches (%ld blocks, %ld threads, %ld barrier arrivals, %ld warp shuffles), "
              "%ld of %zu cases, %ld values compared, %ld mismatches%s: %s\n",
              shared->launches.load(), shared->blocks.load(), shared->threads.load(), shared->barriers.load(),
              shared->warp_collectives.load(), shared->cases.load(), cases.size(), shared->compared.load(),
              shared->mismatches.load(), crashed ? ", a worker died (sanitizer report or crash above)" : "",
              ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
