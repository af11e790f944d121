"""The constants shared across languages: C++ (exposed by the extension) equals mibcore.constants."""
import pytest
import torch

import mibcore
from mibcore import constants

_CPP_DTYPE_NAMES = {"Half": torch.float16, "BFloat16": torch.bfloat16, "Float": torch.float32, "Double": torch.float64}


@pytest.mark.skipif("cpu" not in mibcore.backends.available("cpu"), reason="needs the extension")
def test_cpp_constants_equal_the_python_table():
    cpp = dict(item.split("=") for item in torch.ops.mibcore.constants().split(";"))
    for name, code in constants.PARAMETERIZATION_IDS.items():
        assert int(cpp.pop(f"parameterization.{name}")) == code
    assert float(cpp.pop("softplus_threshold")) == constants.SOFTPLUS_THRESHOLD
    for key in [k for k in cpp if k.startswith("accumulation.")]:
        dtype = _CPP_DTYPE_NAMES[key.split(".")[1]]
        assert _CPP_DTYPE_NAMES[cpp.pop(key)] == constants.accumulation_dtype(dtype), key
    assert not cpp, f"C++ constants without a Python counterpart: {cpp}"


def test_triton_constants_come_from_the_table():
    pytest.importorskip("triton")
    from mibcore.kernels import _math

    assert _math.SOFTPLUS_THRESHOLD == constants.SOFTPLUS_THRESHOLD
    assert (_math.SOFTPLUS, _math.LOGVAR, _math.STD) == tuple(constants.PARAMETERIZATION_IDS.values())
