"""Argument checks of the C++ operators' host code (csrc/include/mibcore/*_host.h).

The CPU and CUDA backends share these checks, so calling the CPU operators here tests the
checks the CUDA host code makes too (which cannot run without a GPU). Each error names the
argument and what was expected."""
import re

import pytest
import torch

import mibcore

pytestmark = pytest.mark.skipif(not mibcore._extension.available(), reason="needs the C++ extension")

RNG = torch.tensor([1, 2])
_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)



def error_type(message):
    """As the Python checks: a wrong dtype is a TypeError, a wrong shape, value or device a ValueError."""
    return TypeError if re.search("int64 tensor|floating point|dtype|float32, float64", message) else ValueError

def cpu_kernel(op, *args):
    """Calls the CPU kernel of mibcore::<op> itself, also with a tensor on another device (a meta
    tensor here, as a CUDA one would be: the dispatcher would otherwise pick that device's kernel)."""
    return getattr(torch.ops.mibcore, op).default.redispatch(_CPU, *args)


def tensor_fusion_args(**overrides):
    args = {
        "inputs": [torch.randn(4, 2), torch.randn(4, 3)],
        "weight": torch.randn(5, 3 * 4),
        "bias": torch.randn(5),
        "dropout": 0.0,
        "rng": RNG,
    }
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"bias": torch.randn(5, dtype=torch.float64)},
         "tensor_fusion: bias must have weight's dtype Float, got Double"),
        ({"bias": torch.randn(5).to(torch.bfloat16)}, "tensor_fusion: bias must have weight's dtype"),
        ({"bias": torch.randn(5, device="meta")}, "tensor_fusion: bias must be on weight's device"),
        ({"bias": torch.randn(6)}, r"tensor_fusion: bias must be \[out\] = \[5\]"),
        ({"inputs": [torch.randn(4, 2), torch.randn(4, 3, dtype=torch.float64)]},
         r"tensor_fusion: inputs\[1\] must have weight's dtype"),
        ({"inputs": [torch.randn(4, 2), torch.randn(4, 3, device="meta")]},
         r"tensor_fusion: inputs\[1\] must be on weight's device"),
        ({"rng": torch.tensor([1.0, 2.0])}, "tensor_fusion: rng must be an int64 tensor"),
        ({"rng": torch.tensor([[1, 2]])}, r"tensor_fusion: rng must have shape \[2\]"),
        ({"rng": torch.tensor([1, 2], device="meta")}, "tensor_fusion: rng must be on weight's device"),
        ({"dropout": 1.0}, r"tensor_fusion: dropout must be in \[0, 1\)"),
    ],
)
def test_tensor_fusion_checks_name_the_argument(overrides, match):
    args = tensor_fusion_args(**overrides)
    with pytest.raises(error_type(match), match=match):
        cpu_kernel("tensor_fusion", args["inputs"], args["weight"], args["bias"], args["dropout"], args["rng"])


@pytest.mark.parametrize(
    "grad_y, match",
    [
        (torch.randn(4, 6), r"tensor_fusion_backward: grad_y must be \[4, 5\], got \[4, 6\]"),
        (torch.ones(4, 5, dtype=torch.int64), "tensor_fusion_backward: grad_y must be floating point"),
        (torch.randn(4, 5, device="meta"), "tensor_fusion_backward: grad_y must be on weight's device"),
    ],
)
def test_tensor_fusion_backward_checks_grad_y(grad_y, match):
    args = tensor_fusion_args()
    with pytest.raises(error_type(match), match=match):
        cpu_kernel("tensor_fusion_backward", grad_y, args["inputs"], args["weight"], 0.0, RNG)


@pytest.mark.parametrize(
    "rng, match",
    [
        (torch.tensor([1.0, 2.0]), "reparameterize_kl: rng must be an int64 tensor"),
        (torch.tensor([1, 2, 3]), r"reparameterize_kl: rng must have shape \[2\]"),
        (torch.tensor([1, 2], device="meta"), "reparameterize_kl: rng must be on mu's device"),
    ],
)
def test_reparameterize_kl_checks_rng(rng, match):
    mu = torch.zeros(3, 4)
    with pytest.raises(error_type(match), match=match):
        cpu_kernel("reparameterize_kl", mu, mu, rng, 0, -5.0, True)


def test_reparameterize_kl_backward_checks_the_gradients_device():
    mu = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="reparameterize_kl_backward: grad_z must be on mu's device"):
        cpu_kernel("reparameterize_kl_backward", torch.zeros(3, 4, device="meta"), None, mu, mu, RNG, 0, -5.0, True)


def test_dropout_checks_rng_device():
    with pytest.raises(ValueError, match="dropout: rng must be on x's device"):
        cpu_kernel("dropout", torch.zeros(8), 0.5, torch.tensor([1, 2], device="meta"))
