"""The CUDA forward of tensor_fusion without a GPU: its launch plan, read from the one header the
launcher uses (csrc/include/mibcore/tensor_fusion_plan.h, compiled here with g++), and design rules
read from csrc/cuda/tensor_fusion_kernels.cu. The kernels themselves run on the CPU in `make
cuda-emu` (csrc/cuda_emu/run_cases.cpp: every dtype, tails, splits, misaligned pointers against a
float64 reference); their SASS is read by tests/test_cuda_build.py. Compiled, not yet run on a GPU.
"""
import json
import math
import os
import re
import shutil
import subprocess

import pytest

from benchmarks import step_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "csrc", "cuda", "tensor_fusion_kernels.cu")
H200_SMS = 132
PAPER = (32, 50, 51 ** 3)  # B, out, N: three 50-d modalities plus the appended 1

_DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include "mibcore/tensor_fusion_plan.h"
int main(int argc, char** argv) {
  for (int a = 1; a + 3 < argc; a += 4) {
    const int64_t B = std::atoll(argv[a]), out = std::atoll(argv[a + 1]), N = std::atoll(argv[a + 2]);
    const int64_t sms = std::atoll(argv[a + 3]);
    for (int mma = 0; mma < 2; ++mma) {
      const mibcore::FusionTile t = mma ? mibcore::kFusionMmaTile : mibcore::kFusionFmaTile;
      const mibcore::FusionPlan p = mibcore::fusion_plan(B, out, N, sms, t);
      std::printf("{\"B\": %lld, \"out\": %lld, \"N\": %lld, \"sms\": %lld, \"mma\": %d, \"bm\": %d, \"bn\": %d, "
                  "\"bk\": %d, \"tiles_m\": %lld, \"tiles_n\": %lld, \"splits\": %lld, \"chunk\": %lld, "
                  "\"blocks\": %lld, \"workspace\": %lld}\n", (long long)B, (long long)out, (long long)N,
                  (long long)sms, mma, t.bm, t.bn, t.bk, (long long)p.tiles_m, (long long)p.tiles_n,
                  (long long)p.splits, (long long)p.chunk, (long long)p.blocks,
                  (long long)mibcore::fusion_workspace_bytes(p, B, out, 4));
    }
  }
}
"""


@pytest.fixture(scope="module")
def plan_tool(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    d = tmp_path_factory.mktemp("plan")
    (d / "plan.cpp").write_text(_DRIVER)
    subprocess.run([cxx, "-std=c++20", "-O1", "-I", os.path.join(ROOT, "csrc", "include"), str(d / "plan.cpp"),
                    "-o", str(d / "plan")], check=True, capture_output=True, text=True)

    def plans(*shapes):
        args = [str(v) for shape in shapes for v in shape]
        out = subprocess.run([str(d / "plan"), *args], check=True, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines()]
    return plans


def _check_consistent(p):
    """What every plan must satisfy: the splits cover [0, N), none is empty."""
    assert p["chunk"] > 0, p
    assert (p["splits"] - 1) * p["chunk"] < p["N"] <= p["splits"] * p["chunk"], p
    assert p["tiles_m"] == math.ceil(p["B"] / p["bm"]) and p["tiles_n"] == math.ceil(p["out"] / p["bn"]), p
    assert p["blocks"] == p["tiles_m"] * p["tiles_n"] * p["splits"], p
    assert p["workspace"] == (p["splits"] * p["B"] * p["out"] * 4 if p["splits"] > 1 else 0), p


def test_paper_shape_fills_the_h200_with_two_blocks_per_sm(plan_tool):
    for p in plan_tool((*PAPER, H200_SMS)):
        _check_consistent(p)
        assert p["tiles_m"] * p["tiles_n"] == 1, p  # one 32 x 64 tile: the contraction is what splits
        assert p["blocks"] >= 2 * H200_SMS, p
    fma, mma = plan_tool((*PAPER, H200_SMS))
    # exactly 2 per SM (one balanced wave: 277 would put 3 on 13 SMs); the README quotes these
    assert (fma["blocks"], mma["blocks"]) == (264, 264)


def test_small_and_large_shapes_plan_sensibly(plan_tool):
    shapes = [(1, 1, 4, 132), (3, 5, 15, 132), (33, 9, 816, 132), (512, 64, 33 ** 3, 132),
              (4096, 1024, 65 ** 3, 132), (64, 16, 601 ** 3, 132), (32, 50, 51 ** 3, 1), (128, 64, 601 * 601, 108)]
    by_shape = {}
    for p in plan_tool(*shapes):
        _check_consistent(p)
        by_shape.setdefault((p["B"], p["out"], p["N"], p["sms"]), []).append(p)
        tiles = p["tiles_m"] * p["tiles_n"]
        if p["splits"] > 1:  # split only to reach 2 blocks per SM, in chunks of >= 4 slabs
            assert tiles < 2 * p["sms"] and p["chunk"] >= 4 * p["bk"], p
            assert p["blocks"] >= 2 * p["sms"] or p["chunk"] == 4 * p["bk"], p
    for p in by_shape[(1, 1, 4, 132)] + by_shape[(3, 5, 15, 132)]:
        assert p["splits"] == 1 and p["blocks"] == 1, p  # tiny: one block, no second kernel
    for p in by_shape[(4096, 1024, 65 ** 3, 132)]:
        assert p["splits"] == 1 and p["blocks"] == 128 * 16, p  # enough tiles already
    for p in by_shape[(512, 64, 33 ** 3, 132)] + by_shape[(64, 16, 601 ** 3, 132)]:
        assert p["blocks"] >= 264, p
    for p in by_shape[(32, 50, 51 ** 3, 1)]:
        assert p["splits"] == 2, p  # a 1-SM device: 2 blocks


# ---------------------------------------------------------------- design rules, from the source
def _code(path):
    with open(path) as f:
        return re.sub(r"//[^\n]*", "", f.read())


def _forward_source():
    code = _code(KERNELS)
    return code[code.index("struct Outer"):code.index("grad_weight_kernel")]


def test_forward_is_deterministic_and_draws_philox_once_per_4_elements():
    fwd = _forward_source()
    assert "atomicAdd" not in fwd  # no float atomics: the splits are summed in order
    assert "for (int64_t s = 0; s < splits; ++s)" in fwd  # reduce_splits_kernel's fixed order
    # the only Philox call of the forward: one block of 4 keep decisions (keep_bits), per span row
    assert fwd.count("philox_block(") == 1 and "keep_bits(" in fwd
    assert "dropout_scale_at(" not in fwd and "normal_" not in fwd


def test_fp16_bf16_forward_runs_on_tensor_cores():
    fwd = _forward_source()
    assert "wmma::mma_sync" in fwd and "wmma::accumulator, 16, 16, 16, float" in fwd
    assert "forward_mma_kernel<scalar_t><<<" in _code(KERNELS)


def test_launch_count_of_the_cuda_forward_is_pinned():
    # 6 torch launches of the glue (ones + cat for each of 3 factors) + the kernel + the sum of
    # the splits (the step's B 32 splits the contraction)
    assert step_ops.CUDA_LAUNCHES["mibcore::tensor_fusion"] == 8
    assert step_ops.CUDA_LAUNCHES["mibcore::tensor_fusion_backward"] == 15
