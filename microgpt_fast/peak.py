"""The machine's float32 peak: the larger of two measurements on the same threads.

    >>> from microgpt_fast.peak import peak_gflops
    >>> peak_gflops(threads=1)      # GFLOP/s of one core

- matmul_peak: a large numpy float32 matrix product, what a tuned BLAS gets.
- fma_peak: a loop of independent vector FMAs (src/fma_peak.h) in the widest
  kernel variant this CPU runs, the most multiply-adds the cores can issue.
  It is the ceiling where the BLAS does not know the CPU: OpenBLAS runs its
  256-bit Haswell kernel on CPUs newer than its tables (an AVX-512 Zen 5 among
  them), at half of what the cores can do.

numpy's BLAS runs its own threads; their count is set for the measurement
with threadpoolctl when it is installed, else through OpenBLAS's
openblas_set_num_threads found in the loaded libraries, and restored after.
"""

from __future__ import annotations

import contextlib
import ctypes
import time

import numpy as np

from .kernels import available_kernels, load_kernel


def _openblas_setters():
    """(get, set) functions of every OpenBLAS library this process has loaded."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return found
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("", "64_", "_64"):
            for prefix in ("openblas", "scipy_openblas"):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    found.append((get, put))
    return found


@contextlib.contextmanager
def blas_threads(n: int):
    """Run the body with numpy's BLAS limited to n threads, where that can be set."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
        return
    setters = _openblas_setters()
    saved = [get() for get, _ in setters]
    for _, put in setters:
        put(n)
    try:
        yield
    finally:
        for (_, put), old in zip(setters, saved):
            put(old)


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """(GFLOP/s, spread) of an (n, n) x (n, n) float32 product on `threads` threads:
    the best of `repeats` timed products after a warm-up one, since a peak is what
    the machine can do and anything slower was slowed by something else; spread is
    (slowest - fastest) / fastest over the repeats, large on a busy machine."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    with blas_threads(threads):
        a @ b  # warm-up: BLAS's thread pool and the pages of its buffers
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / min(times) / 1e9, (max(times) - min(times)) / min(times)


def fma_peak(threads: int, repeats: int = 5, seconds: float = 0.02) -> tuple[float, float]:
    """(GFLOP/s, spread) of fma_peak.h's loop on `threads` threads at once, in the
    widest variant this CPU runs: rounds enough for about `seconds` a run, the
    best of `repeats` runs after a warm-up one (the spread as in matmul_peak)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    loop = load_kernel(available_kernels()[-1]).module.fma_loop
    rounds = 1024
    while True:  # warm-up and calibration: a quarter of the time at least
        t0 = time.perf_counter()
        loop(threads, rounds)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds / 4:
            break
        rounds *= 4
    rounds = max(1, round(rounds * seconds / max(elapsed, 1e-9)))
    times, flop = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        flop = loop(threads, rounds)
        times.append(time.perf_counter() - t0)
    return flop / min(times) / 1e9, (max(times) - min(times)) / min(times)


def peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 GFLOP/s on `threads` threads: the larger of the numpy
    product of two (n, n) matrices and the FMA loop, each the best of `repeats`."""
    return max(matmul_peak(threads, n, repeats)[0], fma_peak(threads, repeats)[0])
