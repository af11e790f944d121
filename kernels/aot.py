"""Ahead-of-time compilation of the Triton kernels for a GPU target, without a GPU.

`python -m mibcore.kernels.aot [--arch 90]` compiles every kernel specialization used by
mibcore to PTX and a cubin (Triton's backend needs no driver for that). The tests run it so
that the Triton kernels are known to compile for real hardware, not only to interpret.
Must run without TRITON_INTERPRET=1 (interpreted kernels cannot be compiled).
"""
import argparse
import itertools
import os
import sys


DTYPES = ("fp32", "fp16", "bf16", "fp64")
FUSION_DTYPES = ("fp32", "bf16")


def specializations(dtypes=DTYPES, parameterizations=(0, 1, 2)):
    """(kernel, signature, constexprs) for each compiled variant."""
    from mibcore.kernels import reparameterize_kl as rk

    for dtype, p, sample in itertools.product(dtypes, parameterizations, (True, False)):
        acc = "fp64" if dtype == "fp64" else "fp32"
        common = {"P": p, "SAMPLE": sample, "F64": dtype == "fp64", "BLOCK_R": 4, "BLOCK_C": 1024}
        yield rk._forward_kernel, {
            "mu_ptr": f"*{dtype}", "scale_ptr": f"*{dtype}", "z_ptr": f"*{dtype}", "kl_ptr": f"*{acc}",
            "rng_ptr": "*i64", "rows": "i64", "cols": "i64", "shift": "fp32", **{k: "constexpr" for k in common},
        }, common
        yield rk._backward_kernel, {
            "grad_z_ptr": f"*{dtype}", "grad_kl_ptr": f"*{acc}", "mu_ptr": f"*{dtype}", "scale_ptr": f"*{dtype}",
            "grad_mu_ptr": f"*{dtype}", "grad_scale_ptr": f"*{dtype}", "rng_ptr": "*i64", "rows": "i64",
            "cols": "i64", "shift": "fp32", **{k: "constexpr" for k in common},
        }, common


def fusion_specializations(dtypes=FUSION_DTYPES):
    """The tensor_fusion kernels: (kernel, signature, constexprs), with and without dropout."""
    from mibcore.kernels import tensor_fusion as tf

    for dtype, dropout in itertools.product(dtypes, (True, False)):
        blocks = {"BLOCK_B": 16, "BLOCK_K": 64, "BLOCK_O": 64}
        shapes = {"B": "i64", "I": "i64", "J": "i64", "K": "i64", "N": "i64", "OUT": "i64",
                  "keep_prob": "fp32", "inv_keep": "fp32"}
        factors = {"a_ptr": "*fp32", "v_ptr": "*fp32", "t_ptr": "*fp32"}
        const = {"DROPOUT": dropout, **blocks}
        yield tf._forward_kernel, {
            **factors, "w_ptr": f"*{dtype}", "bias_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "rng_ptr": "*i64",
            **shapes, "HAS_BIAS": "constexpr", **{k: "constexpr" for k in const},
        }, {"HAS_BIAS": True, **const}
        yield tf._grad_weight_kernel, {
            **factors, "dy_ptr": f"*{dtype}", "dw_ptr": f"*{dtype}", "rng_ptr": "*i64", **shapes,
            **{k: "constexpr" for k in const},
        }, const
        yield tf._grad_input_kernel, {
            **factors, "w_ptr": f"*{dtype}", "dy_ptr": f"*{dtype}", "da_ptr": "*fp32", "dv_ptr": "*fp32",
            "dt_ptr": "*fp32", "rng_ptr": "*i64", **shapes, **{k: "constexpr" for k in const},
        }, const


def lmf_specializations(dtypes=FUSION_DTYPES):
    """The low_rank_fusion kernels (three modalities), forward and backward."""
    from mibcore.kernels import low_rank_fusion as lmf

    for dtype in dtypes:
        const = {"M": 3, "BLOCK_B": 16, "BLOCK_D": 32, "BLOCK_O": 64}
        dims = {"D0": "i64", "D1": "i64", "D2": "i64"}
        xs = {f"x{m}": "*fp32" for m in range(3)}
        fs = {f"f{m}": f"*{dtype}" for m in range(3)}
        tail = {"B": "i64", "R": "i64", "OUT": "i64", **{k: "constexpr" for k in const}}
        yield lmf._forward_kernel, {**xs, **fs, **dims, "w_ptr": f"*{dtype}", "bias_ptr": f"*{dtype}",
                                    "y_ptr": f"*{dtype}", **tail}, const
        yield lmf._backward_kernel, {**xs, **fs, **dims, **{f"dx{m}": "*fp32" for m in range(3)},
                                     **{f"df{m}": "*fp32" for m in range(3)}, "w_ptr": f"*{dtype}",
                                     "dw_ptr": "*fp32", "dy_ptr": f"*{dtype}", **tail}, const


def compile_all(arch=90, dtypes=DTYPES, parameterizations=(0, 1, 2)):
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled ahead of time")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    results = []
    fusion_dtypes = tuple(d for d in dtypes if d in FUSION_DTYPES)
    kernels = itertools.chain(specializations(dtypes, parameterizations), fusion_specializations(fusion_dtypes),
                              lmf_specializations(fusion_dtypes))
    for kernel, signature, constexprs in kernels:
        compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=target)
        results.append((kernel.__name__, constexprs, len(compiled.asm["ptx"]), len(compiled.asm["cubin"])))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="only these dtypes (repeatable)")
    parser.add_argument("--parameterization", type=int, action="append", choices=(0, 1, 2))
    args = parser.parse_args(argv)
    results = compile_all(args.arch, tuple(args.dtype or DTYPES), tuple(args.parameterization or (0, 1, 2)))
    for name, constexprs, ptx, cubin in results:
        print(f"sm_{args.arch} {name} {constexprs}: ptx {ptx} chars, cubin {cubin} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
