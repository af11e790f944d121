// Autograd of mibcore::reparameterize_kl for the C++ backends (cpu, cuda), registered at the
// Autograd dispatch key: the backward calls mibcore::reparameterize_kl_backward, which
// regenerates eps from the saved rng tensor. (In C++ rather than torch.library's Python
// autograd because the Python path costs tens of microseconds per call at the paper's tiny
// shapes.) The Triton operators register the same formula from Python.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

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

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, Autograd, m) { m.impl("reparameterize_kl", &reparameterize_kl_autograd); }

}  // namespace mibcore
