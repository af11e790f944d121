"""The mirrored Philox, uniform and Box-Muller functions (bit words): Triton equals C++ and the
oracle, the vector code equals the scalar code (see tests/test_math_mirror.py)."""

import numpy as np
import pytest
import torch

from tests.math_probe import (
    BLOCKS, F32, MIRROR_ULPS, OFFSET, ORACLE_ULPS, SEED, WORDS, _assert_bits, _assert_close, _levels, cpp,
    needs_extension, triton_eval,
)


# ---------------------------------------------------------------- words: Philox, uniforms, Box-Muller
def _word_cases():
    g = np.random.default_rng(1)
    ra, rb = WORDS, torch.from_numpy(g.permutation(WORDS.numpy()))
    index = torch.cat([torch.arange(64), BLOCKS * 4 + 3])
    keep = F32(0.7)
    return {
        "pow2i": [torch.arange(-126, 128)],
        "uniform_from_bits": [WORDS],
        "box_muller": [ra, rb],
        "philox_block": [BLOCKS, torch.full_like(BLOCKS, SEED), torch.full_like(BLOCKS, OFFSET)],
        "normal_block": [BLOCKS, torch.full_like(BLOCKS, SEED), torch.full_like(BLOCKS, OFFSET)],
        "dropout_scale_at": [index, torch.full_like(index, SEED), torch.full_like(index, OFFSET),
                             torch.full_like(index, int(keep.view(np.uint32))),
                             torch.full_like(index, int(F32(1 / keep).view(np.uint32)))],
    }


WORD_CASES = _word_cases()
KEEP = F32(0.7)


def _word_oracle(name, x):
    x = [t.numpy() for t in x]
    if name == "pow2i":
        return [np.ldexp(1.0, x[0])]
    u = lambda w: ((w.astype(np.int64) >> 8) + 1) * 2.0 ** -24  # noqa: E731
    if name == "uniform_from_bits":
        return [u(x[0])]
    if name == "box_muller":
        rad = np.sqrt(-2 * np.log(u(x[0])))
        return [rad * np.cos(2 * np.pi * u(x[1])), rad * np.sin(2 * np.pi * u(x[1]))]
    return None


@needs_extension
@pytest.mark.parametrize("name", sorted(WORD_CASES))
def test_word_functions_triton_equal_cpp_and_oracle(name):
    x = WORD_CASES[name]
    got = cpp(name, x)
    kw = {"keep_prob": float(KEEP), "inv_keep": float(F32(1 / KEEP))} if name == "dropout_scale_at" else {}
    _assert_bits(triton_eval(name, x, **kw), got, f"{name}: Triton vs C++")
    want = _word_oracle(name, x)
    if want is not None:
        bound = ORACLE_ULPS.get(name, 0)
        rad = np.abs(want[0]) + np.abs(want[1]) if name == "box_muller" else None  # sin, cos cancel near 0
        for k, w in enumerate(want):
            _assert_close(got[k], w, bound, f"{name} output {k} vs float64", x[0].numpy(), rad)
    if name == "philox_block":  # Random123's known answers (csrc/tests/test_math.cpp has the same)
        kat = cpp(name, [torch.tensor([0, -1]), torch.tensor([0, -1]), torch.tensor([0, -1])])
        assert [int(v) for v in kat[:, 0]] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
        assert [int(v) for v in kat[:, 1]] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    if name == "normal_block":  # normal_block is box_muller of the block's two word pairs
        r = cpp("philox_block", x)
        pair01, pair23 = cpp("box_muller", [torch.from_numpy(r[0]), torch.from_numpy(r[1])]), \
            cpp("box_muller", [torch.from_numpy(r[2]), torch.from_numpy(r[3])])
        _assert_bits(got, np.concatenate([pair01, pair23]), "normal_block vs box_muller of philox_block")
    if name == "dropout_scale_at":
        r = cpp("philox_block", [x[0] >> 2, x[1], x[2]])
        words = r[x[0].numpy() & 3, np.arange(r.shape[1])]
        want = np.where(_word_oracle("uniform_from_bits", [torch.from_numpy(words)])[0] <= KEEP, F32(1 / KEEP), 0)
        _assert_bits(got[0], want.astype(F32), "dropout_scale_at vs the contract")


@needs_extension
@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("name", ["uniform_from_bits", "philox_block", "box_muller", "normal_block"])
def test_word_functions_vector_match_scalar(name, level):
    if level not in _levels():
        pytest.skip(f"this CPU does not run the {level} level")
    x = WORD_CASES[name]
    base = cpp(name, x)
    got = cpp(name, x, "vector", level)
    if name in ("uniform_from_bits", "philox_block"):
        _assert_bits(got, base, f"{name}: C++ vector at {level} vs scalar")
    else:
        rad = np.abs(base).reshape(-1, 2, base.shape[-1]).sum(1).repeat(2, 0)  # |a| + |b| of each pair
        _assert_close(got, base, MIRROR_ULPS[name], f"{name}: C++ vector at {level} vs scalar", None, rad)
