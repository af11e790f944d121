"""MIB models: E-MIB, L-MIB, C-MIB and the model without IB, and a factory by name."""
from mibcore.models.mib import CMIB, EMIB, LMIB, MIB, MODALITIES, VARIANTS, MIBConfig, build

__all__ = ["CMIB", "EMIB", "LMIB", "MIB", "MIBConfig", "MODALITIES", "VARIANTS", "build"]
