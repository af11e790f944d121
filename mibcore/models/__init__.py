"""MIB models: E-MIB, L-MIB, C-MIB and the model without IB, a factory by name, and MIB around
one's own encoders (EncoderMIB)."""
from mibcore.models.mib import (CMIB, DROPOUT_FIELDS, EMIB, KL_REDUCTIONS, LMIB, MAX_MODALITIES, MIB, MODALITIES,
                                MODES, VARIANTS, EncoderMIB, MIBConfig, build)

__all__ = ["CMIB", "DROPOUT_FIELDS", "EMIB", "EncoderMIB", "KL_REDUCTIONS", "LMIB", "MAX_MODALITIES", "MIB",
           "MIBConfig", "MODALITIES", "MODES", "VARIANTS", "build"]
