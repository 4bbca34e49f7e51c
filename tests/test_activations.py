"""The kernels' activation arithmetic on its own: verf.h's erf against math.erf,
and gelu, relu2, silu and their derivatives against plain formulas.

Every kernel variant, float64 and float32, over a dense grid, random points,
tiny and huge magnitudes and the special values. The gradients of whole models
with these activations are in test_gradients.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from microgpt_fast.kernels import load_kernel

from helpers import KERNELS

DTYPES = [np.float64, np.float32]
# largest error of the compiled erf against math.erf, in ulps of the result (the
# spacing just below its magnitude); measured: 1.0 in float64, 1.1 in float32
ERF_ULPS = 2.0


def erf_points(dtype) -> np.ndarray:
    """A dense grid over [-7, 7] (erf rounds to +-1 past 6 in float64), normal and
    uniform random points, tiny magnitudes down to the subnormals, huge ones."""
    rng = np.random.default_rng(7)
    tiny = np.exp(rng.uniform(math.log(1e-300), 0, 3000)) * rng.choice([-1, 1], 3000)
    points = np.concatenate([
        np.linspace(-7, 7, 140001), rng.standard_normal(20000) * 2,
        rng.uniform(-8, 8, 20000), tiny, np.array([5e-324, -5e-324, 1e-310]),
        np.array([1.0, -1.0, 6.0, -6.0, 4.0, 25.0, 1e10]),
    ])
    return np.append(points.astype(dtype), -np.finfo(dtype).max)


def ulps(actual: np.ndarray, expected: np.ndarray, dtype) -> np.ndarray:
    """|actual - expected| in units of the spacing of dtype just below |expected|
    (expected: float64 values, rounded to dtype for the spacing)."""
    magnitude = np.abs(expected.astype(dtype))
    below = np.nextafter(magnitude, dtype(0))
    spacing = np.where(magnitude > 0, magnitude - below, np.spacing(dtype(0)))
    return np.abs(actual.astype(np.float64) - expected) / spacing.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_erf_within_ulps_of_math_erf(kernel, dtype):
    module = load_kernel(kernel).module
    x = erf_points(dtype)
    y = module.erf(x)
    assert y.dtype == dtype and y.shape == x.shape
    expected = np.array([math.erf(float(v)) for v in x])
    err = ulps(y, expected, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= ERF_ULPS, f"{err[worst]:.2f} ulps at x = {float(x[worst])!r}"
    # the points reach both of erf's formulas and its rounding to +-1
    assert np.count_nonzero(np.abs(x) < 1) > 1000 and np.count_nonzero(np.abs(x) > 2) > 1000
    assert np.count_nonzero(y == 1) > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_erf_is_odd_and_keeps_the_special_values(kernel, dtype):
    module = load_kernel(kernel).module
    x = np.linspace(0, 8, 10001).astype(dtype)
    np.testing.assert_array_equal(module.erf(-x), -module.erf(x))
    special = module.erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype))
    assert special[0] == 0 and not np.signbit(special[0])
    assert special[1] == 0 and np.signbit(special[1])
    assert special[2] == 1 and special[3] == -1 and np.isnan(special[4])


def gelu(x: float) -> tuple[float, float]:
    cdf = 0.5 * (1 + math.erf(x / math.sqrt(2)))
    return x * cdf, cdf + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def silu(x: float) -> tuple[float, float]:
    if x < -700:  # exp(-x) overflows: s(x) = 0 to double precision, and so is x s(x)
        return 0.0, 0.0
    s = 1 / (1 + math.exp(-x))
    return x * s, s * (1 + x * (1 - s))


def relu2(x: float) -> tuple[float, float]:
    return (x * x, 2 * x) if x > 0 else (0.0, 0.0)


ORACLES = {"gelu": gelu, "relu2": relu2, "silu": silu}
# error relative to max(|value|, 1); measured 4e-16 (the formulas' own rounding
# included) and 2e-7 in float32
ACTIVATION_TOL = {np.float64: 1e-14, np.float32: 1e-6}


def activation_points(dtype) -> np.ndarray:
    rng = np.random.default_rng(3)
    points = np.concatenate([np.linspace(-40, 40, 40001), rng.standard_normal(5000) * 3,
                             np.array([0.0, 1e-30, -1e-30, -90.0, 90.0, -800.0, 800.0,
                                       -1e6, 1e6])])
    return points.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(ORACLES))
@pytest.mark.parametrize("kernel", KERNELS)
def test_activation_and_slope_match_their_formulas(kernel, name, dtype):
    module = load_kernel(kernel).module
    x = activation_points(dtype)
    value, slope = module.activation(name, x)
    assert value.dtype == slope.dtype == dtype
    assert np.isfinite(value).all() and np.isfinite(slope).all()
    expected = np.array([ORACLES[name](float(v)) for v in x])
    for what, got, want in (("value", value, expected[:, 0]), ("slope", slope, expected[:, 1])):
        err = np.abs(got - want) / np.maximum(np.abs(want), 1)
        worst = int(np.argmax(err))
        assert err[worst] <= ACTIVATION_TOL[dtype], (
            f"{name} {what}: {got[worst]!r} for {want[worst]!r} at x = {float(x[worst])!r}")


@pytest.mark.parametrize("name", list(ORACLES))
def test_slope_is_the_derivative_of_the_formula(name):
    """The kernel's slope against central differences of the plain formula's value
    (not of the kernel's): the derivatives in the kernels and the oracles above
    could share a mistake."""
    module = load_kernel(KERNELS[-1]).module
    x = np.linspace(-6, 6, 1201)
    x = x[np.abs(x) > 1e-3]  # relu2's second derivative jumps at 0
    _, slope = module.activation(name, x)
    h = 1e-6
    value = ORACLES[name]
    fd = np.array([(value(v + h)[0] - value(v - h)[0]) / (2 * h) for v in x])
    np.testing.assert_allclose(slope, fd, rtol=1e-7, atol=1e-8)
