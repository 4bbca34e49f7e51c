"""Build the compiled engine: one extension module per kernel variant.

Each variant compiles the same Cython source (src/engine.pxi) with its own
flags, so that the effect of vectorization can be measured:

    novec    -O2 without the loop or SLP vectorizers
    generic  -O3 for the baseline instruction set of the target
    avx2     -O3 -mavx2 -mfma (x86-64 only)
    avx512   -O3 -mavx512f -mavx512vl -mavx512dq -mavx512bw -mavx2 -mfma (x86-64 only)
    avx512_bf16  avx512's flags and -mavx512bf16: its float32 weight products in
             bfloat16 (src/gemm_bf16.h); only where the compiler knows the flag,
             and never chosen unless asked for

With MICROGPT_FAST_PROFILE=1, each again as "<variant>_prof" with the op-group
timers compiled in (python -m microgpt_fast.bench --breakdown reads them).
microgpt_fast._data (src/data.pyx) reads and shuffles the data, and
microgpt_fast._cyutility holds Cython's own helpers (memoryviews and the like)
once for all the modules, rather than a copy in each.

A variant's module source is one line, `include "engine.pxi"`, written to
build/cython/ at build time. Cython names a module's init function after the
module, so each variant is translated on its own; the translations run in
parallel, then the compiles. The C files (build/cython/, src/data.c) and the
finished modules (build/modules/, one file per module and set of flags) stay
between installs, so an install after the first (an extra, or after an edit)
only rebuilds what changed; `rm -rf build` starts over.

Environment:
    MICROGPT_FAST_PROFILE=1     also build the profiling variants
    MICROGPT_FAST_NO_OPENMP=1   build without OpenMP (serial)
    MICROGPT_FAST_DEBUG=1       bounds checks on, -O0 -g
    MICROGPT_FAST_VEC_REPORT=1  save gcc's vectorization report of each variant
                                as build/vec-report-<variant>.txt, its lines
                                pointing into the .pxd kernels
"""

import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "build")
CYTHON_DIR = "build/cython"  # the generated module sources and the C files
PROFILE = env_flag("MICROGPT_FAST_PROFILE")
DEBUG = env_flag("MICROGPT_FAST_DEBUG")
VEC_REPORT = env_flag("MICROGPT_FAST_VEC_REPORT")
X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# No -ffast-math anywhere: float64 must reproduce the original's arithmetic.
# -fno-math-errno only lets sqrt compile to one instruction.
COMMON = ["-fno-math-errno", "-fno-trapping-math"]
# most vectorized first: the longest compiles start first on the parallel workers
VARIANTS = {}
if X86_64:
    VARIANTS["avx512_bf16"] = ["-O3", "-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw",
                               "-mavx512bf16", "-mavx2", "-mfma"]
    VARIANTS["avx512"] = ["-O3", "-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw",
                          "-mavx2", "-mfma"]
    VARIANTS["avx2"] = ["-O3", "-mavx2", "-mfma"]
VARIANTS["generic"] = ["-O3"]
VARIANTS["novec"] = ["-O2", "-fno-tree-vectorize", "-fno-tree-slp-vectorize"]

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
}
SHARED_UTILITY = "microgpt_fast._cyutility"

OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""

# omp_pause_resource_all (OpenMP 5.0; libgomp since GCC 9) lets training end an
# idle thread instead of leaving it spinning; older runtimes build without it
OPENMP_PAUSE_TEST = r"""
#include <omp.h>
int main(void) {
    #pragma omp parallel
    { }
    return omp_pause_resource_all(omp_pause_soft) == 0 ? 0 : 1;
}
"""


# the compiler must know AVX512-BF16 (GCC 10, Clang 9) for the avx512_bf16 variant
BF16_TEST = r"""
#include <immintrin.h>
int main(void) {
    __m512 x = _mm512_dpbf16_ps(_mm512_setzero_ps(), _mm512_cvtne2ps_pbh(
        _mm512_setzero_ps(), _mm512_setzero_ps()), _mm512_cvtne2ps_pbh(
        _mm512_setzero_ps(), _mm512_setzero_ps()));
    return (int)_mm512_reduce_add_ps(x);
}
"""


def compiler_builds(compiler, program: str, flags: list[str], run: bool) -> bool:
    """Whether the extension's compiler compiles this program with these flags;
    with run, also whether it links and the program exits with 0 (a program for
    an instruction set is only compiled: this CPU may lack it)."""
    tmp = tempfile.mkdtemp(prefix="microgpt_fast_cc_")
    try:
        source = os.path.join(tmp, "test.c")
        with open(source, "w") as f:
            f.write(program)
        objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags)
        if not run:
            return True
        compiler.link_executable(objects, "test", output_dir=tmp, extra_postargs=flags)
        return subprocess.run([os.path.join(tmp, "test")]).returncode == 0
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_if_changed(path, text):
    """Write text to path unless the file holds it already: an unchanged file keeps
    its time stamp, so nothing that depends on it is rebuilt."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def cython_inputs(ext):
    """The files whose change calls for a new translation of ext's source."""
    source = ext.sources[0]
    if ext.name.startswith("microgpt_fast._engine_"):
        return [source, "src/engine.pxi"] + glob.glob("src/*.pxd")
    return [source] if source.endswith(".pyx") else []


def translate(extensions):
    """Turn each extension's Cython source into C where the C file is missing,
    from another Cython version, or older than its inputs or the settings.

    Cython's own check also counts the .pxd files it ships, which are new in
    every isolated build environment: each pip install would translate, and so
    compile, everything again."""
    from Cython import __version__ as cython_version
    from Cython.Build import cythonize

    settings = os.path.join(CYTHON_DIR, "settings.txt")
    write_if_changed(settings, repr((DIRECTIVES, VEC_REPORT, SHARED_UTILITY)) + "\n")
    for ext in extensions:
        if ext.name.startswith("microgpt_fast._engine_"):
            variant = ext.name.split("._engine_")[1]
            write_if_changed(ext.sources[0], f'# Kernel variant "{variant}", generated by '
                                             f'setup.py.\ninclude "engine.pxi"\n')

    def current(ext):
        c_file = os.path.splitext(ext.sources[0])[0] + ".c"
        if not os.path.exists(c_file):
            return False
        with open(c_file) as f:
            if f.readline().strip() != f"/* Generated by Cython {cython_version} */":
                return False
        return all(os.path.getmtime(f) <= os.path.getmtime(c_file)
                   for f in cython_inputs(ext) + [settings])

    stale = [ext for ext in extensions if not current(ext)]
    if stale:
        cythonize(
            stale,
            include_path=["src"],
            compiler_directives=DIRECTIVES,
            shared_utility_qualified_name=SHARED_UTILITY,
            nthreads=os.cpu_count() or 1,
            # with #line directives gcc's vectorization report names .pxd lines
            emit_linenums=VEC_REPORT,
            force=True,  # stale by the check above
        )
    for ext in extensions:
        ext.sources = [os.path.splitext(ext.sources[0])[0] + ".c"]


class BuildExt(build_ext):
    """Translates the Cython sources, adds the OpenMP flags when the compiler
    supports them (else warns), compiles the modules side by side and reuses
    those of earlier builds."""

    def finalize_options(self):
        super().finalize_options()
        # set here: pip install -e resets the build commands' options from setup()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        use_openmp = False
        if env_flag("MICROGPT_FAST_NO_OPENMP"):
            print("WARNING: MICROGPT_FAST_NO_OPENMP is set: building without OpenMP "
                  "(single-threaded)", file=sys.stderr)
        elif compiler_builds(self.compiler, OPENMP_TEST, ["-fopenmp"], run=True):
            use_openmp = True
        else:
            print("WARNING: the C compiler has no OpenMP support: building "
                  "single-threaded", file=sys.stderr)
        if not compiler_builds(self.compiler, BF16_TEST, VARIANTS.get("avx512_bf16", []),
                               run=False):
            dropped = [e for e in self.extensions if "._engine_avx512_bf16" in e.name]
            if dropped:
                print("note: the C compiler does not know -mavx512bf16: building without "
                      "the avx512_bf16 variant", file=sys.stderr)
            self.extensions = [e for e in self.extensions if e not in dropped]
        translate(self.extensions)
        has_pause = use_openmp and compiler_builds(self.compiler, OPENMP_PAUSE_TEST,
                                                   ["-fopenmp"], run=True)
        for ext in self.extensions:
            if use_openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
            if use_openmp and not has_pause:
                ext.define_macros.append(("MICROGPT_FAST_NO_OMP_PAUSE", "1"))
        # build/modules/ decides what is up to date, not the target's time stamp
        self.force = True
        super().build_extensions()

    def build_extension(self, ext):
        # A finished module is kept in build/modules/ under a name that holds a
        # hash of how it is compiled; while none of its inputs is newer, the next
        # build copies it instead of compiling it again.
        how = repr((ext.extra_compile_args, ext.extra_link_args, ext.include_dirs,
                    ext.define_macros, self.compiler.compiler_so, self.compiler.linker_so))
        # _engine_avx2.cpython-311-x86_64-linux-gnu.so -> _engine_avx2-<hash>.cpython-311-...
        stem, abi = os.path.basename(self.get_ext_filename(ext.name)).split(".", 1)
        kept = os.path.join(BUILD, "modules", f"{stem}-"
                            f"{hashlib.sha256(how.encode()).hexdigest()[:12]}.{abi}")
        target = self.get_ext_fullpath(ext.name)
        inputs = ext.sources + ext.depends
        if os.path.exists(kept) and all(os.path.getmtime(f) <= os.path.getmtime(kept)
                                        for f in inputs):
            sys.stdout.write(f"reusing {os.path.relpath(kept, HERE)}\n")  # one write a line
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(kept, target)
            return
        super().build_extension(ext)
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        shutil.copy2(target, kept)

    def run(self):
        super().run()
        # In place (pip install -e), the profiling modules of an earlier
        # MICROGPT_FAST_PROFILE=1 build would no longer match the plain ones.
        if (self.inplace or getattr(self, "editable_mode", False)) and not PROFILE:
            for stale in glob.glob(os.path.join(HERE, "microgpt_fast", "_engine_*_prof.*")):
                print(f"removing {os.path.relpath(stale, HERE)} "
                      "(from an earlier MICROGPT_FAST_PROFILE=1 build)")
                os.remove(stale)


def extension(variant, flags, profile):
    name = f"{variant}_prof" if profile else variant
    flags = (["-O0", "-g"] if DEBUG else flags) + COMMON
    if profile:
        flags = flags + ["-DMICROGPT_FAST_PROFILE=1"]
    elif VEC_REPORT:
        os.makedirs(BUILD, exist_ok=True)
        flags = flags + [f"-fopt-info-vec-all=build/vec-report-{variant}.txt"]
    # the source is one line, written by translate()
    return Extension(f"microgpt_fast._engine_{name}", [f"{CYTHON_DIR}/_engine_{name}.pyx"],
                     include_dirs=["src"],
                     extra_compile_args=flags,
                     depends=sorted(glob.glob("src/*.h") + glob.glob("src/*.pxd")
                                    + ["src/engine.pxi"]))


EXTENSIONS = [extension(v, f, p) for p in ([False, True] if PROFILE else [False])
              for v, f in VARIANTS.items()]
# the data loader's line scan, shuffle and packing: no kernel variants
EXTENSIONS.append(Extension(
    "microgpt_fast._data",
    ["src/data.pyx"],
    extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O2"]) + COMMON,
))
EXTENSIONS.append(Extension(SHARED_UTILITY, [f"{CYTHON_DIR}/_cyutility.c"],
                            extra_compile_args=["-O2"] + COMMON))

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildExt})
