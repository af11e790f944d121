// The LMF kernels' shape and block kernels (low_rank_fusion_cpu.cpp): per level, included once in
// each level's pass of that file (no include guard; see isa_foreach.h).
namespace mibcore {
namespace MIBCORE_ISA {
namespace {

// Multiply-adds per parallel task, at least: below this, waking threads costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 23;

struct LmfShape {
  int64_t B, R, out, M;
  int64_t dims[3];  // d_m + 1 (the factor rows)
};

LmfShape check_lmf_args(at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights) {
  TORCH_CHECK_VALUE(inputs.size() == 2 || inputs.size() == 3, "low_rank_fusion: inputs must hold 2 or 3 tensors");
  TORCH_CHECK_VALUE(factors.size() == inputs.size(), "low_rank_fusion: factors must hold one tensor per input");
  LmfShape s{inputs[0].size(0), factors[0].size(0), factors[0].size(2), static_cast<int64_t>(inputs.size()), {1, 1, 1}};
  for (size_t m = 0; m < inputs.size(); ++m) {
    TORCH_CHECK_VALUE(inputs[m].dim() == 2 && inputs[m].size(0) == s.B,
                      "low_rank_fusion: inputs[", m, "] must be [B, d]");
    TORCH_CHECK_VALUE(factors[m].dim() == 3 && factors[m].size(0) == s.R &&
                          factors[m].size(1) == inputs[m].size(1) + 1 && factors[m].size(2) == s.out,
                      "low_rank_fusion: factors[", m, "] must be [rank, d + 1, out]");
    TORCH_CHECK_VALUE(inputs[m].device().is_cpu() && factors[m].device().is_cpu(),
                      "low_rank_fusion: CPU tensors expected");
    check_same_dtype_device("low_rank_fusion", "inputs", inputs[m], "factors[0]", factors[0]);
    check_same_dtype_device("low_rank_fusion", "factors", factors[m], "factors[0]", factors[0]);
    s.dims[m] = factors[m].size(1);
  }
  TORCH_CHECK_TYPE(at::isFloatingType(factors[0].scalar_type()),
                   "low_rank_fusion: factors must be floating point, got ",
                   factors[0].scalar_type());
  TORCH_CHECK_VALUE(rank_weights.numel() == s.R, "low_rank_fusion: rank_weights must hold rank values");
  check_same_dtype_device("low_rank_fusion", "rank_weights", rank_weights, "factors[0]", factors[0]);
  return s;
}

int64_t rows_per_task(const LmfShape& s) {
  int64_t macs_per_row = 0;
  for (int64_t m = 0; m < s.M; ++m) macs_per_row += s.R * s.dims[m] * s.out;
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(macs_per_row, 1));
}

constexpr int64_t kLanes = 16;  // columns are padded to whole vectors at every level (a zmm of floats)
constexpr int64_t kRowBlock = 4;  // batch rows sharing each factor load

int64_t padded(int64_t out) { return (out + kLanes - 1) / kLanes * kLanes; }

using cpu::Buffer;
using cpu::load_vec;
using cpu::store_vec;
using cpu::uninitialized;

// P[bb][r * op + o] = F[r, 0, o] + sum_i x[b0 + bb, i] F[r, i + 1, o] for bb < kRowBlock, with
// factors padded to op columns (zeros). GNU vector types keep the kRowBlock accumulators in
// registers (g++ spills plain arrays here, and the stores dominate).

template <typename acc_t>
void project_block(const LmfShape& s, int64_t rows, int64_t op, const acc_t* x, int64_t b0, int64_t nb,
                   const acc_t* F, acc_t* P) {
  using Vec = typename cpu::Vec<acc_t>::type;
  constexpr int64_t kV = cpu::kVecBytes / sizeof(acc_t);
  static_assert(kRowBlock == 4, "the accumulators below are written out for 4 rows");
  // Rows past the batch read x from the first row (their results are never stored).
  const acc_t* x0 = x + b0 * (rows - 1);
  const acc_t* x1 = x + (b0 + (nb > 1 ? 1 : 0)) * (rows - 1);
  const acc_t* x2 = x + (b0 + (nb > 2 ? 2 : 0)) * (rows - 1);
  const acc_t* x3 = x + (b0 + (nb > 3 ? 3 : 0)) * (rows - 1);
  for (int64_t r = 0; r < s.R; ++r) {
    for (int64_t o0 = 0; o0 < op; o0 += kV) {
      const acc_t* f = F + r * rows * op + o0;
      Vec a0 = load_vec<Vec>(f), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = 1; i < rows; ++i) {
        const Vec fi = load_vec<Vec>(f + i * op);
        a0 += x0[i - 1] * fi;
        a1 += x1[i - 1] * fi;
        a2 += x2[i - 1] * fi;
        a3 += x3[i - 1] * fi;
      }
      const Vec acc[kRowBlock] = {a0, a1, a2, a3};
      for (int64_t bb = 0; bb < nb; ++bb) store_vec(P + bb * s.R * op + r * op + o0, acc[bb]);
    }
  }
}

// dF[r, i, :] = sum_b xrow[b, i] G[b][r, :] over the n rows of a task (xrow = [1; x] per row,
// zero-padded to xs columns, a multiple of kFactorRows): kFactorRows factor rows share each
// load of G, and their accumulators stay in registers for the whole batch.
constexpr int64_t kFactorRows = 8;

template <typename acc_t>
void accumulate_factor_grad(const LmfShape& s, int64_t rows, int64_t op, int64_t n, const acc_t* xrow, int64_t xs,
                            const acc_t* G, acc_t* dF) {
  using Vec = typename cpu::Vec<acc_t>::type;
  constexpr int64_t kV = cpu::kVecBytes / sizeof(acc_t);
  static_assert(kFactorRows == 8, "the accumulators below are written out for 8 factor rows");
  const int64_t RO = s.R * op;
  for (int64_t r = 0; r < s.R; ++r) {
    for (int64_t o0 = 0; o0 < op; o0 += kV) {
      for (int64_t i0 = 0; i0 < rows; i0 += kFactorRows) {
        Vec a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{};
        for (int64_t b = 0; b < n; ++b) {
          const Vec g = load_vec<Vec>(G + b * RO + r * op + o0);
          const acc_t* x = xrow + b * xs + i0;
          a0 += x[0] * g;
          a1 += x[1] * g;
          a2 += x[2] * g;
          a3 += x[3] * g;
          a4 += x[4] * g;
          a5 += x[5] * g;
          a6 += x[6] * g;
          a7 += x[7] * g;
        }
        const Vec acc[kFactorRows] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int64_t k = 0; k < std::min(kFactorRows, rows - i0); ++k) store_vec(dF + (r * rows + i0 + k) * op + o0, acc[k]);
      }
    }
  }
}

// FT[r, o, i] = F[r, i + 1, o] for the d = rows - 1 input rows, zero-padded to dp columns (a
// multiple of the vector width): input_grad then needs no horizontal sums and skips the
// padding columns of out.
template <typename acc_t>
Buffer<acc_t> transposed_input_rows(const LmfShape& s, int64_t rows, int64_t op, int64_t dp, const acc_t* F) {
  Buffer<acc_t> FT = uninitialized<acc_t>(s.R * s.out * dp);
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t o = 0; o < s.out; ++o) {
      acc_t* ft = FT.get() + (r * s.out + o) * dp;
      const acc_t* f = F + (r * rows + 1) * op + o;
      for (int64_t i = 0; i < rows - 1; ++i) ft[i] = f[i * op];
      std::fill(ft + rows - 1, ft + dp, acc_t(0));
    }
  return FT;
}

// dx[b, i] = sum_{r, o} G[b][r, o] FT[r, o, i] for the n rows of a task, 4 batch rows of
// accumulators per vector of input columns.
template <typename acc_t>
void input_grad(const LmfShape& s, int64_t d, int64_t op, int64_t dp, int64_t n, const acc_t* FT, const acc_t* G,
                acc_t* dx) {
  using Vec = typename cpu::Vec<acc_t>::type;
  constexpr int64_t kV = cpu::kVecBytes / sizeof(acc_t);
  const int64_t RO = s.R * op;
  for (int64_t b0 = 0; b0 < n; b0 += kRowBlock) {
    const int64_t nb = std::min(kRowBlock, n - b0);
    // Rows past the task read row b0 (their results are never stored).
    const acc_t* g0 = G + b0 * RO;
    const acc_t* g1 = G + (b0 + (nb > 1 ? 1 : 0)) * RO;
    const acc_t* g2 = G + (b0 + (nb > 2 ? 2 : 0)) * RO;
    const acc_t* g3 = G + (b0 + (nb > 3 ? 3 : 0)) * RO;
    for (int64_t i0 = 0; i0 < d; i0 += kV) {
      Vec a0{}, a1{}, a2{}, a3{};
      for (int64_t r = 0; r < s.R; ++r) {
        const acc_t* ft = FT + r * s.out * dp + i0;
        const int64_t at = r * op;
        for (int64_t o = 0; o < s.out; ++o) {
          const Vec f = load_vec<Vec>(ft + o * dp);
          a0 += g0[at + o] * f;
          a1 += g1[at + o] * f;
          a2 += g2[at + o] * f;
          a3 += g3[at + o] * f;
        }
      }
      const Vec acc[kRowBlock] = {a0, a1, a2, a3};
      const int64_t width = std::min(kV, d - i0);
      for (int64_t bb = 0; bb < nb; ++bb) {
        acc_t lanes[kV];
        std::memcpy(lanes, &acc[bb], sizeof(Vec));
        std::copy(lanes, lanes + width, dx + (b0 + bb) * d + i0);
      }
    }
  }
}

}  // namespace
}  // namespace MIBCORE_ISA
}  // namespace mibcore
