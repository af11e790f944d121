"""Convergence: a small C-MIB trains the same with the fused backends as with the reference.

- The same random stream. The reference, made to draw its dropout masks and its samples through
  the Philox contract (one draw_rng per call, as the fused operators; the values from
  tests/philox.py), trains along the loss curve of the fused backends: every dropout on, a few
  hundred Adam steps in float32. The curves agree within fp32 rounding as the training amplifies
  it (the bound below); one wrong dropout mask in one step moves the curve beyond it.
- Its own random stream. With the reference's Bernoulli and randn draws, the final dev losses of
  several seeds agree in distribution with the fused backend's (a two-sample test).
"""
import contextlib
import statistics

import pytest
import torch

from mibcore import backends, models, reference
from mibcore.data import MultimodalDataset, make_synthetic
from mibcore.ops import SPECS
from mibcore.ops._spec import operator_replaced
from mibcore.ops.rng import draw_rng
from mibcore.train.optimizer import adam
from tests import philox
from tests.utils import backends as backends_of

DIMS = dict(text_dim=8, audio_dim=6, visual_dim=5)


def _data(seed=0):
    data = make_synthetic(n_train=64, n_dev=64, n_test=1, seq_len=5, seed=seed, **DIMS)
    return MultimodalDataset(data["train"]), MultimodalDataset(data["dev"])


def _model(seed):
    torch.manual_seed(seed)
    return models.build("cmib", fusion="tensor", d=8, hidden=16, heads=2, layers=1, **DIMS)


def _train(backend, steps, seed=0, batch=16, device="cpu"):
    """The training loss at every step and the final dev loss (eval mode) of a small C-MIB trained
    under `backend` on `device` with every dropout on, Adam lr 1e-3; its random draws from the seed."""
    train, dev = _data()
    model, losses = _model(seed).to(device), []
    optimizer = adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    with backends.use(backend):
        torch.manual_seed(seed + 1)
        for step in range(steps):
            idx = order[(step * batch) % len(train):][:batch]
            text, audio, visual, label = (t.to(device) for t in train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(model(text, audio, visual), label)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            text, audio, visual, label = (t.to(device) for t in dev[:])
            dev_loss = float(model.loss(model(text, audio, visual), label))
    return torch.tensor(losses, dtype=torch.float64), dev_loss


# The reference with the fused operators' random stream: each call draws its rng as they do, and
# the mask or eps comes from the Philox mirror.
def _philox_dropout(x, p, generator):
    keep = philox.dropout_keep_mask(x.shape, draw_rng(x.device, generator), 1.0 - p)  # (computed on the CPU)
    return reference.dropout(x, p, keep_mask=keep.to(x.device))


def _philox_dropout_add(x, h, p, generator):
    return x + _philox_dropout(h, p, generator)


def _philox_relu_dropout(x, p, generator):
    return _philox_dropout(torch.relu(x), p, generator)


def _philox_tensor_fusion(inputs, weight, bias, dropout, generator):
    return _with_philox_mask(inputs, weight, bias, dropout, draw_rng(inputs[0].device, generator))


def _with_philox_mask(inputs, weight, bias, dropout, rng):
    n = 1
    for x in inputs:
        n *= x.shape[1] + 1
    keep = philox.dropout_keep_mask((inputs[0].shape[0], n), rng, 1.0 - dropout)
    return reference.tensor_fusion(list(inputs), weight, bias, dropout=dropout, keep_mask=keep.to(inputs[0].device))


def _philox_reparameterize_kl(mu, scale, parameterization, shift, sample, reduction, generator):
    eps = philox.normal_like(mu, draw_rng(mu.device, generator))
    return reference.reparameterize_kl(mu, scale, parameterization=parameterization, shift=shift,
                                                         sample=sample, reduction=reduction, eps=eps)


PHILOX_REFERENCE = {"dropout": _philox_dropout, "dropout_add": _philox_dropout_add,
                    "relu_dropout": _philox_relu_dropout, "tensor_fusion": _philox_tensor_fusion,
                    "reparameterize_kl": _philox_reparameterize_kl}


@contextlib.contextmanager
def _reference_on_the_philox_stream():
    with contextlib.ExitStack() as stack:
        for name, fn in PHILOX_REFERENCE.items():
            stack.enter_context(operator_replaced(SPECS[name], "reference", fn))
        yield


def _curve_bound(reference):
    """How far two float32 trainings of the same model on the same random stream may drift apart:
    each step's loss carries a relative rounding error of order u * sqrt(depth) ~ 1e-6 at most
    here (u = 6e-8; sums of up to a few hundred products), and while the training is stable Adam
    adds such differences up at most linearly over the steps: 5e-7 * step relative. (Measured
    here: the cpu backend's curve equals the reference's bit for bit for 150 steps, then drifts by
    1e-5 relative at step 200; a wrong dropout mask in one step moves it by 6e-5 at once.)"""
    steps = torch.arange(1, len(reference) + 1, dtype=torch.float64)
    return 5e-7 * steps * reference.abs().clamp(min=1.0)


@pytest.fixture(scope="module")
def reference_curve():
    with _reference_on_the_philox_stream():
        losses = _train("reference", steps=200)[0]
    assert float(losses[-20:].mean()) < 0.8 * float(losses[:20].mean())  # (it does train)
    return losses


@pytest.mark.parametrize("backend", backends_of("tensor_fusion", fused=True))
def test_fused_backends_train_along_the_reference_curve(backend, reference_curve):
    steps = 200 if backend == "cpu" else 3  # (the Triton interpreter is slow)
    losses = _train(backend, steps=steps)[0]  # (the conftest sets the cpu backend's level)
    _assert_along(losses, reference_curve[:steps], backend)


def _assert_along(losses, reference, what):
    gap = (losses - reference).abs()
    assert bool((gap <= _curve_bound(reference)).all()), (
        f"{what}: the loss curve leaves the reference's at step {int((gap > _curve_bound(reference)).nonzero()[0])}"
        f" (max gap {float(gap.max()):.3g})")


def test_the_curve_comparison_sees_one_wrong_mask(reference_curve):
    # The comparison above can fail: in one step the fusion's dropout mask comes from the next
    # Philox offset, as a kernel reading its offset wrongly would draw it.
    calls = []

    def wrong_offset_once(inputs, weight, bias, dropout, generator):
        calls.append(1)
        rng = draw_rng(inputs[0].device, generator) + torch.tensor([0, int(len(calls) == 30)])
        return _with_philox_mask(inputs, weight, bias, dropout, rng)

    with _reference_on_the_philox_stream(), operator_replaced(SPECS["tensor_fusion"], "reference", wrong_offset_once):
        losses = _train("reference", steps=40)[0]
    gap = (losses - reference_curve[:40]).abs()
    assert bool((gap[:29] == 0).all())  # (the same computation until then: bit for bit)
    assert float(gap[29]) > float(_curve_bound(reference_curve)[29])


def test_final_losses_agree_in_distribution_with_the_reference_draws():
    # Welch's t statistic of the final dev losses over 6 seeds: |t| < 3.2 (two-sided p ~ 0.01 at
    # ~10 degrees of freedom) when both backends train alike.
    _assert_same_distribution("cpu", "cpu")


def _assert_same_distribution(backend, device, seeds=range(6)):
    fused = [_train(backend, steps=80, seed=s, device=device)[1] for s in seeds]
    reference_losses = [_train("reference", steps=80, seed=s, device=device)[1] for s in seeds]
    se = (statistics.variance(fused) / len(fused) + statistics.variance(reference_losses) / len(reference_losses)) ** 0.5
    t = (statistics.mean(fused) - statistics.mean(reference_losses)) / se
    assert abs(t) < 3.2, (fused, reference_losses, t)


# On a GPU: the fused CUDA and (compiled) Triton backends along the reference's curve, on CUDA
# tensors, the reference drawing on the same Philox stream; and the two-sample test with the
# reference's own draws.
@pytest.mark.gpu
@pytest.mark.parametrize("backend", backends_of("tensor_fusion", "cuda", fused=True))
def test_fused_backends_train_along_the_reference_curve_on_cuda(backend):
    with _reference_on_the_philox_stream():
        reference_curve = _train("reference", steps=100, device="cuda")[0]
    _assert_along(_train(backend, steps=100, device="cuda")[0], reference_curve, f"{backend} on cuda")


@pytest.mark.gpu
def test_final_losses_agree_in_distribution_with_the_reference_draws_on_cuda():
    _assert_same_distribution("auto", "cuda")
