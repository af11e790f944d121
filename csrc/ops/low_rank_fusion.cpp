// mibcore::low_rank_fusion: the schemas (kernels: csrc/cpu/low_rank_fusion_cpu.cpp; fakes and the
// Python side: mibcore/ops/low_rank_fusion.py) and the autograd (csrc/ops/autograd.h).
#include "autograd.h"

namespace mibcore {

TORCH_LIBRARY_FRAGMENT(mibcore, m) {
  // LMF: sum_r w_r prod_m ([1; x_m] @ factors[m][r]) + bias (rank_weights: R values, bias: out values).
  m.def("low_rank_fusion(Tensor[] inputs, Tensor[] factors, Tensor rank_weights, Tensor bias) -> Tensor");
  // (grad_inputs, grad_factors, grad_rank_weights [R], grad_bias [out]).
  m.def(
      "low_rank_fusion_backward(Tensor grad_y, Tensor[] inputs, Tensor[] factors, Tensor rank_weights) "
      "-> (Tensor[], Tensor[], Tensor, Tensor)");
}

namespace {

using LowRankFusionBackward = std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor>;

class LowRankFusion : public torch::autograd::Function<LowRankFusion> {
 public:
  // Saves the inputs, factors and rank weights; the backward recomputes the projections.
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, at::TensorList factors,
                               const at::Tensor& rank_weights, const at::Tensor& bias) {
    static auto op = find_op<at::Tensor(at::TensorList, at::TensorList, const at::Tensor&, const at::Tensor&)>(
        "mibcore::low_rank_fusion");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor y = op.call(inputs, factors, rank_weights, bias);
    variable_list saved(inputs.begin(), inputs.end());
    saved.insert(saved.end(), factors.begin(), factors.end());
    saved.push_back(rank_weights);
    ctx->save_for_backward(saved);
    ctx->saved_data["modalities"] = static_cast<int64_t>(inputs.size());
    ctx->saved_data["rank_weights_shape"] = rank_weights.sizes().vec();
    ctx->saved_data["bias_shape"] = bias.sizes().vec();
    return {y};
  }

  // Gradients in the order autograd flattened the arguments: inputs..., factors..., rank_weights, bias.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward("low_rank_fusion");
    static auto op = find_op<LowRankFusionBackward(const at::Tensor&, at::TensorList, at::TensorList,
                                                   const at::Tensor&)>("mibcore::low_rank_fusion_backward");
    const auto saved = ctx->get_saved_variables();
    const size_t m = static_cast<size_t>(ctx->saved_data["modalities"].toInt());
    auto [grad_inputs, grad_factors, grad_w, grad_b] =
        op.call(grads[0], slice(saved, 0, m), slice(saved, m, 2 * m), saved[2 * m]);
    variable_list out(grad_inputs.begin(), grad_inputs.end());
    out.insert(out.end(), grad_factors.begin(), grad_factors.end());
    out.push_back(grad_w.reshape(ctx->saved_data["rank_weights_shape"].toIntVector()));
    out.push_back(grad_b.reshape(ctx->saved_data["bias_shape"].toIntVector()));
    return out;
  }
};

at::Tensor low_rank_fusion_autograd(at::TensorList inputs, at::TensorList factors, const at::Tensor& rank_weights,
                                    const at::Tensor& bias) {
  return LowRankFusion::apply(inputs, factors, rank_weights, bias)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, Autograd, m) {
  m.impl("low_rank_fusion", &low_rank_fusion_autograd);
}

}  // namespace mibcore
