"""mibcore: fast, tested Multimodal Information Bottleneck (MIB) building blocks for PyTorch.

    from mibcore import functional as MF
    z, kl = MF.reparameterize_kl(mu, scale)            # fused reparameterization + KL
    y = MF.tensor_fusion([a, v, t], weight, bias)      # TFN + Linear

See README.md for backends, benchmarks and the support matrix.
"""
__version__ = "0.1.0"

from mibcore import backends, cpu_isa, functional, models, nn, reference  # noqa: E402

__all__ = ["__version__", "backends", "cpu_isa", "functional", "models", "nn", "reference"]
