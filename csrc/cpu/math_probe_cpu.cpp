// Test-only entry point: the shared per-element math (csrc/include/mibcore/math.h, philox.h) and
// its explicit SIMD versions (reparameterize_kl_simd.h, philox_cpu.h) evaluated on given inputs,
// so that tests/test_math_mirror.py can compare C++ (scalar, and vector at each instruction-set
// level), Triton (mibcore/kernels/_math.py) and a float64 oracle function by function. Not part of the
// public API; it is in the extension (not a separate test binary) because the extension is
// already built once per level with run-time dispatch, so one build serves every level and the
// Python test needs no compiler.
//
//   torch.ops.mibcore.math_probe(name, impl, x) -> Tensor
//   name: a function of math.h / philox.h; impl: "scalar" (the MIB_HD function) or "vector"
//   (the Simd version, at the AVX2 and AVX-512 levels only); level: mibcore.cpu_isa's current.
//   x: [inputs, n], one row per argument; the result is [outputs, n].
//     fast_exp, fast_log, log1p_unit   float32 or float64 (scalar) [1, n] -> [1, n]
//     std_terms_{softplus,logvar,std}  (scale, shift) float32/64 -> (std, log_std, dstd, dlog_std)
//                                      (vector: one shift for all n)
//     kl_element                       (mu, std, log_std) -> [1, n]
//     kl_element_dscale                (std, dstd, dlog_std) -> [1, n]
//     pow2i                            int64 n -> float32 (scalar only)
//     uniform_from_bits                int64 words -> float32
//     sincos_turns                     float32 t -> (sin, cos) (scalar only)
//     box_muller                       int64 (ra, rb) -> float32 (a, b)
//     philox_block                     int64 (block, seed, offset) -> int64 (r0, r1, r2, r3)
//     normal_block                     int64 (block, seed, offset) -> float32 (n0, n1, n2, n3)
//     dropout_scale_at                 int64 (index, seed, offset, bits of float keep_prob,
//                                      bits of float inv_keep) -> float32 (scalar only)
#ifndef MIBCORE_ISA  // the first inclusion: what every level uses, compiled for the baseline
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "mibcore/philox.h"

#define MIBCORE_ISA_FILE "math_probe_cpu.cpp"
#include "isa_foreach.h"  // this file again, once per level

TORCH_LIBRARY_FRAGMENT(mibcore, m) {
  m.def("math_probe(str name, str impl, Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(mibcore, CPU, m) {
  m.impl("math_probe", MIBCORE_CPU_KERNEL(math_probe_cpu));
}

#else  // one pass per level (isa_foreach.h)
#include "philox_cpu.h"
#include "reparameterize_kl_simd.h"

namespace mibcore {
namespace MIBCORE_ISA {
namespace {

// out[k][j] = f(in[0][j], in[1][j], ...) for the scalar functions, in float T.
template <typename T, typename Out, typename Fn>
at::Tensor each(const at::Tensor& x, int64_t outputs, at::ScalarType out_type, Fn&& fn) {
  const at::Tensor in = x.contiguous();
  const int64_t n = in.size(1);
  at::Tensor out = at::empty({outputs, n}, in.options().dtype(out_type));
  const T* p = in.data_ptr<T>();
  Out* q = out.data_ptr<Out>();
  for (int64_t j = 0; j < n; ++j) fn(p + j, n, q + j, n);
  return out;
}

template <int64_t P, typename T>
void std_terms_into(const T* in, int64_t stride, T* out, int64_t out_stride) {
  const StdTerms<T> t = std_terms<P>(in[0], in[stride]);
  out[0] = t.std;
  out[out_stride] = t.log_std;
  out[2 * out_stride] = t.dstd;
  out[3 * out_stride] = t.dlog_std;
}

template <typename T>
at::Tensor scalar_float(const std::string& name, const at::Tensor& x) {
  const at::ScalarType type = x.scalar_type();
  if (name == "fast_exp")
    return each<T, T>(x, 1, type, [](const T* a, int64_t, T* o, int64_t) { o[0] = fast_exp(a[0]); });
  if (name == "fast_log")
    return each<T, T>(x, 1, type, [](const T* a, int64_t, T* o, int64_t) { o[0] = fast_log(a[0]); });
  if (name == "log1p_unit")
    return each<T, T>(x, 1, type, [](const T* a, int64_t, T* o, int64_t) { o[0] = log1p_unit(a[0]); });
  if (name == "std_terms_softplus") return each<T, T>(x, 4, type, std_terms_into<kSoftplus, T>);
  if (name == "std_terms_logvar") return each<T, T>(x, 4, type, std_terms_into<kLogVar, T>);
  if (name == "std_terms_std") return each<T, T>(x, 4, type, std_terms_into<kStd, T>);
  if (name == "kl_element")
    return each<T, T>(x, 1, type, [](const T* a, int64_t s, T* o, int64_t) {
      o[0] = kl_element(a[0], StdTerms<T>{a[s], a[2 * s], T(0), T(0)});
    });
  if (name == "kl_element_dscale")
    return each<T, T>(x, 1, type, [](const T* a, int64_t s, T* o, int64_t) {
      o[0] = kl_element_dscale(StdTerms<T>{a[0], T(0), a[s], a[2 * s]});
    });
  if constexpr (std::is_same_v<T, float>) {
    if (name == "sincos_turns")
      return each<float, float>(x, 2, at::kFloat, [](const float* a, int64_t, float* o, int64_t os) {
        const SinCos sc = sincos_turns(a[0]);
        o[0] = sc.sin;
        o[os] = sc.cos;
      });
  }
  TORCH_CHECK(false, "math_probe: no scalar function '", name, "' for ", x.scalar_type());
}

uint32_t word(int64_t v) { return static_cast<uint32_t>(v); }

at::Tensor scalar_words(const std::string& name, const at::Tensor& x) {
  using I = int64_t;
  if (name == "pow2i")
    return each<I, float>(x, 1, at::kFloat, [](const I* a, int64_t, float* o, int64_t) {
      o[0] = pow2i(static_cast<int32_t>(a[0]));
    });
  if (name == "uniform_from_bits")
    return each<I, float>(x, 1, at::kFloat, [](const I* a, int64_t, float* o, int64_t) {
      o[0] = uniform_from_bits(word(a[0]));
    });
  if (name == "box_muller")
    return each<I, float>(x, 2, at::kFloat, [](const I* a, int64_t s, float* o, int64_t os) {
      const Normal2 p = box_muller(word(a[0]), word(a[s]));
      o[0] = p.a;
      o[os] = p.b;
    });
  if (name == "philox_block")
    return each<I, I>(x, 4, at::kLong, [](const I* a, int64_t s, I* o, int64_t os) {
      const Philox4 r = philox_block(a[0], a[s], a[2 * s]);
      o[0] = r.r0;
      o[os] = r.r1;
      o[2 * os] = r.r2;
      o[3 * os] = r.r3;
    });
  if (name == "normal_block")
    return each<I, float>(x, 4, at::kFloat, [](const I* a, int64_t s, float* o, int64_t os) {
      const Normal4 r = normal_block(a[0], a[s], a[2 * s]);
      for (int k = 0; k < 4; ++k) o[k * os] = r.n[k];
    });
  if (name == "dropout_scale_at")
    return each<I, float>(x, 1, at::kFloat, [](const I* a, int64_t s, float* o, int64_t) {
      o[0] = dropout_scale_at(a[0], a[s], a[2 * s], bits_to_float(word(a[3 * s])), bits_to_float(word(a[4 * s])));
    });
  TORCH_CHECK(false, "math_probe: no scalar function '", name, "' for int64 inputs");
}

#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
using S = cpu::Simd;

// out[k][j..] = f(in[0][j..], ...) for the Simd functions, S::kN lanes at a time (tails padded).
template <typename Fn>
at::Tensor each_vector(const at::Tensor& x, int64_t outputs, Fn&& fn) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "math_probe: the vector functions take float32");
  const at::Tensor in = x.contiguous();
  const int64_t n = in.size(1), inputs = in.size(0);
  at::Tensor out = at::empty({outputs, n}, in.options());
  const float* p = in.data_ptr<float>();
  float* q = out.data_ptr<float>();
  for (int64_t j = 0; j < n; j += S::kN) {
    const S::Tail m = S::tail(j, n);
    S::V a[4], r[4];
    for (int64_t i = 0; i < inputs && i < 4; ++i) a[i] = S::load(p + i * n + j, m);
    fn(a, r);
    for (int64_t k = 0; k < outputs; ++k) S::store(q + k * n + j, m, r[k]);
  }
  return out;
}

template <int64_t P>
at::Tensor std_terms_vector(const at::Tensor& x) {
  const float shift = x[1][0].item<float>();
  TORCH_CHECK(x[1].eq(shift).all().item<bool>(), "math_probe: vector std_terms takes one shift for all inputs");
  return each_vector(x, 4, [shift](const S::V* a, S::V* r) {
    const auto f = cpu::simd::std_terms_ps<P, true>(a[0], shift);
    const auto b = cpu::simd::std_terms_ps<P, false>(a[0], shift);
    r[0] = f.std;
    r[1] = f.log_std;
    r[2] = b.dstd;
    r[3] = b.dlog_std;
  });
}

// The word functions: uint32 words and (block, seed, offset) through their SIMD code.
at::Tensor vector_words(const std::string& name, const at::Tensor& x) {
  const at::Tensor in = x.contiguous();
  const int64_t n = in.size(1);
  const int64_t* p = in.data_ptr<int64_t>();
  if (name == "uniform_from_bits" || name == "box_muller") {
    const bool pair = name == "box_muller";
    at::Tensor out = at::empty({pair ? 2 : 1, n}, in.options().dtype(at::kFloat));
    float* q = out.data_ptr<float>();
    for (int64_t j = 0; j < n; j += S::kN) {
      const S::Tail m = S::tail(j, n);
      alignas(64) uint32_t ra[S::kN] = {}, rb[S::kN] = {};
      for (int64_t k = 0; k < m; ++k) {
        ra[k] = word(p[j + k]);
        if (pair) rb[k] = word(p[n + j + k]);
      }
      if (pair) {
        S::V a, b;
        cpu::simd::box_muller_ps(ra, rb, a, b);
        S::store(q + j, m, a);
        S::store(q + n + j, m, b);
      } else {
        S::store(q + j, m, S::uniform(ra));
      }
    }
    return out;
  }
  if (name == "philox_block" || name == "normal_block") {
    // One block per input column: cpu::philox_blocks of that block alone, then (normal_block)
    // cpu::simd::normals_from_blocks on the block's words.
    const bool normals = name == "normal_block";
    at::Tensor out = at::empty({4, n}, in.options().dtype(normals ? at::kFloat : at::kLong));
    constexpr int64_t kBlocks = cpu::philox_buffer_size(S::kN);
    for (int64_t j = 0; j < n; ++j) {
      alignas(64) uint32_t r[4][kBlocks] = {};
      cpu::philox_blocks(p[j], 1, p[n + j], p[2 * n + j], r[0], r[1], r[2], r[3]);
      if (normals) {
        alignas(64) float all[4 * kBlocks];
        cpu::simd::normals_from_blocks(r[0], r[1], r[2], r[3], S::kN, all);
        for (int k = 0; k < 4; ++k) out.data_ptr<float>()[k * n + j] = all[k];
      } else {
        for (int k = 0; k < 4; ++k) out.data_ptr<int64_t>()[k * n + j] = r[k][0];
      }
    }
    return out;
  }
  TORCH_CHECK(false, "math_probe: no vector function '", name, "' for int64 inputs");
}

at::Tensor vector(const std::string& name, const at::Tensor& x) {
  if (x.scalar_type() == at::kLong) return vector_words(name, x);
  if (name == "fast_exp") return each_vector(x, 1, [](const S::V* a, S::V* r) { r[0] = cpu::simd::exp_ps(a[0]); });
  if (name == "fast_log")
    return each_vector(x, 1, [](const S::V* a, S::V* r) { r[0] = cpu::simd::log_ps<cpu::simd::kAny>(a[0]); });
  if (name == "log1p_unit")
    return each_vector(x, 1, [](const S::V* a, S::V* r) { r[0] = cpu::simd::log1p_unit_ps(a[0]); });
  if (name == "std_terms_softplus") return std_terms_vector<kSoftplus>(x);
  if (name == "std_terms_logvar") return std_terms_vector<kLogVar>(x);
  if (name == "std_terms_std") return std_terms_vector<kStd>(x);
  if (name == "kl_element")
    return each_vector(x, 1, [](const S::V* a, S::V* r) { r[0] = kl_element_of<S>(a[0], a[1], a[2]); });
  if (name == "kl_element_dscale")
    return each_vector(x, 1, [](const S::V* a, S::V* r) { r[0] = kl_element_dscale_of<S>(a[0], a[1], a[2]); });
  TORCH_CHECK(false, "math_probe: no vector function '", name, "'");
}
#endif

}  // namespace

at::Tensor math_probe_cpu(c10::string_view name_view, c10::string_view impl_view, const at::Tensor& x) {
  const std::string name(name_view), impl(impl_view);
  TORCH_CHECK(x.dim() == 2, "math_probe: x must be [inputs, n]");
  if (impl == "vector") {
#if MIBCORE_ISA_LEVEL >= MIBCORE_ISA_AVX2
    return vector(name, x);
#else
    TORCH_CHECK(false, "math_probe: no vector functions at the baseline level");
#endif
  }
  TORCH_CHECK(impl == "scalar", "math_probe: impl must be 'scalar' or 'vector', got '", impl, "'");
  switch (x.scalar_type()) {
    case at::kFloat: return scalar_float<float>(name, x);
    case at::kDouble: return scalar_float<double>(name, x);
    case at::kLong: return scalar_words(name, x);
    default: TORCH_CHECK(false, "math_probe: x must be float32, float64 or int64, got ", x.scalar_type());
  }
}

}  // namespace MIBCORE_ISA
}  // namespace mibcore
#endif  // MIBCORE_ISA
