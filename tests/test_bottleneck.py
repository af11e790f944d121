"""VariationalBottleneck against a module built from the paper's separate reference layers."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mibcore
from mibcore.nn import VariationalBottleneck
from tests.test_reparameterize_kl import BACKENDS, predicted_eps


class PaperHead(nn.Module):
    """The head of the MIB code: encoder, fc_mu, fc_std, softplus(raw - 5), mean KL."""

    def __init__(self, d, hidden):
        super().__init__()
        self.encoder = nn.Linear(d, hidden)
        self.fc_mu = nn.Linear(hidden, d)
        self.fc_std = nn.Linear(hidden, d)

    def forward(self, x, eps):
        h = F.relu(self.encoder(x))
        mu, std = self.fc_mu(h), F.softplus(self.fc_std(h) - 5, beta=1)
        z = mu + std * eps
        kl = 0.5 * torch.mean(mu.pow(2) + std.pow(2) - 2 * std.log() - 1)
        return z, mu, std, kl


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_paper_head_forward_and_backward(backend):
    torch.manual_seed(0)
    d, hidden, batch = 10, 32, 7
    paper = PaperHead(d, hidden).double()
    head = VariationalBottleneck(d, d, hidden).double()
    head.load_separate_heads(paper.encoder, paper.fc_mu, paper.fc_std)
    x = torch.randn(batch, d, dtype=torch.float64)
    with mibcore.backends.use(backend):
        out = head(x, generator=torch.Generator().manual_seed(3))
    eps = predicted_eps(backend, torch.empty(batch, d, dtype=torch.float64), 3).double()
    z, mu, std, kl = paper(x, eps)
    # eps is float32 on the fused backends, so z matches to float32 precision there.
    torch.testing.assert_close(out.z, z, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.mu, mu)
    torch.testing.assert_close(out.std, std)
    torch.testing.assert_close(out.kl, kl)
    (out.z.sum() + out.kl).backward()
    (z.sum() + kl).backward()
    torch.testing.assert_close(head.encoder.weight.grad, paper.encoder.weight.grad, rtol=1e-6, atol=1e-8)
    grad_heads = torch.cat([paper.fc_mu.weight.grad, paper.fc_std.weight.grad])
    torch.testing.assert_close(head.heads.weight.grad, grad_heads, rtol=1e-6, atol=1e-8)


def test_eval_uses_mu_unless_asked_to_sample():
    head = VariationalBottleneck(4, 3, 8).eval()
    x = torch.randn(5, 4)
    out = head(x)
    assert torch.equal(out.z, out.mu)
    head.sample_in_eval = True
    assert not torch.equal(head(x).z, out.mu)


def test_autocast_bf16_runs_gemms_in_bf16():
    head = VariationalBottleneck(6, 4, 16)
    x = torch.randn(3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    assert out.z.dtype == torch.bfloat16 and out.mu.dtype == torch.bfloat16
    assert out.kl.dtype == torch.float32
    out.kl.backward()
    assert head.heads.weight.grad.dtype == torch.float32


def test_state_dict_and_bad_arguments():
    head = VariationalBottleneck(6, 4, 16, kl_reduction="batchmean")
    assert set(head.state_dict()) == {"encoder.weight", "encoder.bias", "heads.weight", "heads.bias"}
    assert head.heads.weight.shape == (8, 16)
    with pytest.raises(ValueError, match="kl_reduction"):
        VariationalBottleneck(6, 4, kl_reduction="avg")
    with pytest.raises(ValueError, match="latent_features must be a positive int"):
        VariationalBottleneck(6, 0)


FUSED = [b for b in BACKENDS if b != "reference"]


@pytest.mark.parametrize("backend", FUSED)
def test_std_is_computed_only_when_read(backend):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    head = VariationalBottleneck(6, 4, 16)
    x = torch.randn(5, 6)
    with mibcore.backends.use(backend), Ops() as ops:
        out = head(x)
        forward_ops = list(ops.names)
        std = out.std
    assert not [n for n in forward_ops if "softplus" in n]  # the fused operator computes std inside
    assert [n for n in ops.names if "softplus" in n]
    scale = head.heads(torch.relu(head.encoder(x)))[:, 4:]
    torch.testing.assert_close(std, F.softplus(scale - 5))
    # read as the named tuple it was: attributes, unpacking, indexing, fields
    z, mu, std2, kl = out
    assert std2 is std and out[2] is std and out[-1] is out.kl and out[:2] == (out.z, out.mu)
    assert len(out) == 4 and list(out._asdict()) == ["z", "mu", "std", "kl"]
    std.sum().backward()  # std has its own gradient path
    assert head.heads.weight.grad[4:].abs().sum() > 0 and head.heads.weight.grad[:4].abs().sum() == 0
