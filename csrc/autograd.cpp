// Autograd of every C++ operator of mibcore (docs/adding-an-operator.md: "C++ operators get
// their autograd here; Triton operators get theirs in mibcore/ops/<op>.py"). Registered at
// the Autograd dispatch key, so a call costs no Python (torch.library's Python autograd
// costs tens of microseconds per call, more than these kernels at the paper's shapes).
// Each backward calls the operator's backward schema, which regenerates what the forward
// drew (eps, dropout masks) from the saved rng tensor: nothing random is stored.
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

// The typed handle of mibcore::<name> (looked up once per call site).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The backward kernels are not themselves differentiable: a double backward (create_graph=True,
// e.g. a gradient penalty) would silently get zero second derivatives, so it is an error.
void check_no_double_backward(const char* op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "mibcore::", op,
              ": double backward (a backward with create_graph=True) is not supported by the fused "
              "cpu/cuda operators; use the 'reference' backend (mibcore.backends.use(\"reference\")) "
              "for higher-order gradients");
}

std::vector<at::Tensor> slice(const variable_list& v, size_t begin, size_t end) {
  return std::vector<at::Tensor>(v.begin() + begin, v.begin() + end);
}

// ---------------------------------------------------------------- reparameterize_kl
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

// ---------------------------------------------------------------- tensor_fusion
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

// ---------------------------------------------------------------- low_rank_fusion
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

// ---------------------------------------------------------------- dropout, dropout_add, relu_dropout
using DropoutSignature = at::Tensor(const at::Tensor&, double, const at::Tensor&);

// The backward of dropout is dropout of the gradient with the same rng (the mask regenerated).
at::Tensor dropout_of(const at::Tensor& grad, double p, const at::Tensor& rng) {
  static auto op = find_op<DropoutSignature>("mibcore::dropout");
  return op.call(grad, p, rng);
}

class Dropout : public torch::autograd::Function<Dropout> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, double p, const at::Tensor& rng) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({rng});
    ctx->saved_data["p"] = p;
    return {dropout_of(x, p, rng)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward("dropout");
    const auto rng = ctx->get_saved_variables()[0];
    return {dropout_of(grads[0], ctx->saved_data["p"].toDouble(), rng), at::Tensor(), at::Tensor()};
  }
};

class DropoutAdd : public torch::autograd::Function<DropoutAdd> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& h, double p,
                               const at::Tensor& rng) {
    static auto op =
        find_op<at::Tensor(const at::Tensor&, const at::Tensor&, double, const at::Tensor&)>("mibcore::dropout_add");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({rng});
    ctx->saved_data["p"] = p;
    return {op.call(x, h, p, rng)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward("dropout_add");
    const auto rng = ctx->get_saved_variables()[0];
    return {grads[0], dropout_of(grads[0], ctx->saved_data["p"].toDouble(), rng), at::Tensor(), at::Tensor()};
  }
};

class ReluDropout : public torch::autograd::Function<ReluDropout> {
 public:
  // Saves the output only: y > 0 exactly where x > 0 and the element was kept.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, double p, const at::Tensor& rng) {
    static auto op = find_op<DropoutSignature>("mibcore::relu_dropout");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor y = op.call(x, p, rng);
    ctx->save_for_backward({y});
    ctx->saved_data["p"] = p;
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_no_double_backward("relu_dropout");
    static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("mibcore::relu_dropout_backward");
    const auto y = ctx->get_saved_variables()[0];
    return {op.call(grads[0], y, ctx->saved_data["p"].toDouble()), at::Tensor(), at::Tensor()};
  }
};

at::Tensor dropout_autograd(const at::Tensor& x, double p, const at::Tensor& rng) {
  return Dropout::apply(x, p, rng)[0];
}

at::Tensor dropout_add_autograd(const at::Tensor& x, const at::Tensor& h, double p, const at::Tensor& rng) {
  return DropoutAdd::apply(x, h, p, rng)[0];
}

at::Tensor relu_dropout_autograd(const at::Tensor& x, double p, const at::Tensor& rng) {
  return ReluDropout::apply(x, p, rng)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(mibcore, Autograd, m) {
  m.impl("reparameterize_kl", &reparameterize_kl_autograd);
  m.impl("tensor_fusion", &tensor_fusion_autograd);
  m.impl("low_rank_fusion", &low_rank_fusion_autograd);
  m.impl("dropout", &dropout_autograd);
  m.impl("dropout_add", &dropout_add_autograd);
  m.impl("relu_dropout", &relu_dropout_autograd);
}

}  // namespace mibcore
