// mibcore::reparameterize_kl: the schemas (kernels: csrc/cpu/reparameterize_kl_cpu.cpp, csrc/cuda;
// fakes and the Python side: mibcore/ops/reparameterize_kl.py) and the autograd (csrc/ops/autograd.h).
#include "autograd.h"

namespace mibcore {

TORCH_LIBRARY_FRAGMENT(mibcore, m) {
  // z = mu + std(scale) * eps (or mu when sample is false) and the KL of each row (summed
  // over the last dim: shape mu.shape[:-1]), float32 (float64 for float64 inputs). The
  // functional API reduces the rows. rng = (seed, offset), see philox.h.
  m.def(
      "reparameterize_kl(Tensor mu, Tensor scale, Tensor rng, int parameterization, float shift, "
      "bool sample) -> (Tensor, Tensor)");
  // Gradients of mu and scale given the gradients of z and of the row KLs;
  // eps is regenerated from rng, never stored.
  m.def(
      "reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor scale, "
      "Tensor rng, int parameterization, float shift, bool sample) -> (Tensor, Tensor)");
}

namespace {

using ReparamOut = std::tuple<at::Tensor, at::Tensor>;

class ReparameterizeKL : public torch::autograd::Function<ReparameterizeKL> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& scale,
                               const at::Tensor& rng, int64_t parameterization, double shift, bool sample) {
    static auto op = find_op<ReparamOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                                        bool)>("mibcore::reparameterize_kl");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [z, kl] = op.call(mu, scale, rng, parameterization, shift, sample);
    ctx->save_for_backward({mu, scale, rng});
    ctx->saved_data["parameterization"] = parameterization;
    ctx->saved_data["shift"] = shift;
    ctx->saved_data["sample"] = sample;
    return {z, kl};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward("reparameterize_kl");
    static auto op = find_op<ReparamOut(const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                        const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                                        bool)>("mibcore::reparameterize_kl_backward");
    const auto saved = ctx->get_saved_variables();
    auto optional = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
    auto [grad_mu, grad_scale] =
        op.call(optional(grads[0]), optional(grads[1]), saved[0], saved[1], saved[2],
                ctx->saved_data["parameterization"].toInt(), ctx->saved_data["shift"].toDouble(),
                ctx->saved_data["sample"].toBool());
    return {grad_mu, grad_scale, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

ReparamOut reparameterize_kl_autograd(const at::Tensor& mu, const at::Tensor& scale, const at::Tensor& rng,
                                      int64_t parameterization, double shift, bool sample) {
  auto out = ReparameterizeKL::apply(mu, scale, rng, parameterization, shift, sample);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, Autograd, m) {
  m.impl("reparameterize_kl", &reparameterize_kl_autograd);
}

}  // namespace mibcore
