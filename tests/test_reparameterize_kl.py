"""reparameterize_kl on every backend that serves CPU tensors here, against float64 oracles.

The fused backends draw eps from Philox (the randomness contract); tests/philox.py
predicts it, so z, the KL and every gradient are checked exactly, not statistically.
"""
import pytest
import torch

import mibcore
from mibcore import functional as MF
from mibcore.ops.rng import draw_rng
from tests import philox
from tests import oracle, utils
from tests.utils import DTYPES

BACKENDS = utils.backends("reparameterize_kl")
FUSED = utils.backends("reparameterize_kl", fused=True)
PARAMS = mibcore.constants.PARAMETERIZATIONS
SHAPES = [(1, 1), (3, 7), (33, 257), (2, 3, 5), (7,)]


def make_inputs(shape, parameterization, dtype=torch.float32, requires_grad=False):
    mu = torch.randn(shape, dtype=torch.float64)
    scale = torch.randn(shape, dtype=torch.float64)
    if parameterization == "std":
        scale = scale.abs() + 0.1
    mu, scale = mu.to(dtype), scale.to(dtype)
    return mu.requires_grad_(requires_grad), scale.requires_grad_(requires_grad)


def predicted_eps(backend, mu, seed):
    """The eps that `backend` draws for a torch.Generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    if backend == "reference":
        dtype = torch.float64 if mu.dtype == torch.float64 else torch.float32
        return torch.randn(mu.shape, dtype=dtype, generator=generator)
    return philox.normal_like(mu, draw_rng("cpu", generator))


def run(backend, mu, scale, seed=7, **kwargs):
    with mibcore.backends.use(backend):
        return MF.reparameterize_kl(mu, scale, generator=torch.Generator().manual_seed(seed), **kwargs)


assert_close = utils.assert_close


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("parameterization", PARAMS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_oracle(backend, parameterization, shape):
    mu, scale = make_inputs(shape, parameterization)
    z, kl = run(backend, mu, scale, parameterization=parameterization, reduction="none")
    eps = predicted_eps(backend, mu, 7)
    std = oracle.std_float64(scale, parameterization, -5.0)
    assert z.dtype == mu.dtype and z.shape == mu.shape
    assert kl.dtype == torch.float32 and kl.shape == mu.shape[:-1]
    assert_close(z, mu.double() + std * eps.double(), torch.float32)
    assert_close(kl, oracle.kl_rows_float64(mu, scale, parameterization, -5.0), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(backend, dtype):
    mu, scale = make_inputs((5, 19), "softplus", dtype)
    z, kl = run(backend, mu, scale, reduction="none", shift=2.0)
    eps = predicted_eps(backend, mu, 7)
    std = oracle.std_float64(scale, "softplus", 2.0)
    assert z.dtype == dtype
    assert kl.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    # eps is a float32 quantity on every backend, so z is only as exact as float32 for float64.
    assert_close(z, mu.double() + std * eps.double(), dtype if dtype.itemsize < 4 else torch.float32)
    # The KL accumulates in fp32 (fp64) whatever the input dtype.
    assert_close(kl, oracle.kl_rows_float64(mu, scale, "softplus", 2.0), max(dtype, torch.float32, key=lambda d: d.itemsize))


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy, in the Triton interpreter
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("parameterization", PARAMS)
def test_half_inputs_round_the_float32_result_once(backend, dtype, parameterization):
    # fp16/bf16 compute in fp32: outputs and gradients are exactly the fp32 computation on the
    # upcast values, rounded once to nearest even (this checks the CPU kernels' conversions,
    # including the AVX-512 path's, bit for bit), NaN and infinities included.
    mu, scale = make_inputs((3, 77), parameterization, dtype)
    mu[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    scale[1, :2] = torch.tensor([float("nan"), 65504.0 if dtype == torch.float16 else 1e30], dtype=dtype)
    grad_z = torch.randn(mu.shape).to(dtype)
    grad_kl = torch.randn(3)
    results = []
    for inputs in ((mu, scale), (mu.float(), scale.float())):
        m, s = (t.clone().requires_grad_() for t in inputs)
        z, kl = run(backend, m, s, parameterization=parameterization, reduction="none")
        torch.autograd.backward((z, kl), (grad_z.to(z.dtype), grad_kl))
        results.append((z, kl, m.grad, s.grad))
    (z, kl, gm, gs), (z32, kl32, gm32, gs32) = results
    exact = dict(rtol=0, atol=0, equal_nan=True)
    if backend == "triton" and dtype == torch.bfloat16:
        # The Triton interpreter (numpy) truncates fp32 -> bf16 even with
        # fp_downcast_rounding="rtne"; compiled Triton rounds to nearest even. One bf16 ulp.
        exact = dict(rtol=2.0**-7, atol=1e-30, equal_nan=True)
    torch.testing.assert_close(z, z32.to(dtype), **exact)
    torch.testing.assert_close(kl, kl32, **exact)
    torch.testing.assert_close(gm, gm32.to(dtype), **exact)
    torch.testing.assert_close(gs, gs32.to(dtype), **exact)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ("none", "sum", "mean", "batchmean"))
def test_reductions(backend, reduction):
    mu, scale = make_inputs((4, 6, 9), "logvar")
    _, kl = run(backend, mu, scale, parameterization="logvar", reduction=reduction)
    expected = oracle.reduce(oracle.kl_rows_float64(mu, scale, "logvar", 0.0), reduction, mu.numel())
    assert_close(kl, expected, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("parameterization", PARAMS)
def test_gradients_equal_analytic_formula_given_eps(backend, parameterization):
    mu, scale = make_inputs((6, 37), parameterization, requires_grad=True)
    z, kl_rows = run(backend, mu, scale, parameterization=parameterization, reduction="none")
    grad_z, grad_kl = torch.randn_like(z), torch.randn_like(kl_rows)
    torch.autograd.backward((z, kl_rows), (grad_z, grad_kl))
    eps = predicted_eps(backend, mu, 7)
    expected_mu, expected_scale = oracle.grads_float64(mu.detach(), scale.detach(), eps, parameterization, -5.0, grad_z, grad_kl)
    assert_close(mu.grad, expected_mu, torch.float32)
    assert_close(scale.grad, expected_scale, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_only_kl_and_only_z(backend):
    mu, scale = make_inputs((3, 11), "softplus", requires_grad=True)
    _, kl = run(backend, mu, scale)
    kl.backward()
    expected_mu, expected_scale = oracle.grads_float64(
        mu.detach(), scale.detach(), torch.zeros(3, 11), "softplus", -5.0, torch.zeros(3, 11), torch.full((3,), 1 / 33)
    )
    assert_close(mu.grad, expected_mu, torch.float32)
    assert_close(scale.grad, expected_scale, torch.float32)
    mu.grad = scale.grad = None
    z, _ = run(backend, mu, scale)
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("parameterization", PARAMS)
def test_sample_false_kl_and_gradients(backend, parameterization):
    # Without sampling: z = mu, the KL and its gradients as with eps = 0, on every backend.
    mu, scale = make_inputs((5, 41), parameterization, requires_grad=True)
    z, kl_rows = run(backend, mu, scale, parameterization=parameterization, sample=False, reduction="none")
    assert_close(kl_rows, oracle.kl_rows_float64(mu.detach(), scale.detach(), parameterization, -5.0), torch.float32)
    grad_z, grad_kl = torch.randn_like(z), torch.randn_like(kl_rows)
    torch.autograd.backward((z, kl_rows), (grad_z, grad_kl))
    zeros = torch.zeros(mu.shape, dtype=torch.float64)
    expected_mu, expected_scale = oracle.grads_float64(mu.detach(), scale.detach(), zeros, parameterization, -5.0,
                                                       grad_z, grad_kl)
    assert_close(mu.grad, expected_mu, torch.float32)
    assert_close(scale.grad, expected_scale, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_false_returns_mu_exactly(backend):
    mu, scale = make_inputs((4, 9), "softplus", torch.bfloat16)
    scale[0, 0] = float("inf")  # std = inf must not turn z into NaN
    z, kl = run(backend, mu, scale, sample=False, reduction="none")
    assert torch.equal(z, mu)
    assert not torch.isfinite(kl[0]) and torch.isfinite(kl[1:]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    mu, scale = make_inputs((9, 5), "softplus")
    mu_t, scale_t = mu.t(), scale.t()  # [5, 9], not contiguous
    z, kl = run(backend, mu_t, scale_t, reduction="none")
    z_ref, kl_ref = run(backend, mu_t.contiguous(), scale_t.contiguous(), reduction="none")
    torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
    torch.testing.assert_close(kl, kl_ref, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0,)])
def test_empty(backend, shape):
    mu, scale = make_inputs(shape, "softplus", requires_grad=True)
    z, kl = run(backend, mu, scale, reduction="none")
    assert z.shape == shape and kl.shape == shape[:-1]
    assert (kl == 0).all()
    (z.sum() + kl.sum()).backward()
    assert mu.grad.shape == shape
    _, kl_sum = run(backend, mu, scale, reduction="sum")
    assert kl_sum.item() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_deep_negative_softplus_is_finite_and_correct(backend):
    # softplus(-205) underflows fp32 to 0: the paper's log(std) gives -inf there.
    mu = torch.zeros(2, 8, requires_grad=True)
    scale = torch.full((2, 8), -200.0, requires_grad=True)
    z, kl = run(backend, mu, scale, reduction="sum")
    kl.backward()
    expected = oracle.kl_rows_float64(mu.detach(), scale.detach(), "softplus", -5.0).sum()
    assert torch.isfinite(kl) and torch.isfinite(scale.grad).all() and torch.isfinite(z).all()
    torch.testing.assert_close(kl.double(), expected, rtol=1e-6, atol=0)
    # d KL / d scale = std * sigmoid(x) - 1 -> -1 per element.
    torch.testing.assert_close(scale.grad, torch.full_like(scale, -1.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_inf_propagate(backend):
    mu, scale = make_inputs((2, 6), "softplus")
    mu[0, 1] = float("nan")
    scale[1, 2] = float("nan")
    mu[1, 4] = float("inf")
    z, kl = run(backend, mu, scale, reduction="none")
    assert torch.isnan(z[0, 1]) and torch.isnan(z[1, 2]) and torch.isinf(z[1, 4])
    assert torch.isnan(kl).all()  # each row holds a NaN (inf - inf is not produced: mu^2 = inf, row 1 has NaN)
    mask = torch.ones_like(z, dtype=torch.bool)
    mask[0, 1] = mask[1, 2] = mask[1, 4] = False
    assert torch.isfinite(z[mask]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_scales(backend):
    mu = torch.tensor([[0.0, 1e3, -1e3, 1e-30]])
    scale = torch.tensor([[30.0, 80.0, -80.0, -19.9]])
    z, kl = run(backend, mu, scale, reduction="none", shift=0.0)
    eps = predicted_eps(backend, mu, 7)
    std = oracle.std_float64(scale, "softplus", 0.0)
    assert_close(z, mu.double() + std * eps.double(), torch.float32)
    assert_close(kl, oracle.kl_rows_float64(mu, scale, "softplus", 0.0), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eps_is_standard_normal(backend):
    n = 1 << 16 if backend != "triton" else 1 << 12
    mu, scale = torch.zeros(n // 64, 64), torch.zeros(n // 64, 64)
    z, _ = run(backend, mu, scale, parameterization="logvar", seed=11)  # std = 1, so eps = z
    eps = z.flatten().double()
    assert abs(eps.mean().item()) < 5 / n**0.5
    assert abs(eps.var().item() - 1) < 5 * (2 / n) ** 0.5
    assert abs((eps**3).mean().item()) < 5 * (15 / n) ** 0.5
    assert abs((eps**4).mean().item() - 3) < 5 * (96 / n) ** 0.5
    assert oracle.ks_statistic_normal(eps) < oracle.ks_critical(n)


def test_generator_reproducibility_and_manual_seed():
    mu, scale = make_inputs((5, 8), "softplus")
    for backend in BACKENDS:
        a, _ = run(backend, mu, scale, seed=3)
        b, _ = run(backend, mu, scale, seed=3)
        c, _ = run(backend, mu, scale, seed=4)
        assert torch.equal(a, b) and not torch.equal(a, c)
        with mibcore.backends.use(backend):
            torch.manual_seed(5)
            d, _ = MF.reparameterize_kl(mu, scale)
            torch.manual_seed(5)
            e, _ = MF.reparameterize_kl(mu, scale)
        assert torch.equal(d, e)


@pytest.mark.skipif(len(FUSED) < 2, reason="needs two fused backends (cpu and triton)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_backends_draw_the_same_samples(dtype):
    mu, scale = make_inputs((13, 71), "softplus", dtype)
    results = [run(backend, mu, scale, reduction="none") for backend in FUSED]
    for z, kl in results[1:]:
        torch.testing.assert_close(z, results[0][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(kl, results[0][1], rtol=1e-6, atol=1e-6)


def test_philox_known_answers():
    # Random123's published Philox4x32-10 test vectors.
    zero = torch.zeros(1, dtype=torch.int64)
    ones = torch.full((1,), 0xFFFFFFFF, dtype=torch.int64)
    assert [int(v) for v in philox.philox4x32_10(zero, zero, zero, zero, 0, 0)] == [
        0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert [int(v) for v in philox.philox4x32_10(ones, ones, ones, ones, 0xFFFFFFFF, 0xFFFFFFFF)] == [
        0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("parameterization", PARAMS)
@pytest.mark.parametrize("sample", (True, False))
def test_gradcheck_float64(backend, parameterization, sample):
    mu, scale = make_inputs((3, 5), parameterization, torch.float64, requires_grad=True)

    def fn(m, s):
        z, kl = run(backend, m, s, parameterization=parameterization, sample=sample, reduction="none")
        return z, kl

    assert torch.autograd.gradcheck(fn, (mu, scale), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_opcheck(backend, dtype):
    forward = mibcore.backends.implementation("reparameterize_kl", backend)
    backward = getattr(torch.ops.mibcore, forward._schema.name.split("::")[1] + "_backward").default
    mu, scale = make_inputs((4, 9), "softplus", dtype, requires_grad=True)
    rng = torch.tensor([123, 456])
    torch.library.opcheck(forward, (mu, scale, rng, 0, -5.0, True))
    grads = (torch.randn_like(mu.detach()), torch.randn(4, dtype=mibcore.constants.accumulation_dtype(dtype)))
    torch.library.opcheck(backward, (*grads, mu.detach(), scale.detach(), rng, 1, 0.0, True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    mu, scale = make_inputs((6, 10), "softplus", requires_grad=True)

    def loss_fn(m, s):
        z, kl = MF.reparameterize_kl(m, s, sample=False)
        return (z * z).sum() + kl

    with mibcore.backends.use(backend):
        compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
        loss = compiled(mu, scale)
        loss.backward()
        eager_mu, eager_scale = [t.detach().clone().requires_grad_() for t in (mu, scale)]
        loss_fn(eager_mu, eager_scale).backward()
    torch.testing.assert_close(loss, loss_fn(mu, scale))
    torch.testing.assert_close(mu.grad, eager_mu.grad)
    torch.testing.assert_close(scale.grad, eager_scale.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_follows_input_dtype(backend):
    # fp32 inputs under bf16 autocast: an operator that followed autocast would return bf16.
    mu, scale = make_inputs((4, 8), "softplus", torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, kl = run(backend, mu, scale, reduction="none")
    assert z.dtype == torch.float32 and kl.dtype == torch.float32
    z_ref, kl_ref = run(backend, mu, scale, reduction="none")
    assert torch.equal(z, z_ref) and torch.equal(kl, kl_ref)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"scale": torch.zeros(3, 8)}, ValueError, "`scale` must have the shape"),
        ({"scale": torch.zeros(3, 7, dtype=torch.float64)}, TypeError, "`scale` must have the dtype"),
        ({"mu": torch.zeros(3, 7, dtype=torch.int64)}, TypeError, "`mu` must be a floating-point"),
        ({"mu": torch.tensor(1.0), "scale": torch.tensor(1.0)}, ValueError, "at least one dimension"),
        ({"reduction": "avg"}, ValueError, "`reduction` must be one of"),
        ({"parameterization": "var"}, ValueError, "`parameterization` must be one of"),
        ({"shift": float("nan")}, ValueError, "`shift` must be a finite number"),
        ({"sample": 1}, TypeError, "`sample` must be a bool"),
        ({"parameterization": "std", "scale": -torch.ones(3, 7)}, ValueError, "`scale` must be > 0"),
        ({"mu": [1.0]}, TypeError, "`mu` must be a torch.Tensor"),
        ({"generator": 5}, TypeError, "`generator` must be a torch.Generator"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_argument(backend, kwargs, error, match):
    args = {"mu": torch.zeros(3, 7), "scale": torch.zeros(3, 7)}
    args.update(kwargs)
    mu, scale = args.pop("mu"), args.pop("scale")
    with mibcore.backends.use(backend), pytest.raises(error, match=match):
        MF.reparameterize_kl(mu, scale, **args)


@pytest.mark.gpu
def test_cuda_backends_match_cpu_samples():
    mu, scale = make_inputs((33, 257), "softplus")
    z_cpu, kl_cpu = run("cpu", mu, scale, reduction="none")
    rng_cpu = draw_rng("cpu", torch.Generator().manual_seed(7))
    for backend in ("cuda", "triton"):
        if backend not in mibcore.backends.available("cuda"):
            continue
        op = mibcore.backends.implementation("reparameterize_kl", backend)
        z, kl = op(mu.cuda(), scale.cuda(), rng_cpu.cuda(), 0, -5.0, True)
        torch.testing.assert_close(z.cpu(), z_cpu, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kl.cpu(), kl_cpu, rtol=1e-5, atol=1e-5)
