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


def compile_all(arch=90, dtypes=DTYPES, parameterizations=(0, 1, 2)):
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: interpreted kernels cannot be compiled ahead of time")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    results = []
    for kernel, signature, constexprs in specializations(dtypes, parameterizations):
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
