// Counter-based random numbers shared by the CPU and CUDA kernels of mibcore.
//
// The randomness contract (DESIGN.md section 5), mirrored exactly by
// mibcore/reference/philox.py (pure PyTorch) and mibcore/kernels/_math.py (Triton):
//
//   key     = (seed & 0xffffffff, seed >> 32)             seed:   int64 drawn from the torch generator
//   counter = (q & 0xffffffff, q >> 32,                      q:      block index = element index / 4
//              offset & 0xffffffff, offset >> 32)          offset: int64 drawn with the seed
//   (r0, r1, r2, r3) = Philox4x32-10(counter, key)
//   uniform(r) = ((r >> 8) + 1) * 2^-24                     in (0, 1], 24 exact bits, never 0
//   Box-Muller on (r0, r1) and on (r2, r3), the angle taken in turns:
//     rad = sqrt(-2 log u_a),  (n_a, n_b) = (rad cos(2 pi u_b), rad sin(2 pi u_b))
//   element i gets (n0, n1, n2, n3)[i % 4]   (n0, n1 from (r0, r1); n2, n3 from (r2, r3))
//   dropout (tensor_fusion's outer product, and the dropout operators): element j of the
//     row-major flattened tensor is kept iff uniform(r[j % 4]) of block j / 4 <= keep_prob,
//     and then scaled by 1 / keep_prob (keep_prob = float(1 - p))
#pragma once

#include "mibcore/math.h"

namespace mibcore {

// kPhiloxM0, kPhiloxM1 (multipliers) and kPhiloxW0, kPhiloxW1 (Weyl key increments): math_tables.h.

struct Philox4 {
  uint32_t r0, r1, r2, r3;
};

MIB_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Philox4x32 with 10 rounds (Salmon et al. 2011; the Random123 and curand variant).
MIB_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                             uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#else
#pragma GCC unroll 10  // fully unrolled, so that `omp simd` loops around it vectorize
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0 = mulhi32(kPhiloxM0, c0);
    uint32_t lo0 = kPhiloxM0 * c0;
    uint32_t hi1 = mulhi32(kPhiloxM1, c2);
    uint32_t lo1 = kPhiloxM1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return Philox4{c0, c1, c2, c3};
}

MIB_HD Philox4 philox_block(uint64_t block, uint64_t seed, uint64_t offset) {
  return philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                       static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A uniform in (0, 1] with 24 random bits; exact in float.
MIB_HD float uniform_from_bits(uint32_t r) {
  return static_cast<float>((r >> 8) + 1u) * kUniformScale;  // 2^-24
}

struct SinCos {
  float sin, cos;
};

// sin and cos of 2*pi*t for t in [0, 1]. The reduction to a quarter turn is exact
// because it happens in turns; Cephes sinf/cosf polynomials on [-pi/4, pi/4].
MIB_HD SinCos sincos_turns(float t) {
  float quarter = floorf(t * 4.0f + 0.5f);  // nearest quarter turn, 0..4
  float f = t - quarter * 0.25f;             // in [-1/8, 1/8], exact
  float x = f * kTwoPi;
  float z = x * x;
  float s = ((kSinP0 * z + kSinP1) * z + kSinP2) * z * x + x;
  float c = ((kCosP0 * z + kCosP1) * z + kCosP2) * z * z - 0.5f * z + 1.0f;
  int32_t q = static_cast<int32_t>(quarter) & 3;
  // Rotate (cos x, sin x) by q quarter turns: odd q swaps cos and sin, then the signs
  // follow the quadrant (cos < 0 for q = 1, 2; sin < 0 for q = 2, 3).
  bool odd = (q & 1) != 0;
  float a = odd ? s : c;
  float b = odd ? c : s;
  return SinCos{(q >= 2) ? -b : b, (q == 1 || q == 2) ? -a : a};
}

struct Normal2 {
  float a, b;
};

// The two standard normals of a Box-Muller pair (results by value, so that loops vectorize).
MIB_HD Normal2 box_muller(uint32_t ra, uint32_t rb) {
  float rad = sqrtf(-2.0f * fast_log(uniform_from_bits(ra)));
  SinCos sc = sincos_turns(uniform_from_bits(rb));
  return Normal2{rad * sc.cos, rad * sc.sin};
}

// The dropout scale of element `index`: 1 / keep_prob if kept, else 0 (see the header comment).
MIB_HD float dropout_scale_at(uint64_t index, uint64_t seed, uint64_t offset, float keep_prob, float inv_keep) {
  Philox4 r = philox_block(index >> 2, seed, offset);
  uint32_t lane = static_cast<uint32_t>(index & 3);
  uint32_t bits = lane == 0 ? r.r0 : lane == 1 ? r.r1 : lane == 2 ? r.r2 : r.r3;
  return uniform_from_bits(bits) <= keep_prob ? inv_keep : 0.0f;
}

// The keep decisions of a whole Philox block as integer compares, for kernels that take 4
// elements per Philox call: uniform_from_bits(r) <= keep_prob  <=>  ((r >> 8) + 1) * 2^-24 <=
// keep_prob  <=>  (r >> 8) < floor(keep_prob * 2^24) = keep_threshold(keep_prob), exactly (both
// sides are exact: keep_prob is a float, 2^24 a power of two). keep_bits sets bit l for word r_l.
MIB_HD uint32_t keep_threshold(float keep_prob) {
  return static_cast<uint32_t>(floor(static_cast<double>(keep_prob) / static_cast<double>(kUniformScale)));
}

MIB_HD uint32_t keep_bits(const Philox4& r, uint32_t threshold) {
  return static_cast<uint32_t>((r.r0 >> 8) < threshold) | static_cast<uint32_t>((r.r1 >> 8) < threshold) << 1 |
         static_cast<uint32_t>((r.r2 >> 8) < threshold) << 2 | static_cast<uint32_t>((r.r3 >> 8) < threshold) << 3;
}

struct Normal4 {
  float n[4];
};

// The 4 standard normals of Philox block `block` (elements 4 * block .. 4 * block + 3): one
// Philox call and both Box-Muller pairs, for a thread that owns the whole block.
MIB_HD Normal4 normal_block(uint64_t block, uint64_t seed, uint64_t offset) {
  Philox4 r = philox_block(block, seed, offset);
  Normal2 p = box_muller(r.r0, r.r1);
  Normal2 q = box_muller(r.r2, r.r3);
  return Normal4{{p.a, p.b, q.a, q.b}};
}

// The factor a dropout scale (0 or float(1 / keep_prob), from dropout_scale_at) applies in
// acc_t: for double the exact double 1 / keep_prob (float(1 / keep_prob) is off by up to 6e-8).
template <typename acc_t>
MIB_HD acc_t dropout_factor(float scale, double inv_keep_d) {
  if constexpr (sizeof(acc_t) == sizeof(double)) {
    return scale != 0.0f ? inv_keep_d : 0.0;
  } else {
    return static_cast<acc_t>(scale);
  }
}

// The standard normal of element `index` (one Box-Muller pair of its block, for code that
// takes elements one at a time; normal_block gives the same numbers for a whole block).
MIB_HD float normal_at(uint64_t index, uint64_t seed, uint64_t offset) {
  Philox4 r = philox_block(index >> 2, seed, offset);
  bool first_pair = (index & 2) == 0;
  Normal2 p = box_muller(first_pair ? r.r0 : r.r2, first_pair ? r.r1 : r.r3);
  return (index & 1) == 0 ? p.a : p.b;
}

}  // namespace mibcore
