"""SASS of Triton launches compiled ahead of time (mibcore/kernels/aot.py), read without a GPU.

`sass(spec, arch)` compiles one Specialization and disassembles its cubin with the nvdisasm that
Triton ships; `profile(text)` counts what the design checks read: global loads and stores by
width (128-bit vector accesses), shared-memory traffic (a layout conversion through shared
memory shows as STS/LDS), reductions (warp shuffles) and the instructions of the whole kernel.

  python -m mibcore.kernels.sass --only "dropout 4096x1024 torch.float32"   one line per kernel
  (--dump DIR writes the disassemblies, --json prints the counts as JSON; without TRITON_INTERPRET)
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

# One SASS instruction line of nvdisasm: "/*0120*/   @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;"
_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA\s+`\((\.L_x_\d+)\)")
# Philox4x32's round multipliers 0xD2511F53 and 0xCD9E8D57 as nvdisasm prints them (signed): every
# round has one IMAD.HI.U32 by each (the low product is a plain IMAD), so the IMAD.HI.U32 by the first
# counts rounds (a round on constants is folded away: a block may show fewer than 10).
_PHILOX_ROUND = re.compile(r"IMAD\.(?:HI|WIDE)\.U32\s.*-0x2daee0ad")
_WIDTH = re.compile(r"\.(64|128)\b")


def _tool(name):
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def compile_spec(spec, arch):
    """The CompiledKernel of a Specialization for sm_<arch>."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(spec.module), spec.kernel)
    return triton.compile(ASTSource(kernel, spec.signature, spec.constexprs, spec.attrs),
                          target=GPUTarget("cuda", arch, 32), options=spec.options)


def disassemble(cubin):
    """nvdisasm's text of a cubin (bytes)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True).stdout


def sass(spec, arch=90):
    return disassemble(compile_spec(spec, arch).asm["cubin"])


def opcodes(text):
    """The opcodes (with modifiers) of the instructions of a disassembly, in order."""
    return [m.group(1) for m in map(_INSTRUCTION.search, text.splitlines()) if m]


def access_bits(opcode):
    """Width in bits of a global access opcode (LDG.E.128 -> 128, LDG.E -> 32, LDG.E.U16 -> 16)."""
    width = _WIDTH.search(opcode)
    if width:
        return int(width.group(1))
    return 16 if ".U16" in opcode or ".S16" in opcode else 8 if ".U8" in opcode or ".S8" in opcode else 32


def lines(text):
    """(opcode, label or None, branch target or None, line) of each instruction, in order; a label
    attaches to the instruction after it."""
    out, label = [], None
    for line in text.splitlines():
        m = _LABEL.match(line.strip())
        if m:
            label = m.group(1)
            continue
        op = _INSTRUCTION.search(line)
        if op:
            target = _BRANCH.search(line)
            out.append((op.group(1), label, target.group(1) if target else None, line))
            label = None
    return out


def loops(text):
    """The loops of a disassembly as (first, last) instruction indices: a branch back to a label
    before it closes a loop (Triton's scf.for loops compile to one such branch each)."""
    rows = lines(text)
    where = {label: i for i, (_, label, _, _) in enumerate(rows) if label}
    return sorted((where[target], i) for i, (_, _, target, _) in enumerate(rows)
                  if target in where and where[target] < i)


def loop_depths(text):
    """The opcodes with the number of loops that contain each."""
    spans = loops(text)
    return [(op, sum(a <= i <= b for a, b in spans)) for i, (op, _, _, _) in enumerate(lines(text))]


def main_loop(text):
    """The opcodes of the largest innermost loop (the main loop of a GEMM kernel)."""
    spans = loops(text)
    inner = [(a, b) for a, b in spans if not any(a < c and d < b for c, d in spans if (c, d) != (a, b))]
    if not inner:
        return []
    a, b = max(inner, key=lambda span: span[1] - span[0])
    return [op for op, _, _, _ in lines(text)[a:b + 1]]


# The multiply-add opcodes (FMA units and tensor-core MMA), for Triton's and the CUDA kernels' SASS.
# Not HFMA2: ptxas emits `HFMA2.MMA R, -RZ, RZ, ...` to move constants into registers.
FMA_OPCODES = frozenset(("FFMA", "FFMA2", "DFMA", "HMMA", "DMMA", "HGMMA", "IMMA"))


def is_fma(opcode):
    return opcode.split(".")[0] in FMA_OPCODES


def fma_share(ops):
    """The share of multiply-adds (FMA_OPCODES) among instructions `ops`."""
    return sum(map(is_fma, ops)) / max(1, len(ops))


def philox_rounds(text):
    """Philox rounds in a disassembly (per thread: one pass through its straight-line code)."""
    return len(_PHILOX_ROUND.findall(text))


def profile(text):
    """Counts of a kernel's SASS: instructions, global loads/stores by width in bits, shared
    memory accesses, warp shuffles."""
    ops = opcodes(text)
    loads = collections.Counter(access_bits(op) for op in ops if op.startswith("LDG"))
    stores = collections.Counter(access_bits(op) for op in ops if op.startswith("STG"))
    return {
        "instructions": len(ops),
        "loads": dict(loads), "stores": dict(stores),
        "shared": sum(op.startswith(("LDS", "STS")) for op in ops),
        "shuffles": sum(op.startswith("SHFL") for op in ops),
        "opcodes": collections.Counter(op.split(".")[0] for op in ops),
    }


def main(argv=None):
    from mibcore.kernels import aot

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(aot.SHARED_LIMIT))
    parser.add_argument("--only", action="append", help="only calls whose label contains this (repeatable)")
    parser.add_argument("--dump", help="write each kernel's SASS into this folder")
    parser.add_argument("--json", action="store_true", help="one JSON object a line (the label, kernel, counts)")
    args = parser.parse_args(argv)
    table = [(label, fns) for label, fns in aot.calls() if not args.only or any(o in label for o in args.only)]
    for i, spec in enumerate(aot.distinct_specializations(aot.record_calls(table))):
        text = sass(spec, args.arch)
        p = profile(text)
        if args.json:
            print(json.dumps({"label": spec.label, "kernel": spec.kernel, "constexprs": spec.describe(),
                              **{k: v for k, v in p.items() if k != "opcodes"}}), flush=True)
            continue
        print(f"{spec.describe()}: {p['instructions']} instructions, LDG bits {p['loads']}, STG bits {p['stores']}, "
              f"{p['shared']} LDS/STS, {p['shuffles']} SHFL")
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            with open(os.path.join(args.dump, f"{i:03d}_{spec.kernel}.sass"), "w") as f:
                f.write(f"// {spec.describe()}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
