"""Build the compiled engine: one extension module per kernel variant.

Each variant compiles the same Cython source (src/engine.pxi) with its own
flags, so that the effect of vectorization can be measured:

    novec    -O2 without the loop or SLP vectorizers
    generic  -O3 for the baseline instruction set of the target
    avx2     -O3 -mavx2 -mfma (x86-64 only)
    avx512   -O3 -mavx512f -mavx512vl -mavx512dq -mavx512bw -mavx2 -mfma (x86-64 only)

and each again as "<variant>_prof" with the op-group timers compiled in
(python -m microgpt_fast.bench --breakdown reads them). One more module,
microgpt_fast._data (src/data.pyx), built once, reads and shuffles the data.

Environment:
    MICROGPT_FAST_NO_OPENMP=1   build without OpenMP (serial)
    MICROGPT_FAST_DEBUG=1       bounds checks on, -O0 -g
    MICROGPT_FAST_VEC_REPORT=1  save gcc's vectorization report of each variant
                                as build/vec-report-<variant>.txt, its lines
                                pointing into the .pxd kernels
"""

import os
import platform
import shutil
import subprocess
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


DEBUG = env_flag("MICROGPT_FAST_DEBUG")
VEC_REPORT = env_flag("MICROGPT_FAST_VEC_REPORT")
X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# No -ffast-math anywhere: float64 must reproduce the original's arithmetic.
# -fno-math-errno only lets sqrt compile to one instruction.
COMMON = ["-fno-math-errno", "-fno-trapping-math"]
VARIANTS = {
    "novec": ["-O2", "-fno-tree-vectorize", "-fno-tree-slp-vectorize"],
    "generic": ["-O3"],
}
if X86_64:
    VARIANTS["avx2"] = ["-O3", "-mavx2", "-mfma"]
    VARIANTS["avx512"] = ["-O3", "-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw",
                          "-mavx2", "-mfma"]

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
}

OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def compiler_has_openmp(compiler) -> bool:
    """Compile and link a small OpenMP program with the extension's compiler."""
    tmp = tempfile.mkdtemp(prefix="microgpt_fast_omp_")
    try:
        source = os.path.join(tmp, "omp_test.c")
        with open(source, "w") as f:
            f.write(OPENMP_TEST)
        objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fopenmp"])
        compiler.link_executable(objects, "omp_test", output_dir=tmp,
                                 extra_postargs=["-fopenmp"])
        return subprocess.run([os.path.join(tmp, "omp_test")]).returncode == 0
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Adds the OpenMP flags when the compiler supports them, else warns."""

    def build_extensions(self):
        use_openmp = False
        if env_flag("MICROGPT_FAST_NO_OPENMP"):
            print("WARNING: MICROGPT_FAST_NO_OPENMP is set: building without OpenMP "
                  "(single-threaded)", file=sys.stderr)
        elif compiler_has_openmp(self.compiler):
            use_openmp = True
        else:
            print("WARNING: the C compiler has no OpenMP support: building "
                  "single-threaded", file=sys.stderr)
        for ext in self.extensions:
            if use_openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


def extension(variant, flags, profile):
    name = f"{variant}_prof" if profile else variant
    flags = (["-O0", "-g"] if DEBUG else flags) + COMMON
    if profile:
        flags = flags + ["-DMICROGPT_FAST_PROFILE=1"]
    elif VEC_REPORT:
        os.makedirs("build", exist_ok=True)
        flags = flags + [f"-fopt-info-vec-all=build/vec-report-{variant}.txt"]
    return Extension(
        f"microgpt_fast._engine_{name}",
        [f"src/_engine_{name}.pyx"],
        include_dirs=["src"],
        extra_compile_args=flags,
    )


# the data loader's line scan, shuffle and packing: no kernel variants
DATA_EXTENSION = Extension(
    "microgpt_fast._data",
    ["src/data.pyx"],
    extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O2"]) + COMMON,
)

setup(
    ext_modules=cythonize(
        [extension(v, f, p) for v, f in VARIANTS.items() for p in (False, True)]
        + [DATA_EXTENSION],
        include_path=["src"],
        compiler_directives=DIRECTIVES,
        # with #line directives gcc's vectorization report names .pxd lines
        emit_linenums=VEC_REPORT,
        force=VEC_REPORT,
    ),
    cmdclass={"build_ext": BuildExt},
    # the variants are independent modules: compile them side by side
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
