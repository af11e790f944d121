"""Argument checks of the Triton operators called directly (torch.ops.mibcore.*_triton*): each
checks, before any allocation or launch, the shapes its kernels index by (the rules of its
public function, declared once per operator in mibcore/ops/<op>.py), as the C++ host code does
(tests/test_host_checks.py). Each case here was a memory error or a wrong number: on a GPU, an
illegal memory access. tests/test_fuzz.py fuzzes the same boundary."""
import pytest
import torch

import mibcore

pytestmark = pytest.mark.skipif("triton" not in mibcore.backends.available("cpu"),
                                reason="needs the triton backend on CPU tensors (TRITON_INTERPRET=1)")

RNG = torch.tensor([1, 2])
OPS = torch.ops.mibcore


def _lmf(d0=4, d1=5, rank=2, out=6, narrow=None):
    inputs = [torch.randn(3, d0), torch.randn(3, d1)]
    factors = [torch.randn(rank, d0 + 1 if narrow is None else narrow, out), torch.randn(rank, d1 + 1, out)]
    return inputs, factors


CASES = [
    # A factor narrower than its input: `free(): invalid size` (SIGABRT) in the backward.
    (lambda: OPS.low_rank_fusion_triton_backward(torch.randn(3, 6), *_lmf(narrow=2), torch.ones(2)),
     r"low_rank_fusion_triton_backward: `factors\[0\]` must be \[rank, 5, out\] = \[2, 5, 6\], got \[2, 2, 6\]"),
    (lambda: OPS.low_rank_fusion_triton(*_lmf(narrow=2), torch.ones(2), torch.zeros(6)),
     r"low_rank_fusion_triton: `factors\[0\]` must be \[rank, 5, out\]"),
    (lambda: OPS.low_rank_fusion_triton_backward(torch.randn(3, 5), *_lmf(), torch.ones(2)),
     r"low_rank_fusion_triton_backward: `grad_y` must be \[B, out\] = \[3, 6\], got \[3, 5\]"),
    (lambda: OPS.low_rank_fusion_triton(*_lmf(), torch.ones(3), torch.zeros(6)),
     r"low_rank_fusion_triton: `rank_weights` must be \[2\] or \[1, 2\], got \[3\]"),
    # A weight too small for prod(d_i + 1): values read out of bounds (1e25, NaN).
    (lambda: OPS.tensor_fusion_triton([torch.randn(3, 4), torch.randn(3, 5)], torch.randn(2, 3), None, 0.0, RNG),
     r"tensor_fusion_triton: `weight` must be \[out, 30\]"),
    (lambda: OPS.tensor_fusion_triton([torch.randn(3, 4), torch.randn(3, 5)], torch.randn(2, 30), torch.randn(3),
                                      0.0, RNG),
     r"tensor_fusion_triton: `bias` must be \[2\]"),
    (lambda: OPS.tensor_fusion_triton_backward(torch.randn(3, 1), [torch.randn(3, 4), torch.randn(3, 5)],
                                               torch.randn(2, 30), 0.0, RNG),
     r"tensor_fusion_triton_backward: `grad_y` must be \[B, out\] = \[3, 2\], got \[3, 1\]"),
    (lambda: OPS.tensor_fusion_triton([torch.randn(3, 4), torch.randn(2, 5)], torch.randn(2, 30), None, 0.0, RNG),
     r"tensor_fusion_triton: `inputs\[1\]` must be \[B, d\] with B = 3"),
    (lambda: OPS.tensor_fusion_triton([torch.randn(3, 4), torch.randn(3, 5)], torch.randn(2, 30), None, 1.0, RNG),
     r"tensor_fusion_triton: `dropout` must be a number in \[0, 1\)"),
    # Zero width: a wrong product (zeros) on triton; refused as by the public function.
    (lambda: OPS.tensor_fusion_triton([torch.randn(3, 0), torch.randn(3, 2)], torch.ones(1, 3), None, 0.0, RNG),
     r"tensor_fusion_triton: `inputs\[0\]` must have at least one feature"),
    (lambda: OPS.low_rank_fusion_triton([torch.randn(3, 0), torch.randn(3, 2)],
                                        [torch.randn(1, 1, 2), torch.randn(1, 3, 2)], torch.ones(1), torch.zeros(2)),
     r"low_rank_fusion_triton: `inputs\[0\]` must have at least one feature"),
    # Mismatched gradients and operands of the elementwise operators: read out of bounds.
    (lambda: OPS.relu_dropout_triton_backward(torch.randn(3), torch.randn(100), 0.5),
     r"relu_dropout_triton_backward: `grad_y` must have the shape of `y` \[100\], got \[3\]"),
    (lambda: OPS.dropout_add_triton(torch.randn(3), torch.randn(100), 0.5, RNG),
     r"dropout_add_triton: `x` must have the shape of `h` \[100\], got \[3\]"),
    (lambda: OPS.dropout_triton(torch.randn(3), 1.5, RNG), r"dropout_triton: `p` must be a number in \[0, 1\)"),
    (lambda: OPS.reparameterize_kl_triton(torch.randn(4, 5), torch.randn(2, 5), RNG, 0, -5.0, True),
     r"reparameterize_kl_triton: `scale` must have the shape of `mu` \[4, 5\], got \[2, 5\]"),
    (lambda: OPS.reparameterize_kl_triton(torch.randn(4, 5), torch.randn(4, 5), RNG, 7, -5.0, True),
     r"reparameterize_kl_triton: `parameterization` must be one of 0, 1, 2, got 7"),
    (lambda: OPS.reparameterize_kl_triton_backward(torch.randn(2, 5), None, torch.randn(4, 5), torch.randn(4, 5), RNG,
                                                   0, -5.0, True),
     r"reparameterize_kl_triton_backward: `grad_z` must have shape \[4, 5\] \(or one that broadcasts to it\)"),
    (lambda: OPS.reparameterize_kl_triton_backward(None, torch.randn(5), torch.randn(4, 5), torch.randn(4, 5), RNG,
                                                   0, -5.0, True),
     r"reparameterize_kl_triton_backward: `grad_kl` must have shape \[4\]"),
]


@pytest.mark.parametrize("call, match", CASES, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(CASES)])
def test_triton_operators_refuse_shapes_that_disagree(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", CASES[:4] + CASES[11:12],
                         ids=[f"meta-{i}" for i in range(5)])
def test_their_fakes_make_the_same_checks(call, match):
    # On meta tensors (torch.compile's fake tensors) the fakes run, with the same checks.
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        call()


def test_sizes_past_int64_are_refused_before_any_launch():
    # (2^21 + 1)^3 > 2^63: the column index wrapped around and the kernels ran on garbage.
    huge = torch.empty_strided((1, 2**21), (0, 0))
    with pytest.raises(ValueError, match=r"tensor_fusion_triton: `inputs` make a \[B, prod\(d_i \+ 1\)\] outer "
                                         r"product of 1 x 2097153 x 2097153 x 2097153 elements, 2\^63 or more"):
        OPS.tensor_fusion_triton([huge, huge, huge], torch.empty(1, 1), None, 0.0, RNG)
    # Just below 2^63 (a weight of stride 0): more work units than the kernels count in int32,
    # where the loops ran forever.
    x = torch.empty_strided((1, 2**20), (0, 0))
    weight = torch.empty_strided((1, (2**20 + 1) ** 3), (0, 0))
    with pytest.raises(ValueError, match=r"tensor_fusion_triton: `inputs` of sizes \[1048576, 1048576, 1048576\] "
                                         r"make \d+ units of work"):
        OPS.tensor_fusion_triton([x, x, x], weight, None, 0.0, RNG)


def test_the_public_function_refuses_the_same_sizes():
    huge = torch.empty_strided((1, 2**21), (0, 0))
    with pytest.raises(ValueError, match=r"tensor_fusion: `inputs` make a \[B, prod\(d_i \+ 1\)\] outer product"):
        mibcore.functional.tensor_fusion([huge, huge, huge], torch.empty(1, 1))


def test_consistent_calls_still_run():
    # Gradients broadcast as in the C++ backward (a [1, D] grad_z, a scalar grad_kl).
    mu = torch.randn(4, 5)
    grad_mu, _ = OPS.reparameterize_kl_triton_backward(torch.ones(1, 5), torch.ones(()), mu, mu.abs() + 0.5, RNG,
                                                       2, 0.0, False)
    torch.testing.assert_close(grad_mu, 1 + mu)
    y = OPS.tensor_fusion_triton([torch.ones(2, 1), torch.ones(2, 1)], torch.ones(3, 4), None, 0.0, RNG)
    torch.testing.assert_close(y, torch.full((2, 3), 4.0))
