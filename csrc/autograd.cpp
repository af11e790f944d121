// Autograd of the C++ operators whose calls are cheap enough for Python autograd to matter,
// registered at the Autograd dispatch key (torch.library's Python autograd costs tens to
// hundreds of microseconds per call at the paper's tiny shapes, more than these kernels):
//   mibcore::reparameterize_kl: the backward calls reparameterize_kl_backward, which
//     regenerates eps from the saved rng tensor;
//   mibcore::low_rank_fusion: saves the inputs, factors and rank weights; the backward calls
//     low_rank_fusion_backward.
// The Triton operators register the same formulas from Python (mibcore/ops/).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

namespace mibcore {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> forward_op(const at::Tensor& mu, const at::Tensor& scale, const at::Tensor& rng,
                                              int64_t parameterization, double shift, bool sample, int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mibcore::reparameterize_kl", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, int64_t, double, bool, int64_t)>();
  return op.call(mu, scale, rng, parameterization, shift, sample, reduction);
}

std::tuple<at::Tensor, at::Tensor> backward_op(const std::optional<at::Tensor>& grad_z,
                                               const std::optional<at::Tensor>& grad_kl, const at::Tensor& mu,
                                               const at::Tensor& scale, const at::Tensor& rng,
                                               int64_t parameterization, double shift, bool sample,
                                               int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mibcore::reparameterize_kl_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, int64_t, double, bool, int64_t)>();
  return op.call(grad_z, grad_kl, mu, scale, rng, parameterization, shift, sample, reduction);
}

class ReparameterizeKL : public torch::autograd::Function<ReparameterizeKL> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& scale,
                               const at::Tensor& rng, int64_t parameterization, double shift, bool sample,
                               int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [z, kl] = forward_op(mu, scale, rng, parameterization, shift, sample, reduction);
    ctx->save_for_backward({mu, scale, rng});
    ctx->saved_data["parameterization"] = parameterization;
    ctx->saved_data["shift"] = shift;
    ctx->saved_data["sample"] = sample;
    ctx->saved_data["reduction"] = reduction;
    return {z, kl};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto optional = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
    auto [grad_mu, grad_scale] =
        backward_op(optional(grads[0]), optional(grads[1]), saved[0], saved[1], saved[2],
                    ctx->saved_data["parameterization"].toInt(), ctx->saved_data["shift"].toDouble(),
                    ctx->saved_data["sample"].toBool(), ctx->saved_data["reduction"].toInt());
    return {grad_mu, grad_scale, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_autograd(const at::Tensor& mu, const at::Tensor& scale,
                                                              const at::Tensor& rng, int64_t parameterization,
                                                              double shift, bool sample, int64_t reduction) {
  auto out = ReparameterizeKL::apply(mu, scale, rng, parameterization, shift, sample, reduction);
  return {out[0], out[1]};
}

using LowRankFusionBackward = std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor>;

class LowRankFusion : public torch::autograd::Function<LowRankFusion> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, at::TensorList factors,
                               const at::Tensor& rank_weights, const at::Tensor& bias) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mibcore::low_rank_fusion", "")
                         .typed<at::Tensor(at::TensorList, at::TensorList, const at::Tensor&, const at::Tensor&)>();
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
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mibcore::low_rank_fusion_backward", "")
                         .typed<LowRankFusionBackward(const at::Tensor&, at::TensorList, at::TensorList,
                                                      const at::Tensor&)>();
    const auto saved = ctx->get_saved_variables();
    const int64_t m = ctx->saved_data["modalities"].toInt();
    const std::vector<at::Tensor> inputs(saved.begin(), saved.begin() + m);
    const std::vector<at::Tensor> factors(saved.begin() + m, saved.begin() + 2 * m);
    auto [grad_inputs, grad_factors, grad_w, grad_b] = op.call(grads[0], inputs, factors, saved[2 * m]);
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
  m.impl("reparameterize_kl", &reparameterize_kl_autograd);
  m.impl("low_rank_fusion", &low_rank_fusion_autograd);
}

}  // namespace mibcore
