"""The share of multiply-add instructions in the main loop of the CUDA kernels, read from their SASS.

The CUDA sources are compiled with nvcc (the flags of tests/test_cuda_build.py) and disassembled
with the cuobjdump that Triton ships (`cuobjdump --dump-sass`). A loop is the address range
[target, branch] of a backward branch (a BRA to a lower address); a kernel's main loop is the
loop holding the most multiply-adds (mibcore.kernels.sass.FMA_OPCODES: FFMA, DFMA, HMMA, ...), the
smallest such loop where nested ones tie. Its share is math / all instructions of the range,
counted statically (a nested loop's body counts once). Nothing runs: no GPU needed.

  python -m benchmarks.cuda_sass [--arch 90] [--file tensor_fusion_kernels.cu] [--kernel forward]
  python -m benchmarks.cuda_sass --object build/x.o     (an object already compiled)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from mibcore.kernels.sass import is_fma as is_math

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# cuobjdump's instruction lines: "/*0c70*/   @!P1 BRA 0x730 ;   /* 0x... */"
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_FUNCTION = re.compile(r"Function : (\S+)")
_TARGET = re.compile(r"0x([0-9a-f]+)")
_ARCH = re.compile(r"arch = sm_(\d+)")


def cuobjdump():
    try:
        import triton

        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.path.exists(tool):
            return tool
    except ImportError:
        pass
    return shutil.which("cuobjdump") or "cuobjdump"


def compile_object(cu, arch, outdir):
    """nvcc's object of one csrc/cuda file for sm_<arch> (setup.py's optimization flags)."""
    sys.path.insert(0, ROOT)
    from mibcore import _math_tables

    _math_tables.write_header(os.path.join(outdir, "generated"))
    obj = os.path.join(outdir, f"{os.path.basename(cu)}.sm_{arch}.o")
    subprocess.run([shutil.which("nvcc") or "nvcc", "-O3", "-std=c++20", "--expt-relaxed-constexpr",
                    f"-gencode=arch=compute_{arch},code=sm_{arch}", "-I", os.path.join(ROOT, "csrc", "include"),
                    "-I", os.path.join(outdir, "generated"), "-I", os.path.join(ROOT, "csrc", "cuda"),
                    "-c", cu, "-o", obj], check=True)
    return obj


def functions(sass_text, arch=None):
    """{mangled name: [(address, opcode, operands)]} of a cuobjdump --dump-sass text (of sm_<arch>
    only, when given: an object holds one cubin per architecture)."""
    out, current, current_arch = {}, None, None
    for line in sass_text.splitlines():
        if m := _ARCH.match(line):
            current_arch, current = m.group(1), None
        elif m := _FUNCTION.search(line):
            current = out.setdefault(m.group(1), []) if arch is None or current_arch == str(arch) else None
        elif current is not None and (m := _INSTRUCTION.search(line)):
            current.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return out


def loops(instructions):
    """[(first index, last index)] of every backward branch's range."""
    index = {address: i for i, (address, _, _) in enumerate(instructions)}
    found = []
    for i, (address, opcode, operands) in enumerate(instructions):
        if opcode.split(".")[0] == "BRA" and (m := _TARGET.search(operands)):
            target = int(m.group(1), 16)
            if target < address and target in index:
                found.append((index[target], i))
    return found


def main_loop(instructions):
    """The main loop's {instructions, math, share, opcodes} (None without a loop holding math)."""
    best = None
    for first, last in loops(instructions):
        body = [op for _, op, _ in instructions[first:last + 1]]
        math = sum(map(is_math, body))
        key = (math, -len(body))
        if math and (best is None or key > best[0]):
            best = (key, body)
    if best is None:
        return None
    body = best[1]
    math = sum(map(is_math, body))
    counts = {}
    for op in body:
        counts[op.split(".")[0]] = counts.get(op.split(".")[0], 0) + 1
    return {"instructions": len(body), "math": math, "share": math / len(body), "opcodes": counts}


def kernel_family(mangled):
    """forward_fma_kernel<float, float> from its mangled name (the part after the file's namespace)."""
    m = re.search(r"_cu_[0-9a-f]{8}(\d+)(\w*)", mangled)
    if not m:
        return mangled
    n = int(m.group(1))
    rest = m.group(2)
    name, args = rest[:n], rest[n:]
    dtype = next((d for key, d in (("13__nv_bfloat16", "bf16"), ("6__half", "fp16"), ("Idd", "fp64"),
                                   ("Iff", "fp32")) if args.startswith(key) or args.startswith("I" + key)), "")
    return f"{name} {dtype}".strip()


def report(obj, kernel_filter=None, arch=None):
    """[(kernel family, instructions, main_loop)] of an object's kernels (of sm_<arch>)."""
    text = subprocess.run([cuobjdump(), "--dump-sass", obj], capture_output=True, text=True, check=True).stdout
    rows = []
    for name, instructions in functions(text, arch).items():
        family = kernel_family(name)
        if kernel_filter and kernel_filter not in family:
            continue
        loop = main_loop(instructions)
        rows.append((family, len(instructions), loop))
    return sorted(rows, key=lambda r: r[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="90")
    parser.add_argument("--file", default="tensor_fusion_kernels.cu", help="a csrc/cuda file")
    parser.add_argument("--kernel", default="forward", help="only kernels whose name contains this")
    parser.add_argument("--object", help="an nvcc object to read instead of compiling --file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as outdir:
        obj = args.object or compile_object(os.path.join(ROOT, "csrc", "cuda", args.file), args.arch, outdir)
        rows = report(obj, args.kernel, args.arch)
    print(f"| kernel (sm_{args.arch}) | instructions | main loop | FFMA/DFMA/HMMA | share | top opcodes of the loop |")
    print("| --- | --- | --- | --- | --- | --- |")
    for family, total, loop in rows:
        if loop is None:
            print(f"| {family} | {total} | - | - | - | |")
            continue
        top = ", ".join(f"{op} {n}" for op, n in sorted(loop["opcodes"].items(), key=lambda kv: -kv[1])[:6])
        print(f"| {family} | {total} | {loop['instructions']} | {loop['math']} | {loop['share']:.1%} | {top} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
