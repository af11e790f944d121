"""The fused operators: one module per operator, each declaring its implementations once.

    ops/<op>.py   IMPLEMENTATIONS (backend -> torch operator, devices), fake tensors, and the
                  Triton operators with their autograd (C++ autograd: csrc/autograd.cpp)

OPERATORS maps each operator's public name to its IMPLEMENTATIONS; mibcore.backends derives
everything from it. An operator module may declare AUTO_ORDER ({device type: backends, fastest
first}) where its order differs from the default of mibcore.backends; AUTO_ORDERS collects them. Every operator also has a `reference` (pure PyTorch, mibcore/reference),
which serves any device.
"""
from mibcore.ops import dropout, low_rank_fusion, reparameterize_kl, tensor_fusion

OPERATORS = {
    "reparameterize_kl": reparameterize_kl.IMPLEMENTATIONS,
    "tensor_fusion": tensor_fusion.IMPLEMENTATIONS,
    "low_rank_fusion": low_rank_fusion.IMPLEMENTATIONS,
    "dropout": dropout.IMPLEMENTATIONS,
    "dropout_add": dropout.ADD_IMPLEMENTATIONS,
    "relu_dropout": dropout.RELU_IMPLEMENTATIONS,
}

AUTO_ORDERS = {"tensor_fusion": tensor_fusion.AUTO_ORDER}
