"""Build of mibcore and its C++/CUDA extension mibcore._C.

The CPU part is always built. The CUDA part (csrc/cuda/*.cu) is built when torch has
CUDA and nvcc is found, or when forced with MIBCORE_BUILD_CUDA=1 (MIBCORE_BUILD_CUDA=0
turns it off). The CPU kernels are compiled for every instruction-set level (baseline, AVX2,
AVX-512) and chosen at run time, so one build runs on any x86-64 CPU; MIBCORE_CPU_ARCH=native
opts in to a -march for the whole build.
Install with `pip install --no-build-isolation .` (build isolation hides torch).
MIBCORE_SKIP_EXTENSION=1 installs the Python package only: the Makefile builds the extension
in place with `setup.py build_ext --inplace` (ninja: only what changed) and then installs the
package editable without compiling it a second time.
"""
import glob
import importlib.util
import os

from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda():
    flag = os.environ.get("MIBCORE_BUILD_CUDA", "auto").lower()
    if flag in ("0", "false", "no"):
        return False
    if flag in ("1", "true", "yes"):
        return True
    import torch

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _cuda_arch_flags():
    """nvcc's -gencode flags for TORCH_CUDA_ARCH_LIST (as torch reads it: "8.0;9.0", "8.0 9.0",
    "9.0a", "9.0+PTX"), by default "8.0;9.0" (A100, H100/H200). Given here, they replace the
    flags torch would derive itself (which, without a GPU and without the variable, are every
    architecture the CUDA toolkit knows)."""
    flags = []
    for arch in os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(";", " ").split() or ["8.0", "9.0"]:
        arch, ptx = arch.removesuffix("+PTX"), arch.endswith("+PTX")
        major, dot, minor = arch.partition(".")
        if not (dot and major.isdigit() and minor[:1].isdigit() and minor[1:] in ("", "a", "f")):
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: {arch!r} is not an architecture like 8.0, 9.0a or 9.0+PTX")
        number = major + minor
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


def _pip_cuda_dirs():
    """Headers and libraries of the NVIDIA pip wheels a CUDA build of torch depends on
    (cusparse.h, cublas, ...), which a minimal CUDA toolkit may lack."""
    import site

    includes, libs = [], []
    for root in site.getsitepackages():
        for sub in ("nvidia/cu13", "nvidia/cu12"):
            if os.path.isdir(os.path.join(root, sub, "include")):
                includes.append(os.path.join(root, sub, "include"))
                libs.append(os.path.join(root, sub, "lib"))
    return includes, libs


def _extension():
    # One build for every x86-64 CPU: the CPU kernels are compiled once per instruction-set
    # level and chosen at run time (csrc/cpu/isa.h); everything else for the baseline.
    # MIBCORE_CPU_ARCH (e.g. native) opts in to a -march for the whole build, for local use.
    arch = os.environ.get("MIBCORE_CPU_ARCH")
    # -fno-trapping-math lets g++ inline floorf and if-convert the branch-free math in
    # csrc/include, which is what makes the `omp simd` loops vectorize (10x here).
    # -Wno-maybe-uninitialized: g++ 12's AVX-512 intrinsics pass _mm512_undefined_*() as their
    # unused merge source, which the warning reports at every inlined call (GCC bug 105593);
    # a build flag rather than a pragma in a header, which would leak into every includer.
    # -Wno-psabi: the baseline pass of the kernels passes 64-byte GNU vectors between inlined
    # helpers, which g++ reports as an ABI change that no exported function has.
    cxx_flags = ["-O3", "-fopenmp", "-std=c++20", "-fno-math-errno", "-fno-trapping-math",
                 "-Wno-maybe-uninitialized", "-Wno-psabi"] + ([f"-march={arch}"] if arch else [])
    sources = ["csrc/library.cpp"] + sorted(glob.glob("csrc/ops/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    macros = [("MIBCORE_MARCH", f'"{arch}"')] if arch else []  # build_info reports a non-portable build
    if os.environ.get("MIBCORE_CPU_BASELINE_ONLY") == "1":  # the CPU kernels for the baseline only (faster build)
        macros.append(("MIBCORE_ISA_BASELINE_ONLY", None))
    if _want_cuda():
        import torch

        if torch.version.cuda is None:
            raise RuntimeError(
                "MIBCORE_BUILD_CUDA=1 needs a CUDA build of torch (this one is CPU-only); "
                "the CUDA kernels alone compile without torch: cmake -S . -B build-cmake"
            )
        pip_includes, pip_libs = _pip_cuda_dirs()
        nvcc_flags = [
            "-O3",
            "-std=c++20",
            "--expt-relaxed-constexpr",
            *_cuda_arch_flags(),
        ]
        return cpp_extension.CUDAExtension(
            "mibcore._C",
            sources + sorted(glob.glob("csrc/cuda/*.cpp")) + sorted(glob.glob("csrc/cuda/*.cu")),
            include_dirs=include_dirs + [os.path.join(ROOT, "csrc", "cuda")] + pip_includes,
            library_dirs=pip_libs,
            define_macros=[("MIBCORE_WITH_CUDA", None)] + macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "mibcore._C",
        sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


def _write_math_tables(out_dir):
    """Generates mibcore/math_tables.h (the constants of csrc/include's math) from
    mibcore/_math_tables.py into out_dir; loaded by path, so the mibcore package is not imported."""
    spec = importlib.util.spec_from_file_location("_mibcore_math_tables", os.path.join(ROOT, "mibcore", "_math_tables.py"))
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    return tables.write_header(out_dir)


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension (ninja) that first generates the headers the sources include, in the
    build tree (build_temp/generated, never in the checkout), and adds that folder to the includes."""

    def build_extensions(self):
        generated = os.path.abspath(os.path.join(self.build_temp, "generated"))
        _write_math_tables(generated)
        for ext in self.extensions:
            if generated not in ext.include_dirs:
                ext.include_dirs.append(generated)
        super().build_extensions()


setup(
    packages=[
        "mibcore",
        "mibcore.ops",
        "mibcore.reference",
        "mibcore.nn",
        "mibcore.models",
        "mibcore.data",
        "mibcore.train",
        "mibcore.kernels",
        "mibcore.benchmarks",
    ],
    # benchmarks/ lives beside mibcore/ in the checkout (`python -m benchmarks`); the Triton
    # kernels are the subpackage mibcore/kernels, importable from a plain checkout too.
    package_dir={"mibcore.benchmarks": "benchmarks"},
    ext_modules=[] if os.environ.get("MIBCORE_SKIP_EXTENSION") == "1" else [_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
