"""Which compiled kernel variant to load, and how many threads it may use.

    >>> from microgpt_fast.kernels import load_kernel, resolve_threads
    >>> load_kernel().name in ("avx512", "avx2", "generic", "novec")
    True

The same Cython source is built several times with different compiler flags
(see setup.py). At import the best variant this CPU runs is chosen;
MICROGPT_FAST_KERNEL=novec|generic|avx2|avx512 (or --kernel) picks one by name.
One more is only ever picked by name: avx512_bf16, avx512 with the linear
layers' float32 products in bfloat16 (AVX512-BF16's dot products, float32
sums: twice the multiply-adds a cycle, at bfloat16's precision), where the CPU
has AVX512-BF16; its float64 is avx512's.
An install with MICROGPT_FAST_PROFILE=1 adds a profiling build of each,
"<variant>_prof", with op-group timers compiled in (bench --breakdown).
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass
from types import ModuleType

AUTOMATIC = ("novec", "generic", "avx2", "avx512")  # from least to most vectorized
# changes float32's numbers, so never the default
BY_NAME_ONLY = ("avx512_bf16",)
VARIANTS = AUTOMATIC + BY_NAME_ONLY
_AVX512 = ("avx2", "fma", "avx512f", "avx512vl", "avx512dq", "avx512bw")
_REQUIRED_CPU_FLAGS = {
    "avx2": ("avx2", "fma"),
    "avx512": _AVX512,
    "avx512_bf16": _AVX512 + ("avx512_bf16",),
}


PROFILE_HINT = "reinstall with MICROGPT_FAST_PROFILE=1 pip install -e . to build them"


class KernelError(ValueError):
    """A kernel variant that was asked for and cannot run here."""


@dataclass(frozen=True)
class Kernel:
    name: str
    module: ModuleType


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _built(name: str) -> bool:
    try:
        importlib.import_module(f"microgpt_fast._engine_{name}")
    except ImportError:
        return False
    return True


def available_kernels() -> list[str]:
    """Variants that were built and that this CPU can run, least vectorized first,
    then avx512_bf16 where it runs."""
    flags = _cpu_flags()
    return [name for name in VARIANTS
            if all(f in flags for f in _REQUIRED_CPU_FLAGS.get(name, ())) and _built(name)]


def profiling_built(names: list[str]) -> bool:
    """True when every one of these variants has its "<variant>_prof" build."""
    return all(_built(f"{name.removesuffix('_prof')}_prof") for name in names)


def load_kernel(name: str | None = None) -> Kernel:
    """The named variant, else $MICROGPT_FAST_KERNEL, else the best available."""
    name = name or os.environ.get("MICROGPT_FAST_KERNEL") or None
    available = available_kernels()
    if not available:
        raise KernelError("no compiled kernel found: build the package with "
                          "'pip install -e .'")
    if name is None:
        name = [v for v in available if v in AUTOMATIC][-1]
    base = name.removesuffix("_prof")
    if base not in VARIANTS:
        raise KernelError(f"unknown kernel {name!r}: choose from {', '.join(VARIANTS)}")
    if base not in available:
        raise KernelError(f"kernel {base!r} is not available on this machine "
                          f"(available: {', '.join(available)})")
    try:
        return Kernel(name, importlib.import_module(f"microgpt_fast._engine_{name}"))
    except ImportError:
        hint = f": the profiling builds are optional; {PROFILE_HINT}" if name != base else ""
        raise KernelError(f"kernel {name!r} was not built{hint}") from None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(looks: int = 3) -> int:
    """The cores of this process that other programs are not running on now
    (Linux: /proc/loadavg and this process's threads, see cores_left_free), the
    most of up to `looks` snapshots a millisecond apart (a program that only
    passes by is seldom in all; a quiet machine needs one); cpu_count() where
    that cannot be read. For a first guess."""
    cores, free = cpu_count(), 0
    try:
        for look in range(looks):
            if look:
                time.sleep(1e-3)
            with open("/proc/loadavg") as f:
                loadavg = f.read()
            states = []
            if running_tasks(loadavg) > 1:  # else the caller alone: no need to look further
                for task in os.listdir("/proc/self/task"):
                    try:
                        with open(f"/proc/self/task/{task}/stat") as f:
                            states.append(f.read())
                    except OSError:  # a thread that has just ended
                        pass
            free = max(free, cores_left_free(cores, loadavg, states))
            if free == cores:
                break
    except (OSError, ValueError, IndexError):
        return cores
    return free


def running_tasks(loadavg: str) -> int:
    """The runnable tasks of the whole machine, the reader among them: the
    running count of /proc/loadavg ("1.0 0.5 0.2 3/250 1234": 3 of 250 tasks)."""
    return int(loadavg.split()[3].split("/")[0])


def cores_left_free(cores: int, loadavg: str, own_stats: list[str]) -> int:
    """cores less the runnable tasks of other processes: running_tasks(loadavg)
    less this process's threads whose stat line (/proc/self/task/*/stat) says R
    (the reader at least); at least 1."""
    # the state follows the command name in parentheses, which may hold spaces
    own = sum(stat.rsplit(")", 1)[1].split()[0] == "R" for stat in own_stats)
    return max(1, cores - max(0, running_tasks(loadavg) - max(own, 1)))


def resolve_threads(requested: int | None, kernel: Kernel) -> int:
    """Threads to use: the argument, else $OMP_NUM_THREADS, else every core;
    capped at the CPU count; 1 when the kernel was built without OpenMP."""
    if not kernel.module.openmp_enabled():
        return 1
    if requested is None:
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        requested = int(env) if env.isdigit() and int(env) > 0 else cpu_count()
    if requested < 1:
        raise ValueError(f"threads must be >= 1, got {requested}")
    return min(requested, cpu_count())
