"""MIB models: E-MIB, L-MIB, C-MIB and the model without IB, and a factory by name."""
from mibcore.models.mib import (CMIB, DROPOUT_FIELDS, EMIB, KL_REDUCTIONS, LMIB, MIB, MODALITIES, MODES, VARIANTS,
                                MIBConfig, build)

__all__ = ["CMIB", "DROPOUT_FIELDS", "EMIB", "KL_REDUCTIONS", "LMIB", "MIB", "MIBConfig", "MODALITIES", "MODES",
           "VARIANTS", "build"]
