// mibcore::tensor_fusion: the schemas (kernels: csrc/cpu/tensor_fusion_cpu.cpp, csrc/cuda; fakes and
// the Python side: mibcore/ops/tensor_fusion.py) and the autograd (csrc/ops/autograd.h).
#include "autograd.h"

namespace mibcore {

TORCH_LIBRARY_FRAGMENT(mibcore, m) {
  // linear(dropout(flatten(outer([1; x_1], [1; x_2], ...))), weight, bias) without ever forming
  // the outer product; dropout's keep-decisions come from rng (see philox.h).
  m.def("tensor_fusion(Tensor[] inputs, Tensor weight, Tensor? bias, float dropout, Tensor rng) -> Tensor");
  // (grad_inputs, grad_weight, grad_bias), regenerating the tiles and the dropout mask.
  m.def(
      "tensor_fusion_backward(Tensor grad_y, Tensor[] inputs, Tensor weight, float dropout, Tensor rng) "
      "-> (Tensor[], Tensor, Tensor)");
}

namespace {

using FusionBackward = std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor>;

class TensorFusion : public torch::autograd::Function<TensorFusion> {
 public:
  // Saves the inputs, the weight and rng only: the backward regenerates the outer-product
  // tiles and the dropout mask.
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, double dropout, const at::Tensor& rng) {
    static auto op = find_op<at::Tensor(at::TensorList, const at::Tensor&, const std::optional<at::Tensor>&, double,
                                        const at::Tensor&)>("mibcore::tensor_fusion");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor y = op.call(inputs, weight, bias, dropout, rng);
    variable_list saved(inputs.begin(), inputs.end());
    saved.push_back(weight);
    saved.push_back(rng);
    ctx->save_for_backward(saved);
    ctx->saved_data["dropout"] = dropout;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return {y};
  }

  // Gradients in the order autograd flattened the arguments: inputs..., weight, bias, dropout, rng.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward("tensor_fusion");
    static auto op = find_op<FusionBackward(const at::Tensor&, at::TensorList, const at::Tensor&, double,
                                            const at::Tensor&)>("mibcore::tensor_fusion_backward");
    const auto saved = ctx->get_saved_variables();
    const size_t m = saved.size() - 2;
    auto [grad_inputs, grad_weight, grad_bias] =
        op.call(grads[0], slice(saved, 0, m), saved[m], ctx->saved_data["dropout"].toDouble(), saved[m + 1]);
    variable_list out(grad_inputs.begin(), grad_inputs.end());
    out.push_back(grad_weight);
    out.push_back(ctx->saved_data["has_bias"].toBool() ? grad_bias : at::Tensor());
    out.push_back(at::Tensor());
    out.push_back(at::Tensor());
    return out;
  }
};

at::Tensor tensor_fusion_autograd(at::TensorList inputs, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, double dropout, const at::Tensor& rng) {
  return TensorFusion::apply(inputs, weight, bias, dropout, rng)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, Autograd, m) {
  m.impl("tensor_fusion", &tensor_fusion_autograd);
}

}  // namespace mibcore
