// mibcore::dropout, dropout_add and relu_dropout: the schemas (kernels: csrc/cpu/dropout_cpu.cpp,
// csrc/cuda; fakes and the Python side: mibcore/ops/dropout.py) and the autograd (csrc/ops/autograd.h).
#include "autograd.h"

namespace mibcore {

TORCH_LIBRARY_FRAGMENT(mibcore, m) {
  // Inverted dropout on the Philox contract (philox.h): element j of the row-major flattened
  // tensor is kept iff uniform(j) <= 1 - p, and kept elements are scaled by 1 / (1 - p).
  // The backward of dropout is dropout of the gradient with the same rng (mask regenerated).
  m.def("dropout(Tensor x, float p, Tensor rng) -> Tensor");
  // x + dropout(h, p): the residual pattern (x and h of one shape).
  m.def("dropout_add(Tensor x, Tensor h, float p, Tensor rng) -> Tensor");
  // dropout(relu(x), p); its backward needs only the output: grad_x = grad_y * (y > 0) / (1 - p).
  m.def("relu_dropout(Tensor x, float p, Tensor rng) -> Tensor");
  m.def("relu_dropout_backward(Tensor grad_y, Tensor y, float p) -> Tensor");
}

namespace {

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
  m.impl("dropout", &dropout_autograd);
  m.impl("dropout_add", &dropout_add_autograd);
  m.impl("relu_dropout", &relu_dropout_autograd);
}

}  // namespace mibcore
